"""`pyinfer bench`: a llama-bench style speed test: prompt processing (pp: N random tokens in one call) and text
generation (tg: N tokens one at a time) in tokens/s, the median of -r runs, one table row per thread count.
"""
import argparse
import os
import sys
import time

from .common import add_exact_flag, check_threads, load_model, register_command


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
    model = load_model(args.model, 0, None, args.dtype, args.exact)
    need = max(args.n_prompt, args.n_gen)
    if need > model.n_ctx:
        raise ValueError(f"-p/-n of {need} tokens exceed the model's context of {model.n_ctx}")
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
    header = ["model", "threads"] + [f"{t[0]} t/s" for t in tests]
    rows = []
    for n_threads in args.threads or [model.n_threads]:
        model.n_threads = n_threads
        row = [name, str(n_threads)]
        for label, fn, ids, n in tests:
            fn(model, ids[:min(len(ids), 8)])  # warm-up run, untimed
            rates = [n / max(fn(model, ids), 1e-12) for _ in range(args.repetitions)]
            sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
            row.append(f"{statistics.median(rates):.2f} +/- {sd:.2f}")
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

