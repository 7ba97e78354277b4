"""`pyinfer bench`: a llama-bench style speed test: prompt processing (pp: N random tokens in one call) and text
generation (tg: N tokens one at a time) in tokens/s, the median of -r runs, one table row per thread count.
--compare-llama-cpp runs llama.cpp (llama-cpp-python, where installed) on the same GGUF file, each run interleaved
with pyinfer's, and adds its column and the ratio.
"""
import argparse
import os
import sys
import time

from .common import add_exact_flag, check_threads, load_model, register_command

# idle seconds before each timed run when comparing: llama.cpp's threads poll for work a while after a call returns,
# and the run after it shares the cores with them (benchmarks/bench_e2e.py --gap)
COMPARE_GAP_S = 0.25


def _int_list(s):
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    return vals


def add_bench_args(p):
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="PATH", required=True,
                   help="the model: a Hugging Face folder or a GGUF file")
    g.add_argument("--dtype", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type after loading: auto keeps the file's (default: auto)")
    add_exact_flag(g)
    g = p.add_argument_group("tests")
    g.add_argument("-p", "--n-prompt", type=int, default=128, metavar="N",
                   help="prompt processing test: N random tokens in one call; 0 = skip (default: 128)")
    g.add_argument("-n", "--n-gen", type=int, default=64, metavar="N",
                   help="text generation test: N tokens one at a time from an empty cache; 0 = skip (default: 64)")
    g.add_argument("-t", "--threads", type=_int_list, default=None, metavar="N[,N...]",
                   help="thread counts, one table row each (default: the runtime's)")
    g.add_argument("-r", "--repetitions", type=int, default=5, metavar="N",
                   help="timed runs per test; the table shows their median (default: 5)")
    g.add_argument("--compare-llama-cpp", action="store_true",
                   help="also run llama.cpp (llama-cpp-python) on the same GGUF file, runs interleaved")


def _bench_prompt(model, ids):
    model.reset()
    t0 = time.perf_counter()
    model.eval(ids)  # one call, logits of the last position only (as llama-bench's test_prompt)
    return time.perf_counter() - t0


def _bench_gen(model, ids):
    model.reset()
    t0 = time.perf_counter()
    for tok in ids:  # one token per call over a growing cache (as llama-bench's test_gen)
        model.eval([tok])
    return time.perf_counter() - t0


@register_command("bench", "llama-bench style speed test: prompt processing (pp) and text generation (tg) "
                           "tokens/s, median of -r runs, one row per thread count", add_bench_args)
def cmd_bench(args):
    import statistics

    import numpy as np

    if args.n_prompt < 0 or args.n_gen < 0:
        raise ValueError(f"-p and -n must be >= 0 (got -p {args.n_prompt}, -n {args.n_gen})")
    if args.n_prompt == 0 and args.n_gen == 0:
        raise ValueError("nothing to run: -p and -n are both 0")
    if args.repetitions < 1:
        raise ValueError(f"-r/--repetitions must be >= 1 (got {args.repetitions})")
    for n in args.threads or []:
        check_threads(n)
    model = load_model(args.model, 0, None, args.dtype, args.exact, getattr(args, "cache_type", None))
    need = max(args.n_prompt, args.n_gen)
    if need > model.n_ctx:
        raise ValueError(f"-p/-n of {need} tokens exceed the model's context of {model.n_ctx}")
    ref = None
    if args.compare_llama_cpp:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ValueError("--compare-llama-cpp needs llama-cpp-python (pip install llama-cpp-python)") from None
        if not str(model.path).lower().endswith(".gguf"):
            raise ValueError(f"--compare-llama-cpp needs a GGUF file, got {args.model}")
        ref = Llama(model_path=str(model.path), n_ctx=need + 8, n_batch=max(args.n_prompt, 8),
                    n_ubatch=max(args.n_prompt, 8), verbose=False)
    # random tokens as llama-bench draws them (BOS first when the model adds it), from a fixed seed
    rng = np.random.default_rng(0)
    tok = model.tokenizer
    bos = tok.bos_id if (tok.add_bos and tok.bos_id is not None) else None
    pp_ids = rng.integers(0, model.n_vocab, size=args.n_prompt).tolist()
    tg_ids = rng.integers(0, model.n_vocab, size=args.n_gen).tolist()
    if bos is not None:
        pp_ids[:1] = [bos][:len(pp_ids)]
        tg_ids[:1] = [bos][:len(tg_ids)]

    name = os.path.basename(os.path.normpath(args.model)) + ("" if args.dtype == "auto" else f" {args.dtype}") \
        + (" exact" if args.exact else "")
    tests = ([(f"pp{args.n_prompt}", _bench_prompt, pp_ids, args.n_prompt)] if args.n_prompt else []) + \
            ([(f"tg{args.n_gen}", _bench_gen, tg_ids, args.n_gen)] if args.n_gen else [])
    header = ["model", "threads"] + [h for t in tests for h in ([f"{t[0]} t/s"] + (
        [f"{t[0]} llama.cpp", f"{t[0]} ratio"] if ref else []))]
    rows = []
    for n_threads in args.threads or [model.n_threads]:
        model.n_threads = n_threads
        if ref:
            ref._ctx.set_n_threads(n_threads, n_threads)
        row = [name, str(n_threads)]
        for label, fn, ids, n in tests:
            fn(model, ids[:min(len(ids), 8)])  # warm-up run, untimed
            if ref:
                fn(ref, ids[:min(len(ids), 8)])
            rates, ref_rates = [], []
            for _ in range(args.repetitions):  # interleaved: machine noise hits both engines alike
                if ref:
                    time.sleep(COMPARE_GAP_S)
                rates.append(n / max(fn(model, ids), 1e-12))
                if ref:
                    time.sleep(COMPARE_GAP_S)
                    ref_rates.append(n / max(fn(ref, ids), 1e-12))
            sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
            row.append(f"{statistics.median(rates):.2f} +/- {sd:.2f}")
            if ref:
                rm = statistics.median(ref_rates)
                row += [f"{rm:.2f}", f"{statistics.median(rates) / rm:.2f}"]
            sys.stderr.write(f"bench: threads {n_threads}, {label}: done\n")
            sys.stderr.flush()
        rows.append(row)
    model.reset()
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
          + " |")
    print("| " + " | ".join("-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)) + " |")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              + " |")
    sys.stderr.write("bench: t/s is the median over -r runs +/- their standard deviation\n")
    return 0

