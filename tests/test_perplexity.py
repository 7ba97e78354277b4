"""pyinfer.perplexity (token_logprobs, perplexity, kl_divergence) and the `perplexity`, `kld`, `bench` commands.
Perplexity is checked against an independent numpy re-implementation of llama.cpp's rule over m.forward logits
(tools/perplexity/perplexity.cpp: windows of n_ctx, BOS in slot 0, positions n_ctx/2 .. n_ctx-2 scored), the rule's
edges on a fake model whose windows are recorded, KLD against itself (exactly 0) and against f16 weights (small).
"""
import inspect
import json.decoder
import math
import re
import textwrap

import numpy as np
import pytest

import pyinfer
from pyinfer.perplexity import kl_divergence, perplexity, token_logprobs

import tolerances
from subproc import assert_one_line_error, run_cli

N_CTX = 128  # gpt2_small's context; perplexity's default window is min(512, n_ctx)


def stdlib_text(n_chars):
    """Python source from the standard library, a natural-ish text that needs no download."""
    return (inspect.getsource(textwrap) + inspect.getsource(json.decoder))[:n_chars]


TEXT = stdlib_text(3000)  # ~1000 GPT-2 tokens: 7 windows of 128


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small)


@pytest.fixture(scope="module")
def model_bos(gpt2_small):
    """gpt2_small with add_bos switched on, to exercise llama.cpp's BOS-in-every-window rule (GPT-2 adds none)."""
    m = pyinfer.load(gpt2_small)
    m.tokenizer.add_bos = True
    assert m.tokenizer.bos_id is not None
    return m


@pytest.fixture(scope="module")
def model_f16(gpt2_small):
    return pyinfer.load(gpt2_small, dtype="f16")


# ----------------------------------------------------------------------------------------------------------------
# the numpy reference


def np_log_softmax(logits):
    """float64 log-softmax per row, written apart from pyinfer's: log p = x - (max + log sum exp(x - max))."""
    x = np.asarray(logits, np.float64)
    mx = x.max(axis=1)
    return x - (mx + np.log(np.exp(x - mx[:, None]).sum(axis=1)))[:, None]


def reference_nlls(model, text, n_ctx, bos=True):
    """llama.cpp's perplexity() in numpy over m.forward, per window: the NLL of every next token in the window,
    -log p(w[j + 1] | w[:j + 1]) for j = 0 .. n_ctx - 2, BOS in slot 0 when the model adds one (unless bos=False).
    llama.cpp scores j = n_ctx // 2 .. n_ctx - 2 of these: `scored()`."""
    tokens = model.tokenize(text)
    add_bos = bos and model.tokenizer.add_bos
    out = []
    for c in range(len(tokens) // n_ctx):
        w = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            w[0] = model.tokenizer.bos_id
        lp = np_log_softmax(model.forward(w))  # [n_ctx, n_vocab]
        out.append(-lp[np.arange(n_ctx - 1), w[1:]])  # [n_ctx - 1]
    return out


def scored(nll_windows, n_ctx, first_offset=0, last_offset=0):
    """The second half of each window, as llama.cpp scores it; the offsets show the check notices a slipped rule."""
    return [nll[n_ctx // 2 + first_offset:n_ctx - 1 + last_offset] for nll in nll_windows]


def reference_ppl(nll_windows):
    """(ppl, llama.cpp's stderr, running ppl after each window) from per-window NLLs."""
    running, s, s2, n = [], 0.0, 0.0, 0
    for nll in nll_windows:
        s, s2, n = s + nll.sum(), s2 + (nll ** 2).sum(), n + len(nll)
        running.append(math.exp(s / n))
    mean = s / n
    ppl = math.exp(mean)
    return ppl, ppl * math.sqrt((s2 / n - mean * mean) / (n - 1)), running


def rel(a, b):
    return abs(a - b) / abs(b)


# ----------------------------------------------------------------------------------------------------------------
# token_logprobs


def test_token_logprobs_equals_numpy_log_softmax_of_forward(model):
    ids = model.tokenize(TEXT)[:N_CTX]
    got = token_logprobs(model, ids)
    assert got.dtype == np.float64 and got.shape == (len(ids) - 1,)
    lp = np_log_softmax(model.forward(ids))
    want = lp[np.arange(len(ids) - 1), ids[1:]]
    tolerances.assert_close(got, want, tolerances.SCORE_F64, "token_logprobs vs numpy log_softmax(forward)")
    assert np.all(got < 0)


def test_token_logprobs_short_inputs(model):
    assert token_logprobs(model, []).shape == (0,)
    assert token_logprobs(model, [464]).shape == (0,)


# ----------------------------------------------------------------------------------------------------------------
# perplexity: the rule on a fake model


class FakeTokenizer:
    def __init__(self, bos_id=None, add_bos=False):
        self.bos_id, self.add_bos = bos_id, add_bos


class FakeModel:
    """Tokens are the text's characters (BOS first if add_bos); logits are uniform, so every NLL is log(n_vocab).
    Records each window it is given."""

    def __init__(self, n_ctx=16, n_vocab=8, add_bos=False):
        self.n_ctx, self.n_vocab = n_ctx, n_vocab
        self.tokenizer = FakeTokenizer(bos_id=n_vocab - 1, add_bos=add_bos)
        self.windows = []

    def tokenize(self, text):
        ids = [ord(c) % (self.n_vocab - 1) for c in text]
        return ([self.tokenizer.bos_id] if self.tokenizer.add_bos else []) + ids

    def forward(self, ids):
        self.windows.append(list(np.asarray(ids)))
        return np.zeros((len(ids), self.n_vocab), np.float32)


@pytest.mark.parametrize("n_ctx", [3, 7, 8, 16])
@pytest.mark.parametrize("add_bos", [False, True])
def test_window_rule_on_a_fake_model(n_ctx, add_bos):
    m = FakeModel(n_ctx=16, add_bos=add_bos)
    text = "abcdefghij" * 7 + "xyz"  # 73 characters: a tail that fills no window is dropped
    tokens = m.tokenize(text)
    r = perplexity(m, text, n_ctx=n_ctx, progress=False)
    n_chunk = len(tokens) // n_ctx
    assert r.n_chunks == n_chunk and len(m.windows) == n_chunk and r.n_ctx == n_ctx
    assert r.n_tokens == n_chunk * (n_ctx - 1 - n_ctx // 2)  # llama.cpp: count += n_ctx - first - 1
    assert r.n_text_tokens == len(tokens)
    for c, w in enumerate(m.windows):
        want = tokens[c * n_ctx:(c + 1) * n_ctx]
        if add_bos:
            want[0] = m.tokenizer.bos_id
        assert w == want
    assert r.ppl == pytest.approx(m.n_vocab, rel=1e-12)  # uniform over 8 tokens
    assert len(r.running) == n_chunk
    # all NLLs equal: the variance s2/n - mean^2 is 0 up to roundoff (llama.cpp reports no error when it is <= 0)
    assert math.isnan(r.ppl_stderr) or r.ppl_stderr < 1e-6


def test_length_requirement_is_two_windows():
    m = FakeModel()
    perplexity(m, "a" * 32, n_ctx=16, progress=False)  # exactly 2 * n_ctx tokens: fine
    with pytest.raises(ValueError, match=r"only 31 tokens; at least 32"):
        perplexity(m, "a" * 31, n_ctx=16, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        perplexity(m, "a" * 100, n_ctx=17, progress=False)
    with pytest.raises(ValueError, match="at least 3"):
        perplexity(m, "a" * 100, n_ctx=2, progress=False)


def test_progress_callable_gets_the_running_estimate():
    m = FakeModel()
    seen = []
    r = perplexity(m, "a" * 50, n_ctx=16, progress=lambda i, n, v: seen.append((i, n, v)))
    assert [s[:2] for s in seen] == [(1, 3), (2, 3), (3, 3)]
    assert [s[2] for s in seen] == r.running


# ----------------------------------------------------------------------------------------------------------------
# perplexity on the random GPT-2


def test_perplexity_equals_numpy_reference(model):
    r = perplexity(model, TEXT, progress=False)
    nll_windows = scored(all_nlls := reference_nlls(model, TEXT, N_CTX), N_CTX)
    ppl, err, running = reference_ppl(nll_windows)
    assert r.n_ctx == N_CTX and r.n_chunks == len(nll_windows) >= 2
    assert r.n_tokens == len(nll_windows) * (N_CTX - 1 - N_CTX // 2)
    assert rel(r.ppl, ppl) <= tolerances.SCORE_F64
    assert rel(r.ppl_stderr, err) <= tolerances.SCORE_F64
    tolerances.assert_close(r.running, running, tolerances.SCORE_F64, "running ppl")
    tolerances.assert_close(r.nlls, np.concatenate(nll_windows), tolerances.SCORE_F64, "per-token NLL")
    # sanity: a finite perplexity above 1 (a random 50257-token model is near-uniform-ish: ~1e4..1e5 here)
    assert 1.0 < r.ppl < math.inf and 0.0 < r.ppl_stderr < r.ppl
    # the check can see a slipped rule: each variant moves ppl far beyond SCORE_F64
    for kw in ({"first_offset": -1}, {"first_offset": 1}, {"last_offset": -1}):
        assert rel(reference_ppl(scored(all_nlls, N_CTX, **kw))[0], ppl) > 1e3 * tolerances.SCORE_F64, kw


def test_perplexity_with_bos_replaces_the_first_token_of_every_window(model_bos):
    r = perplexity(model_bos, TEXT, n_ctx=64, progress=False)
    ppl, err, _ = reference_ppl(scored(reference_nlls(model_bos, TEXT, 64), 64))
    assert rel(r.ppl, ppl) <= tolerances.SCORE_F64 and rel(r.ppl_stderr, err) <= tolerances.SCORE_F64
    no_bos = reference_ppl(scored(reference_nlls(model_bos, TEXT, 64, bos=False), 64))[0]
    assert rel(no_bos, ppl) > 1e3 * tolerances.SCORE_F64  # BOS in slot 0 matters, so the match above means something


def test_perplexity_too_short_text(model):
    with pytest.raises(ValueError, match=rf"at least {2 * N_CTX}"):
        perplexity(model, "def f():\n    return 1\n", progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        perplexity(model, TEXT, n_ctx=N_CTX + 1, progress=False)


def test_perplexity_prints_llama_cpp_running_line(model, capsys):
    r = perplexity(model, TEXT, n_ctx=96, progress=True)
    err = capsys.readouterr().err
    assert err == "".join(f"[{i + 1}]{v:.4f}," for i, v in enumerate(r.running)) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# KL divergence


def test_kld_against_itself_is_zero(model):
    k = kl_divergence(model, model, TEXT)
    assert k.kld_mean == 0.0 and k.kld_max == 0.0 and k.kld_median == 0.0 and k.kld_p99 == 0.0
    assert k.top1 == 1.0 and k.delta_ppl == 0.0 and k.rms_dp == 0.0 and k.kld_stderr == 0.0
    r = perplexity(model, TEXT, progress=False)
    assert k.n_tokens == r.n_tokens == len(k.kld)
    assert rel(k.ppl_a, r.ppl) <= tolerances.SCORE_F64 and rel(k.ppl_a_stderr, r.ppl_stderr) <= tolerances.SCORE_F64


def test_kld_f32_vs_f16(model, model_f16):
    k = kl_divergence(model, model_f16, TEXT)
    print(f"f32 vs f16: mean KLD {k.kld_mean:.3e}, median {k.kld_median:.3e}, p99 {k.kld_p99:.3e}, "
          f"max {k.kld_max:.3e}, top1 {k.top1:.4f}, ppl {k.ppl_a:.2f} -> {k.ppl_b:.2f}")
    assert 0.0 < k.kld_mean < tolerances.KLD_F16_VS_F32_MEAN
    assert k.kld_median <= k.kld_p99 <= k.kld_max
    assert k.top1 >= tolerances.TOP1_F16_VS_F32
    assert abs(k.delta_ppl) / k.ppl_a <= tolerances.PPL_F16_VS_F32
    assert rel(k.ppl_b, perplexity(model_f16, TEXT, progress=False).ppl) <= tolerances.SCORE_F64
    # per-position KLD of the first window against numpy
    w = model.tokenize(TEXT)[:N_CTX]
    lpa = np_log_softmax(model.forward(w))[N_CTX // 2:N_CTX - 1]
    lpb = np_log_softmax(model_f16.forward(w))[N_CTX // 2:N_CTX - 1]
    want = (np.exp(lpa) * (lpa - lpb)).sum(axis=1)
    tolerances.assert_close(k.kld[:len(want)], want, tolerances.SCORE_F64, "per-position KLD, window 1")


def test_kld_needs_the_same_tokenizer(model):
    other = FakeModel(n_ctx=N_CTX, n_vocab=model.n_vocab)  # same n_vocab, different tokenization
    with pytest.raises(ValueError, match="tokenize the text differently"):
        kl_divergence(model, other, TEXT)
    with pytest.raises(ValueError, match="different vocabularies"):
        kl_divergence(model, FakeModel(n_ctx=N_CTX, n_vocab=100), TEXT)


# ----------------------------------------------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("ppl") / "text.txt"
    f.write_text(stdlib_text(1500) + "\n", encoding="utf-8")  # the trailing newline is dropped, as llama.cpp's -f
    return f


def test_cli_perplexity_matches_the_api(gpt2_small, model, text_file):
    rc, out, err = run_cli("perplexity", "-m", gpt2_small, "-f", text_file, "-c", 64)
    assert rc == 0, err
    m = re.fullmatch(r"Final estimate: PPL = (\S+) \+/- (\S+)\n", out)
    assert m, out
    r = perplexity(model, text_file.read_text(encoding="utf-8")[:-1], n_ctx=64, progress=False)
    assert m.group(1) == f"{r.ppl:.4f}" and m.group(2) == f"{r.ppl_stderr:.5f}"
    assert err.startswith("[1]") and f"[{r.n_chunks}]{r.running[-1]:.4f}," in err
    assert "Traceback" not in err


def test_cli_kld_prints_a_table(gpt2_small, text_file):
    rc, out, err = run_cli("kld", "--model-base", gpt2_small, "-m", gpt2_small, "--dtype", "f16", "-f", text_file,
                           "-c", 64)
    assert rc == 0, err
    for key in ("Mean KLD", "Median KLD", "99.0% KLD", "Maximum KLD", "Same top p", "Mean PPL(Q)", "Mean PPL(base)"):
        assert re.search(rf"^\| {re.escape(key)} +\| ", out, re.M), out


def test_cli_bench_prints_a_row_per_thread_count(gpt2_small):
    rc, out, err = run_cli("bench", "-m", gpt2_small, "-p", 16, "-n", 8, "-t", "1,2", "-r", 2)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert re.match(r"\| model +\| threads \| +pp16 t/s \| +tg8 t/s \|", lines[0]), out
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert [r[1] for r in rows] == ["1", "2"]
    for r in rows:
        for cell in r[2:]:
            median = float(cell.split("+/-")[0])
            assert median > 0 and math.isfinite(median)


@pytest.mark.parametrize("args", [
    ("perplexity", "-m", "{model}", "-f", "{short}"),                # too short for two windows
    ("perplexity", "-m", "{model}", "-f", "/nonexistent/text.txt"),  # no text file
    ("perplexity", "-m", "/nonexistent/model", "-f", "{text}"),      # no model
    ("perplexity", "-m", "{model}", "-f", "{text}", "-c", "4096"),   # beyond the model's positions
    ("perplexity", "-m", "{model}", "-f", "{text}", "-t", "0"),
    ("kld", "--model-base", "{model}", "-m", "{model}", "-f", "{short}"),
    ("bench", "-m", "{model}", "-p", "1000"),                        # beyond the model's context
    ("bench", "-m", "{model}", "-t", "1,x"),                         # argparse: exit 2
    ("bench", "-m", "{model}", "-r", "0"),
])
def test_cli_bad_inputs_are_one_line(args, gpt2_small, text_file, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("x = 1\n", encoding="utf-8")
    fmt = {"model": gpt2_small, "text": text_file, "short": short}
    rc, out, err = run_cli(*(a.format(**fmt) for a in args))
    assert_one_line_error(rc, out, err)
