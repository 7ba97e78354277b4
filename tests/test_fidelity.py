"""benchmarks/fidelity.py (KL divergence of each engine to a file's exact model) and the CLI's --exact flag.
On small random GPT-2 files: the tool's KLD of a model to itself is 0; its mean / p99 / top-1 equal a direct numpy
computation over the same windows (pyinfer's default path and llama.cpp through llama-cpp-python); the exact path of
a quantized file equals a dtype="f32" load of the same weights dequantized to f32 (pyinfer quantize --type f32);
`--exact` gives run / perplexity / kld / bench the activations="f32" model.
"""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import pyinfer
from pyinfer import quantize as pq
from pyinfer.perplexity import KLDAccumulator, kl_divergence, perplexity

import tolerances
from subproc import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402  (benchmarks/fidelity.py)

N_CTX = 64
TEXT = fidelity.stdlib_docstrings(2500)  # ~600 GPT-2 tokens: 9 windows of 64


@pytest.fixture(scope="module")
def files(gpt2_small, tmp_path_factory):
    """{recipe: path}: gpt2_small quantized to q8_0 and q4_0, and q4_0 dequantized back to f32."""
    root = tmp_path_factory.mktemp("fidelity")
    out = {}
    for recipe in ("q8_0", "q4_0"):
        out[recipe] = root / f"gpt2-{recipe}.gguf"
        pq.quantize_model(gpt2_small, out[recipe], recipe, progress=False)
    out["q4_0-as-f32"] = root / "gpt2-q4_0-f32.gguf"
    pq.quantize_model(out["q4_0"], out["q4_0-as-f32"], "f32", progress=False)
    return out


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    mx = x.max(axis=1, keepdims=True)
    return x - mx - np.log(np.exp(x - mx).sum(axis=1, keepdims=True))


def direct(ref_fwd, fwd, tokens, n_ctx):
    """(per-position KLD, top-1 flags) over llama.cpp's windows (no BOS: GPT-2), written apart from the tool."""
    first, klds, top = n_ctx // 2, [], []
    for i in range(len(tokens) // n_ctx):
        w = tokens[i * n_ctx:(i + 1) * n_ctx]
        lpa = np_log_softmax(ref_fwd(w)[first:n_ctx - 1])
        lpb = np_log_softmax(fwd(w)[first:n_ctx - 1])
        klds.append((np.exp(lpa) * (lpa - lpb)).sum(axis=1))
        top.append(lpa.argmax(1) == lpb.argmax(1))
    return np.concatenate(klds), np.concatenate(top)


def test_text_is_long_prose(files):
    """The tool's text for 4096 tokens: docstrings (prose, not code) of at least 4096 GPT-2 tokens."""
    text = fidelity.stdlib_docstrings(int(4096 * 4.5 * 1.25))
    assert "def " not in text[:5000] and "Return" in text
    assert len(pyinfer.load(files["q4_0"]).tokenize(text)) >= 4096


def test_accumulator_of_a_model_to_itself_is_zero(files):
    m = pyinfer.load(files["q4_0"], n_ctx=N_CTX)
    w = m.tokenize(TEXT)[:N_CTX]
    acc = KLDAccumulator()
    la = m.forward(w)
    assert np.all(acc.add(la, la, w[1:] + [0]) == 0.0)
    r = acc.result(1, N_CTX)
    assert r.kld_mean == r.kld_p99 == r.kld_max == 0.0 and r.top1 == 1.0 and r.delta_ppl == 0.0


def test_tool_kld_of_the_exact_model_to_itself_is_zero(files):
    info, res = fidelity.measure(files["q4_0"], TEXT, N_CTX, 0, 2, ["pyinfer-exact"], 0, lambda s: None)
    r = res["pyinfer-exact"]
    assert info["n_windows"] == len(pyinfer.load(files["q4_0"]).tokenize(TEXT)) // N_CTX >= 2
    assert r.n_tokens == info["n_windows"] * (N_CTX - 1 - N_CTX // 2)
    assert r.kld_mean == r.kld_p99 == r.kld_max == 0.0 and r.top1 == 1.0


def test_tool_equals_numpy(files):
    """pyinfer's default path and llama.cpp (f32 KV cache) against the exact model: the tool's mean, p99 and top-1
    are the numpy figures over the same windows; the oracle check passes; quantization moves the distribution."""
    import contextlib

    import llama_cpp

    path = files["q4_0"]
    info, res = fidelity.measure(path, TEXT, N_CTX, 0, 2, ["pyinfer", "llama.cpp-f32kv"], 16, lambda s: None)
    assert info["exact_vs_oracle"] <= tolerances.EXACT_VS_ORACLE
    exact = pyinfer.load(path, activations="f32", n_ctx=N_CTX, n_threads=2)
    default = pyinfer.load(path, n_ctx=N_CTX, n_threads=2)
    tokens = exact.tokenize(TEXT)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, logits_all=True,
                          n_threads=2, n_threads_batch=2, type_k=0, type_v=0, verbose=False)

    def llama_fwd(w):
        llm.reset()
        llm.eval(list(w))
        return np.array(llm.scores[:len(w)])

    with contextlib.closing(llm):
        for name, fwd in (("pyinfer", default.forward), ("llama.cpp-f32kv", llama_fwd)):
            kld, top = direct(exact.forward, fwd, tokens, N_CTX)
            r = res[name]
            print(f"{name}: mean KLD {r.kld_mean:.3e}, p99 {r.kld_p99:.3e}, top-1 {r.top1:.4f}")
            assert r.n_tokens == len(kld)
            tolerances.assert_close(r.kld, kld, tolerances.SCORE_F64, f"{name} per-position KLD")
            assert abs(r.kld_mean - kld.mean()) <= tolerances.SCORE_F64 * kld.max()
            assert abs(r.kld_p99 - np.percentile(kld, 99)) <= tolerances.SCORE_F64 * kld.max()
            assert r.top1 == top.mean()
            assert r.kld_mean > 0.0  # 8-bit activations (and llama.cpp's order of sums) move the distribution


def test_exact_path_equals_the_dequantized_f32_load(files):
    """activations="f32" on a q4_0 file is the f32 model of the same (dequantized) weights."""
    exact = pyinfer.load(files["q4_0"], activations="f32", n_ctx=N_CTX)
    f32 = pyinfer.load(files["q4_0-as-f32"], dtype="f32", n_ctx=N_CTX)
    w = exact.tokenize(TEXT)[:N_CTX]
    tolerances.assert_close(exact.forward(w), f32.forward(w), tolerances.EXACT_VS_ORACLE, "exact q4_0 vs f32 load")
    k = kl_divergence(exact, f32, TEXT)
    d = kl_divergence(exact, pyinfer.load(files["q4_0"], n_ctx=N_CTX), TEXT)
    print(f"exact vs dequantized f32: mean KLD {k.kld_mean:.2e}; default vs exact {d.kld_mean:.2e}")
    assert k.kld_mean <= tolerances.EXACT_VS_DEQUANT_F32_KLD and k.top1 >= 0.99
    assert d.kld_mean > 100 * k.kld_mean  # the default path's rounding is what the tool measures, not f32 noise


# ----------------------------------------------------------------------------------------------------------------
# --exact on the command line


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("fid-cli") / "text.txt"
    f.write_text(TEXT + "\n", encoding="utf-8")
    return f


def test_cli_run_exact_is_the_exact_model(files):
    path = files["q4_0"]
    exact = pyinfer.load(path, activations="f32")
    default = pyinfer.load(path)
    prompt = "The meaning of life is"
    rc, out, err = run_cli("run", "-m", path, "-p", prompt, "-n", 24, "--temp", 0, "--exact")
    assert rc == 0, err
    assert out == exact.generate(prompt, max_tokens=24, temperature=0)
    rc, out2, err = run_cli("run", "-m", path, "-p", prompt, "-n", 24, "--temp", 0)
    assert rc == 0, err
    assert out2 == default.generate(prompt, max_tokens=24, temperature=0)


def test_cli_perplexity_exact(files, text_file):
    path = files["q4_0"]
    text = text_file.read_text(encoding="utf-8")[:-1]
    want = perplexity(pyinfer.load(path, activations="f32"), text, n_ctx=N_CTX, progress=False)
    other = perplexity(pyinfer.load(path), text, n_ctx=N_CTX, progress=False)
    assert f"{want.ppl:.4f}" != f"{other.ppl:.4f}"  # the flag must make a visible difference here
    rc, out, err = run_cli("perplexity", "-m", path, "-f", text_file, "-c", N_CTX, "--exact")
    assert rc == 0, err
    assert out == f"Final estimate: PPL = {want.ppl:.4f} +/- {want.ppl_stderr:.5f}\n"


def test_cli_kld_exact_base(files, text_file):
    path = files["q4_0"]
    text = text_file.read_text(encoding="utf-8")[:-1]
    k = kl_divergence(pyinfer.load(path, activations="f32"), pyinfer.load(path), text, n_ctx=N_CTX)
    rc, out, err = run_cli("kld", "--model-base", path, "--exact-base", "-m", path, "-f", text_file, "-c", N_CTX)
    assert rc == 0, err
    assert re.search(rf"^\| Mean KLD +\| +{re.escape(f'{k.kld_mean:.6g}')} \+/- ", out, re.M), out
    rc, out, err = run_cli("kld", "--model-base", path, "--exact-base", "-m", path, "--exact", "-f", text_file,
                           "-c", N_CTX)
    assert rc == 0, err
    assert re.search(r"^\| Mean KLD +\| +0 \+/- 0 \|", out, re.M), out


def test_cli_bench_exact_names_the_mode(files):
    rc, out, err = run_cli("bench", "-m", files["q4_0"], "-p", 8, "-n", 4, "-r", 1, "--exact")
    assert rc == 0, err
    assert re.search(r"^\| gpt2-q4_0\.gguf exact +\| ", out, re.M), out


@pytest.mark.parametrize("cmd", ["run", "chat", "perplexity", "kld", "bench", "serve"])
def test_exact_flag_is_offered(cmd):
    rc, out, err = run_cli(cmd, "--help")
    assert rc == 0, err
    assert "--exact" in out


def test_tool_main_writes_the_table_and_json(files, tmp_path, capsys):
    import json
    out = tmp_path / "fid.json"
    assert fidelity.main(["--files", str(files["q8_0"]), "--engines", "pyinfer,pyinfer-exact", "-c", str(N_CTX),
                          "--windows", "2", "--tokens", "128", "--oracle-tokens", "0", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["engine"] for r in rows] == ["pyinfer", "pyinfer-exact"]
    assert rows[1]["kld_mean"] == 0.0 and rows[0]["kld_mean"] > 0.0
    # the paired difference exact - default is minus the default path's mean KLD
    assert abs(rows[1]["vs_pyinfer"][0] + rows[0]["kld_mean"]) <= 1e-12
    assert re.search(r"^\| gpt2-q8_0\.gguf \| pyinfer-exact +\| 0\.000e\+00 \| 0\.000e\+00 \| 100\.00 % \|", table,
                     re.M), table
