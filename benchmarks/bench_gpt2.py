"""Side-by-side CPU timing of pyinfer and HF transformers on a random-weight GPT-2-124M-shaped checkpoint:
prefill of a prompt and greedy decode tokens/s, at f32 and f16, per thread count, median of --repeats runs.
Not a test and not run by pytest; it checks nothing but reports whether the greedy tokens of both engines agree.

    python benchmarks/bench_gpt2.py                      # pyinfer f32/f16 and HF, 1 and 2 threads
    python benchmarks/bench_gpt2.py --only-hf --repeats 3
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GPT2_124M = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)


# ---------------------------------------------------------------------------------------------------------------------
# checkpoint: created once, reused from the cache dir
# ---------------------------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    root = os.environ.get("PYINFER_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyinfer-bench")
    return Path(root)


def write_checkpoint(model, folder: Path):
    """save_pretrained into a temp folder, add n_ctx and GPT-2's tokenizer files, then rename into place."""
    sys.path.insert(0, str(REPO / "tests"))
    from assets import gpt2_tokenizer_files  # GPT-2's real vocab.json / merges.txt, cached by tests/assets.py

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if not (tmp / "model.safetensors").exists():
        raise RuntimeError(f"save_pretrained wrote no model.safetensors in {tmp}: {os.listdir(tmp)}")
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["n_ctx"] = cfg["n_positions"]  # llama.cpp's GPT-2 converter reads n_ctx
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    gpt2_tokenizer_files(tmp)
    os.replace(tmp, folder)


def ensure_checkpoints(cache_dir: Path, seed: int) -> dict:
    """{"f32": folder, "f16": folder} of a random GPT-2-124M (HF's default init) and its float16 copy."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    base = cache_dir / f"gpt2-124m-random-s{seed}"
    folders = {"f32": base / "f32", "f16": base / "f16"}
    if all((f / "model.safetensors").exists() for f in folders.values()):
        return folders
    base.mkdir(parents=True, exist_ok=True)
    print(f"creating random GPT-2-124M checkpoints in {base} ...", file=sys.stderr)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**GPT2_124M)).eval()
    for dtype, folder in folders.items():
        shutil.rmtree(folder, ignore_errors=True)
        if dtype == "f16":
            model = model.half()  # the same weights rounded, not a fresh init
        write_checkpoint(model, folder)
    return folders


# ---------------------------------------------------------------------------------------------------------------------
# timed runs: each returns (prefill seconds, decode seconds, generated ids)
# ---------------------------------------------------------------------------------------------------------------------

def hf_cache_kwarg(model) -> str:
    """Name of the forward() KV-cache argument: `cache` in recent transformers 5.x, `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def run_hf(model, prompt_ids, n_new, cache_kwarg):
    """One prefill + n_new greedy decode steps with HF's KV cache, mirroring pyinfer's eval loop (no generate()).
    logits_to_keep=1: like pyinfer's eval(), prefill computes the LM head for the last position only."""
    import torch

    def step(ids, past):
        kwargs = {cache_kwarg: past} if past is not None else {}
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=True, logits_to_keep=1, **kwargs)
        past = out.cache if cache_kwarg == "cache" else out.past_key_values
        return int(torch.argmax(out.logits[0, -1])), past  # [1, 1, n_vocab] -> scalar

    with torch.inference_mode():
        t0 = time.perf_counter()
        next_id, past = step(prompt_ids, None)  # [1, n_prompt] in
        t1 = time.perf_counter()
        generated = [next_id]
        for _ in range(n_new - 1):
            next_id, past = step([next_id], past)  # [1, 1] in, cache grows by one
            generated.append(next_id)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, generated


def run_pyinfer(m, prompt_ids, n_new):
    """Prefill as reset() + eval(prompt); decode as successive eval([next_id]) that append to the KV cache."""
    t0 = time.perf_counter()
    m.reset()
    logits = m.eval(prompt_ids)  # [n_vocab] at the last prompt position
    next_id = int(np.argmax(logits))
    t1 = time.perf_counter()
    generated = [next_id]
    for _ in range(n_new - 1):
        next_id = int(np.argmax(m.eval([next_id])))
        generated.append(next_id)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, generated


def measure(run, repeats):
    """One untimed warm-up, then medians of `repeats` runs: (prefill s, decode s, ids of the last run)."""
    run()
    prefill, decode, ids = [], [], None
    for _ in range(repeats):
        p, d, ids = run()
        prefill.append(p)
        decode.append(d)
    return statistics.median(prefill), statistics.median(decode), ids


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where checkpoints are kept")
    ap.add_argument("--seed", type=int, default=0, help="weight init seed (and prompt seed)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64, help="decode steps timed (first one comes from prefill)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per configuration; the median is reported")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--dtypes", default="f32,f16", help="pyinfer weight dtypes: f32 and/or f16")
    ap.add_argument("--only-hf", action="store_true", help="skip pyinfer (e.g. before the extension is built)")
    ap.add_argument("--skip-hf", action="store_true", help="skip HF transformers")
    args = ap.parse_args(argv)

    threads = [int(t) for t in args.threads.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    if set(dtypes) - {"f32", "f16"}:
        ap.error(f"--dtypes takes f32 and/or f16, got {args.dtypes}")
    if args.new_tokens < 2 or args.prompt_len < 1:
        ap.error("need --prompt-len >= 1 and --new-tokens >= 2")
    if args.prompt_len + args.new_tokens > GPT2_124M["n_positions"]:
        ap.error(f"--prompt-len + --new-tokens must fit n_ctx = {GPT2_124M['n_positions']}")

    folders = ensure_checkpoints(args.cache_dir, args.seed)
    prompt_ids = np.random.default_rng(args.seed).integers(0, GPT2_124M["vocab_size"], args.prompt_len).tolist()
    n_decode = args.new_tokens - 1  # timed decode steps; the first new token comes out of prefill

    import torch

    rows = []  # (engine, dtype, threads, prefill_s, decode_s, ids)
    if not args.skip_hf:
        from transformers import GPT2LMHeadModel

        # HF runs f32 only: torch's CPU f16 matmuls are not a meaningful baseline; the f16 copy loaded as f32 is the
        # same model up to weight rounding.
        hf = GPT2LMHeadModel.from_pretrained(str(folders["f32"]), dtype=torch.float32).eval()
        cache_kwarg = hf_cache_kwarg(hf)
        for t in threads:
            torch.set_num_threads(t)
            p, d, ids = measure(lambda: run_hf(hf, prompt_ids, args.new_tokens, cache_kwarg), args.repeats)
            rows.append(("hf", "f32", t, p, d, ids))
            print(f"  hf       f32 threads={t}: prefill {p * 1e3:.1f} ms, decode {n_decode / d:.1f} tok/s",
                  file=sys.stderr)
        del hf

    if not args.only_hf:
        try:
            import pyinfer
        except ImportError as e:
            sys.exit(f"cannot import pyinfer ({e}); build it first or pass --only-hf")
        if hasattr(pyinfer, "build_info"):
            print(f"pyinfer build_info: {pyinfer.build_info()}", file=sys.stderr)
        for dtype in dtypes:
            for t in threads:
                m = pyinfer.load(str(folders[dtype]), n_threads=t, dtype=None if dtype == "f32" else "f16")
                p, d, ids = measure(lambda: run_pyinfer(m, prompt_ids, args.new_tokens), args.repeats)
                rows.append(("pyinfer", dtype, t, p, d, ids))
                print(f"  pyinfer  {dtype} threads={t}: prefill {p * 1e3:.1f} ms, decode {n_decode / d:.1f} tok/s",
                      file=sys.stderr)
                del m

    print(f"\nGPT-2-124M shape, random weights; prompt {args.prompt_len} tokens, {args.new_tokens} new tokens "
          f"({n_decode} timed decode steps); median of {args.repeats}; {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"{'engine':<8} {'dtype':<5} {'threads':>7} {'prefill ms':>11} {'prefill tok/s':>14} {'decode tok/s':>13}"
          f" {'greedy = hf':>12}")
    hf_ids = {t: ids for e, _, t, _, _, ids in rows if e == "hf"}
    for engine, dtype, t, p, d, ids in rows:
        agree = "" if engine == "hf" or t not in hf_ids else \
            f"{sum(a == b for a, b in zip(ids, hf_ids[t]))}/{len(ids)}"
        print(f"{engine:<8} {dtype:<5} {t:>7} {p * 1e3:>11.1f} {args.prompt_len / p:>14.1f} {n_decode / d:>13.1f}"
              f" {agree:>12}")

    hf_rows = {t: (p, d) for e, _, t, p, d, _ in rows if e == "hf"}
    ratios = [(dtype, t, hf_rows[t][0] / p, hf_rows[t][1] / d)
              for e, dtype, t, p, d, _ in rows if e == "pyinfer" and t in hf_rows]
    if ratios:
        print("\nspeed ratio pyinfer / HF f32 (> 1: pyinfer faster)")
        print(f"{'dtype':<5} {'threads':>7} {'prefill':>8} {'decode':>8}")
        for dtype, t, rp, rd in ratios:
            print(f"{dtype:<5} {t:>7} {rp:>8.2f} {rd:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
