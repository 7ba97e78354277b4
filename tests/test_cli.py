"""`pyinfer` as a user runs it: `python -m pyinfer.cli run ...` in a subprocess on a random-weight GPT-2. stdout
holds exactly the generated text (== the Python API's), timings go to stderr, errors are one `error:` line with a
non-zero exit and no traceback. Ctrl-C is exercised in-process with a model whose eval raises KeyboardInterrupt.
"""
import json

import pytest

import pyinfer
from subproc import assert_one_line_error, run_cli

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small)


def test_greedy_stdout_is_the_api_text_and_timings_go_to_stderr(gpt2_small, model):
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 16, "--temp", 0)
    assert rc == 0, err
    assert out == model.generate(PROMPT, max_tokens=16, temperature=0)
    assert len(out) > 0
    assert "tokens per second" in err and "prompt eval time" in err and "load time" in err
    assert "tokens per second" not in out and "load time" not in out
    assert "Traceback" not in err


def test_prompt_file(gpt2_small, model, tmp_path):
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT + "\n", encoding="utf-8")  # one trailing newline is dropped, as in llama.cpp
    rc, out, err = run_cli("run", "-m", gpt2_small, "-f", f, "-n", 12, "--temp", 0)
    assert rc == 0, err
    assert out == model.generate(PROMPT, max_tokens=12, temperature=0)


def test_seed_reproducible_and_equal_to_the_api(gpt2_small, model):
    args = ("run", "-m", gpt2_small, "-p", PROMPT, "-n", 12, "--temp", 0.8, "--top-k", 40, "--top-p", 0.95)
    rc1, out1, err1 = run_cli(*args, "-s", 7)
    rc2, out2, _ = run_cli(*args, "-s", 7)
    rc3, out3, _ = run_cli(*args, "-s", 8)
    assert rc1 == rc2 == rc3 == 0, err1
    assert out1 == out2 != out3
    assert out1 == model.generate(PROMPT, max_tokens=12, temperature=0.8, top_k=40, top_p=0.95, seed=7)
    assert "seed = 7" in err1


def test_long_flag_forms(gpt2_small, model):
    rc, out, err = run_cli("run", "--model", gpt2_small, "--prompt", PROMPT, "--n-predict", 6, "--temp", 0,
                           "--threads", 1, "--ctx-size", 64, "--seed", 1, "--dtype", "f32")
    assert rc == 0, err
    assert out == model.generate(PROMPT, max_tokens=6, temperature=0)


def test_n_predict_zero_prints_nothing(gpt2_small):
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 0)
    assert rc == 0, err
    assert out == ""


def test_missing_model_is_one_clean_line(tmp_path):
    missing = tmp_path / "no-such-model"
    line = assert_one_line_error(*run_cli("run", "-m", missing, "-p", PROMPT), expect_rc=1)
    assert "no-such-model" in line


def test_missing_prompt_file_is_one_clean_line(gpt2_small, tmp_path):
    line = assert_one_line_error(*run_cli("run", "-m", gpt2_small, "-f", tmp_path / "nope.txt"), expect_rc=1)
    assert "nope.txt" in line


@pytest.mark.parametrize("args, rc", [
    (["--top-k", "abc"], 2),  # argparse: not an int
    (["--bogus"], 2),
    (["--top-k", "-3"], 1),  # parsed, then rejected by the sampler
    (["--top-p", "1.5"], 1),
    (["--temp", "nan"], 1),
    (["-n", "-2"], 1),
    (["-t", "0"], 1),
    (["-c", "-1"], 1),
    (["--dtype", "q4"], 2),
    (["--f16", "--dtype", "f32"], 1),
])
def test_bad_flag_values(gpt2_small, args, rc):
    assert_one_line_error(*run_cli("run", "-m", gpt2_small, "-p", PROMPT, *args), expect_rc=rc)


def test_prompt_sources_exactly_one(gpt2_small, tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("hi", encoding="utf-8")
    assert_one_line_error(*run_cli("run", "-m", gpt2_small), expect_rc=2)
    assert_one_line_error(*run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-f", f), expect_rc=2)


def test_prompt_too_long_is_one_clean_line(gpt2_small):
    line = assert_one_line_error(*run_cli("run", "-m", gpt2_small, "-p", "hello " * 300, "-n", 4), expect_rc=1)
    assert "context" in line and "prompt is" in line


def test_version_and_build_info():
    rc, out, err = run_cli("--version")
    assert rc == 0, err
    assert pyinfer.__version__ in out
    rc, out, err = run_cli("build-info")
    assert rc == 0, err
    info = json.loads(out)
    assert isinstance(info, dict) and set(info) == set(pyinfer.build_info())


class _InterruptingModel:
    """Delegates to a real model; its eval raises KeyboardInterrupt after n_ok successful calls (a Ctrl-C)."""

    def __init__(self, model, n_ok):
        self._model, self._n_ok = model, n_ok

    def __getattr__(self, name):
        return getattr(self._model, name)

    def eval(self, ids):
        if self._n_ok == 0:
            raise KeyboardInterrupt
        self._n_ok -= 1
        return self._model.eval(ids)


def test_ctrl_c_stops_cleanly_with_timings(gpt2_small, model, monkeypatch, capsys):
    from pyinfer.cli import main

    real_load = pyinfer.load
    monkeypatch.setattr(pyinfer, "load", lambda *a, **kw: _InterruptingModel(real_load(*a, **kw), 4))
    rc = main(["run", "-m", str(gpt2_small), "-p", PROMPT, "-n", "50", "--temp", "0"])
    out, err = capsys.readouterr()
    assert rc == 130
    # prefill + 3 decode steps succeed: 4 tokens sampled, then the 4th token's eval is interrupted
    assert model.generate(PROMPT, max_tokens=4, temperature=0).startswith(out)
    assert "eval time" in err and "interrupted" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# sampling, stopping, beams, logprobs and --json

GREEDY = ("--temp", 0)


def run_json(gpt2_small, *args):
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "--json", *args)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return json.loads(lines[0]), err


def test_json_output(gpt2_small, model):
    d, err = run_json(gpt2_small, "-n", 8, *GREEDY, "--logprobs", 2, "--ignore-eos")
    c = model.generate(PROMPT, max_tokens=8, temperature=0, ignore_eos=True, logprobs=2, details=True)
    assert d["text"] == c.text and d["tokens"] == c.tokens and d["finish_reason"] == "length"
    assert d["n_prompt"] == len(model.tokenize(PROMPT)) and d["n_gen"] == 8
    assert len(d["logprobs"]) == 8 and all(len(a) == 2 for a in d["top_logprobs"])
    from tolerances import KV_CACHE_VS_RECOMPUTE, assert_close
    assert_close(d["logprobs"], c.logprobs, KV_CACHE_VS_RECOMPUTE, "JSON logprobs vs the API's")
    assert d["top_logprobs"][0][0]["id"] == d["tokens"][0]  # greedy: the top alternative is the token itself
    assert d["token_text"] == [model.detokenize([t]) for t in c.tokens]
    for key in ("prompt_ms", "predicted_ms", "predicted_per_second", "load_ms"):
        assert key in d["timings"]
    assert "eval time" in err  # timings still go to stderr


def test_sampling_flags_equal_the_api(gpt2_small, model):
    flags = ("--temp", 0.9, "--top-k", 0, "--top-p", 0.9, "--min-p", 0.02, "--typical", 0.95, "--repeat-penalty",
             1.3, "--repeat-last-n", 16, "--presence-penalty", 0.2, "--frequency-penalty", 0.1, "-l", "13+2",
             "--logit-bias", "262-1.5", "-s", 5)
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 16, *flags)
    assert rc == 0, err
    want = model.generate(PROMPT, max_tokens=16, temperature=0.9, top_k=0, top_p=0.9, min_p=0.02, typical_p=0.95,
                          repeat_penalty=1.3, repeat_last_n=16, presence_penalty=0.2, frequency_penalty=0.1,
                          logit_bias={13: 2.0, 262: -1.5}, seed=5)
    assert out == want
    assert "repeat_penalty = 1.300" in err and "min_p = 0.020" in err and "seed = 5" in err
    # llama.cpp's defaults: min_p 0.05, penalties off
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 8, "-s", 3)
    assert rc == 0, err
    assert out == model.generate(PROMPT, max_tokens=8, seed=3)
    assert "min_p = 0.050" in err and "repeat_last_n = 64" in err and "repeat_penalty = 1.000" in err


def test_logit_bias_steers_greedy(gpt2_small, model):
    d, _ = run_json(gpt2_small, "-n", 4, *GREEDY, "-l", "1000+100")
    assert d["tokens"] == [1000] * 4
    first = model.generate(PROMPT, max_tokens=1, temperature=0, details=True).tokens[0]
    d, _ = run_json(gpt2_small, "-n", 1, *GREEDY, "-l", f"{first}-inf")
    assert d["tokens"][0] != first


def test_stop_strings(gpt2_small, model):
    full = model.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    want = full[:full.index(stop)]
    for flag in ("-r", "--reverse-prompt", "--stop"):
        rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 24, *GREEDY, "--ignore-eos", flag, stop,
                               "--stop", "never in this text")
        assert rc == 0, err
        assert out == want
        assert "stopped: stop" in err
    d, _ = run_json(gpt2_small, "-n", 24, *GREEDY, "--ignore-eos", "-r", stop)
    assert d["text"] == want and d["finish_reason"] == "stop" and d["stop"] == stop


def test_beams(gpt2_small, model):
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 6, "--beams", 3, "--length-penalty", 0.5)
    assert rc == 0, err
    assert out == model.generate(PROMPT, max_tokens=6, num_beams=3, length_penalty=0.5)
    assert "num_beams = 3" in err
    d, _ = run_json(gpt2_small, "-n", 6, "--beams", 2, "--early-stopping", "never")
    c = model.generate(PROMPT, max_tokens=6, num_beams=2, early_stopping="never", details=True)
    assert d["text"] == c.text and len(d["sequences"]) == 1 and d["sequences"][0]["tokens"] == c.tokens


def test_logprobs_table_on_stderr(gpt2_small):
    rc, out, err = run_cli("run", "-m", gpt2_small, "-p", PROMPT, "-n", 3, *GREEDY, "--logprobs", 1)
    assert rc == 0, err
    assert "logprobs" in err and "logprobs" not in out


@pytest.mark.parametrize("args, rc, what", [
    (["-l", "abc"], 2, "logit-bias"),
    (["-l", "15043"], 2, "logit-bias"),
    (["-l", "15043*1"], 2, "logit-bias"),
    (["-l", "15043+inf"], 2, "logit-bias"),
    (["-l", "-5+1"], 2, "logit-bias"),
    (["-l", "99999999+1"], 1, "logit_bias"),  # parsed, then out of the vocabulary
    (["--min-p", "1.5"], 1, "min_p"),
    (["--typical", "0"], 1, "typical_p"),
    (["--repeat-penalty", "0"], 1, "repeat_penalty"),
    (["--repeat-last-n", "-1"], 1, "repeat-last-n"),
    (["--presence-penalty", "nan"], 1, "presence_penalty"),
    (["--beams", "0"], 1, "beams"),
    (["--beams", "2", "-r", "x"], 1, "beams"),
    (["--early-stopping", "maybe"], 2, "early-stopping"),
    (["--logprobs", "-2"], 1, "logprobs"),
    (["--stop", ""], 1, "stop"),
])
def test_bad_new_flag_values(gpt2_small, args, rc, what):
    line = assert_one_line_error(*run_cli("run", "-m", gpt2_small, "-p", PROMPT, *args), expect_rc=rc)
    assert what in line
