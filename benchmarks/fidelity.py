"""How close each engine is to the exact model of a GGUF file: mean and 99th-percentile KL(P_exact || P_engine) and
top-1 agreement over llama-perplexity's windows of a real English text (stdlib docstrings, >= 4k tokens), for
pyinfer's default path and llama.cpp (llama-cpp-python, f32 and f16 KV cache) on the same file and tokens.  Not a
test (tests/test_fidelity.py checks the scoring).

The exact model is pyinfer's activations="f32" path (weights dequantized on the fly, f32 activations), checked here
against the float64 numpy oracle (tests/reference/) on the first --oracle-tokens tokens.  One window's logits of
every engine are held at a time, never all (Gemma 3: 262k vocabulary).

    python benchmarks/fidelity.py                      # smollm2, gpt2-q8_0, gpt2-q4_0, gemma3; n_ctx 512, 4096 tokens
    python benchmarks/fidelity.py --quick              # smoke test: n_ctx 128, 2 windows, smollm2 + gpt2-q8_0
    python benchmarks/fidelity.py --files smollm2 --json out.json

Measured (2 threads, n_ctx 512, stdlib docstrings of 6.4k-6.8k tokens, every window: 3060-3315 scored positions a
file; the exact path, f32 KV cache, matched the float64 oracle within 1.1e-6 x max|logit| on every file; random GPT-2
files: init std 0.1, a chaotic model where 8-bit activations alone give KLD ~5e-2). pyinfer's default path (f16 KV
cache) rounds activations to 8 bits with one f32 scale per 16 values; llama.cpp uses one fp16 scale per 32 (q8_0 /
q8_1) and one per 256 for K-quant weights (Q8_K). Mean KLD (p99, top-1), and llama.cpp's mean minus pyinfer's (the
paired difference over positions, +/- its standard error):

| file               | pyinfer default               | llama.cpp f32 KV cache                  | llama.cpp f16 KV cache                  |
| ------------------ | ----------------------------- | --------------------------------------- | --------------------------------------- |
| SmolLM2 Q4_1       | 1.604e-3 (8.19e-3, 97.39 %)   | 2.935e-3 (1.39e-2, 96.73 %) +1.33e-3 +/- 4.7e-5 | 3.043e-3 (1.47e-2, 96.63 %) +1.44e-3 +/- 4.8e-5 |
| GPT-2-124M Q8_0    | 4.448e-2 (8.45e-2, 78.61 %)   | 5.560e-2 (1.04e-1, 77.95 %) +1.11e-2 +/- 2.8e-4 | 5.600e-2 (1.04e-1, 76.68 %) +1.15e-2 +/- 2.9e-4 |
| GPT-2-124M Q4_0    | 4.355e-2 (8.53e-2, 79.00 %)   | 5.532e-2 (1.08e-1, 76.14 %) +1.18e-2 +/- 2.8e-4 | 5.588e-2 (1.04e-1, 76.44 %) +1.23e-2 +/- 2.8e-4 |
| Gemma 3 270M Q4_K_M| 1.212e-3 (6.34e-3, 98.17 %)   | 5.121e-3 (2.72e-2, 95.72 %) +3.91e-3 +/- 1.2e-4 | 5.134e-3 (2.34e-2, 96.41 %) +3.92e-3 +/- 1.7e-4 |

Before (pyinfer rounding activations as ggml does, the same rounding as llama.cpp's) the two tied within about one
standard error on every file (e.g. SmolLM2 2.96e-3 vs 3.03e-3, Gemma 5.35e-3 vs 5.23e-3). The cause was the
activation rounding, found with benchmarks/act_rounding.py (a numpy emulation in the float64 oracle): Q8_K's one scale
per 256 activations costs 4.4x the KLD of per-32 scales on SmolLM2, and per-16 scales with an f32 scale halve it again;
every other difference (RoPE angles in double, exp, the tanh GELU vs llama.cpp's fp16 table, summation order) was
below the noise.
"""
import argparse
import ast
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import pyinfer
from pyinfer.perplexity import KLDAccumulator, windows

HERE = Path(__file__).resolve().parent
FILES = ("smollm2", "gpt2-q8_0", "gpt2-q4_0", "gemma3")
ENGINES = ("pyinfer", "llama.cpp-f32kv", "llama.cpp-f16kv", "pyinfer-exact")  # the last: a second exact instance
DEFAULT_ENGINES = ENGINES[:3]


# ----------------------------------------------------------------------------------------------------------------
# the text


def stdlib_docstrings(min_chars: int) -> str:
    """English prose without a download: the module, class and function docstrings of the standard library (sorted
    walk, site-packages and tests left out) of at least 300 characters each, joined by blank lines until min_chars."""
    root = os.path.dirname(os.__file__)
    out, n = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__", "test", "tests",
                                                               "idle_test", "lib2to3"))
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 300:
                        out.append(doc)
                        n += len(doc) + 2
                        if n >= min_chars:
                            return "\n\n".join(out)
    return "\n\n".join(out)


# ----------------------------------------------------------------------------------------------------------------
# the files


def gpt2_file(kind: str, work: Path, init_range: float) -> Path:
    """A GPT-2-124M-shaped random-weight GGUF (n_embd 768, 12 layers, 12 heads, 1024 positions) at `kind` (q8_0,
    q4_0), made once under `work` by tests/conftest.build_gpt2 and pyinfer quantize."""
    out = work / f"gpt2-124m-r{init_range:g}-{kind}.gguf"
    if out.is_file():
        return out
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import build_gpt2

    from pyinfer.quantize import quantize_model
    folder = work / f"gpt2-124m-r{init_range:g}-hf"
    if not (folder / "model.safetensors").is_file():
        build_gpt2(str(folder), n_layer=12, n_embd=768, n_head=12, n_positions=1024, seed=0, init_range=init_range)
    quantize_model(folder, out, kind, progress=False)
    return out


def file_path(name: str, work: Path, init_range: float) -> Path:
    import pyinfer.models as pm
    if name == "smollm2":
        return Path(pm.default_model_path())
    if name == "gemma3":
        return Path(pm.named_model_path("gemma3-270m"))
    if name.startswith("gpt2-"):
        return gpt2_file(name[5:], work, init_range)
    raise ValueError(f"unknown file {name!r}: expected one of {', '.join(FILES)}")


def oracle_check(path: Path, exact, ids) -> float:
    """max |exact - oracle| / max |oracle| on ids: pyinfer's exact path against the float64 numpy oracle."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    if exact.arch == "gpt2":
        from reference.gpt2_numpy import Gpt2GgufOracle as Oracle
    else:
        from reference.llama_numpy import LlamaFamilyOracle as Oracle
    ref = Oracle(path).logits(list(ids))
    got = exact.forward(ids)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


# ----------------------------------------------------------------------------------------------------------------
# engines: each maps a window (int32 [n_ctx]) to its logits [n_ctx, n_vocab]


def pyinfer_engine(path, n_ctx, n_threads, **kw):
    m = pyinfer.load(path, n_ctx=n_ctx, n_threads=n_threads, **kw)
    return m, m.forward, lambda: None


def llama_cpp_engine(path, n_ctx, n_threads, kv_type):
    """llama.cpp with every position's logits (logits_all), one ubatch per window, KV cache of ggml type kv_type
    (0 = f32, 1 = f16, llama.cpp's default)."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                          n_threads=n_threads, n_threads_batch=n_threads, type_k=kv_type, type_v=kv_type,
                          verbose=False)

    def forward(w):
        llm.reset()
        llm.eval([int(t) for t in w])
        return llm.scores[:len(w)]  # a view of llama-cpp-python's [n_ctx, n_vocab] float32 buffer

    return llm, forward, llm.close


def measure(path: Path, text: str, n_ctx: int, n_windows, n_threads: int, engines, oracle_tokens: int, log):
    """{engine: KLDResult} against pyinfer's exact path, plus the oracle check and timings."""
    # the exact model: f32 activations and an f32 KV cache (the default f16 cache would round every K and V)
    exact, exact_fwd, _ = pyinfer_engine(path, n_ctx, n_threads, activations="f32", kv_type="f32")
    n_ctx, first, wins = windows(exact, text, n_ctx)
    if n_windows:
        wins = wins[:n_windows]
    info = {"file": path.name, "arch": exact.arch, "n_vocab": exact.n_vocab, "n_ctx": n_ctx, "n_windows": len(wins),
            "n_text_tokens": len(exact.tokenize(text))}
    if oracle_tokens:
        t0 = time.perf_counter()
        info["exact_vs_oracle"] = oracle_check(path, exact, wins[0][:oracle_tokens])
        log(f"  exact vs float64 oracle on {oracle_tokens} tokens: max err {info['exact_vs_oracle']:.2e} x "
            f"max|logit| ({time.perf_counter() - t0:.1f} s)")
    opened, closers = {}, []
    for name in engines:
        if name.startswith("pyinfer"):
            kw = {"activations": "f32", "kv_type": "f32"} if name == "pyinfer-exact" else {}
            _, fwd, close = pyinfer_engine(path, n_ctx, n_threads, **kw)
        else:
            _, fwd, close = llama_cpp_engine(path, n_ctx, n_threads, {"llama.cpp-f32kv": 0, "llama.cpp-f16kv": 1}[name])
        opened[name] = fwd
        closers.append(close)
    acc = {name: KLDAccumulator() for name in engines}
    secs = {name: 0.0 for name in ["exact", *engines]}
    try:
        for i, w in enumerate(wins):
            t0 = time.perf_counter()
            ref = np.array(exact_fwd(w)[first:n_ctx - 1])  # [n_ctx - 1 - first, n_vocab] float32
            secs["exact"] += time.perf_counter() - t0
            for name, fwd in opened.items():
                t0 = time.perf_counter()
                got = fwd(w)[first:n_ctx - 1]
                secs[name] += time.perf_counter() - t0
                acc[name].add(ref, got, w[first + 1:])
                del got
            log(f"  [{i + 1}/{len(wins)}] " + ", ".join(f"{n} {a.mean():.3g}" for n, a in acc.items()))
    finally:
        for close in closers:
            close()
    info["seconds"] = secs
    return info, {name: a.result(len(wins), n_ctx) for name, a in acc.items()}


def paired(kld, base):
    """(mean, standard error) of kld - base over the same positions: is an engine farther than pyinfer's default?"""
    d = np.asarray(kld) - np.asarray(base)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def table(rows) -> str:
    """Markdown: one row per (file, engine) with mean KLD, p99 KLD, top-1 agreement, positions, and the paired
    difference of the mean KLD to pyinfer's default path (+/- its standard error)."""
    head = ["file", "engine", "mean KLD", "p99 KLD", "top-1", "positions", "mean KLD - pyinfer's"]
    body = [[f, e, f"{r['kld_mean']:.3e}", f"{r['kld_p99']:.3e}", f"{100 * r['top1']:.2f} %", str(r["n_tokens"]),
             "" if "vs_pyinfer" not in r else f"{r['vs_pyinfer'][0]:+.2e} +/- {r['vs_pyinfer'][1]:.1e}"]
            for f, e, r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths)))
              + " |" for b in body]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", default=None, help=f"comma-separated, of {', '.join(FILES)} or .gguf paths "
                                                  f"(default: all four; --quick: smollm2,gpt2-q8_0)")
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    ap.add_argument("-c", "--ctx-size", type=int, default=None, help="window length (default 512; --quick 128)")
    ap.add_argument("--tokens", type=int, default=4096, help="least text length in tokens (default 4096)")
    ap.add_argument("--windows", type=int, default=0, help="score only the first N windows (0: all)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--oracle-tokens", type=int, default=None, help="tokens for the oracle check (default 32; 0 off)")
    ap.add_argument("--gpt2-init-range", type=float, default=0.1,
                    help="std of the random GPT-2 weights (default 0.1: logits of std ~3, a peaked distribution)")
    ap.add_argument("--work-dir", default=None, help="where the GPT-2 files are made (default ~/.cache/pyinfer/"
                                                     "fidelity)")
    ap.add_argument("--quick", action="store_true", help="smoke test: n_ctx 128, 2 windows, 2 files, 16 oracle "
                                                         "tokens")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    n_ctx = args.ctx_size or (128 if args.quick else 512)
    files = (args.files or ("smollm2,gpt2-q8_0" if args.quick else ",".join(FILES))).split(",")
    engines = [e for e in args.engines.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise SystemExit(f"error: unknown engine(s) {bad}: expected {', '.join(ENGINES)}")
    n_windows = args.windows or (2 if args.quick else 0)
    oracle_tokens = args.oracle_tokens if args.oracle_tokens is not None else (16 if args.quick else 32)
    work = Path(args.work_dir or Path.home() / ".cache" / "pyinfer" / "fidelity").expanduser()
    work.mkdir(parents=True, exist_ok=True)
    # ~4.5 characters per token on this prose for these vocabularies; 25 % spare, and windows() checks the length
    text = stdlib_docstrings(int(max(args.tokens, 2 * n_ctx) * 4.5 * 1.25))

    def log(msg):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    rows, out = [], []
    for f in files:
        path = Path(f) if f.endswith(".gguf") else file_path(f, work, args.gpt2_init_range)
        label = path.name if f.endswith(".gguf") else f
        log(f"{label}: {path.name}")
        t0 = time.perf_counter()
        info, res = measure(path, text, n_ctx, n_windows, args.threads, engines, oracle_tokens, log)
        log(f"  {info['n_text_tokens']} text tokens, {info['n_windows']} windows of {info['n_ctx']}, "
            f"{time.perf_counter() - t0:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in info["seconds"].items())
            + ")")
        for name, r in res.items():
            d = {k: getattr(r, k) for k in ("kld_mean", "kld_stderr", "kld_median", "kld_p99", "kld_max", "top1",
                                            "ppl_a", "ppl_b", "n_tokens")}
            if name != "pyinfer" and "pyinfer" in res:
                d["vs_pyinfer"] = paired(r.kld, res["pyinfer"].kld)
            rows.append((label, name, d))
            out.append(dict(info, engine=name, **d))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
