"""pyinfer against llama.cpp (through llama-cpp-python) on the same GGUF file with the same thread count: prompt
processing (ppN: N tokens in one call) and text generation (tgN: N tokens one per call) tokens/s, median of
--repeats runs, the two engines' runs interleaved so that machine noise hits both alike.  Not a test.

    python benchmarks/bench_llama_cpp.py -m model.gguf                 # the default model if -m is omitted
    python benchmarks/bench_llama_cpp.py -m gpt2-q8_0.gguf -t 1 2 -r 5
"""
import argparse
import statistics
import time

import numpy as np

import pyinfer


def time_eval(engine, ids, one_by_one):
    """Seconds to run ids from an empty cache: one call, or one call per token.  Both engines have reset() and
    eval(tokens) (pyinfer.Model and llama_cpp.Llama)."""
    engine.reset()
    t0 = time.perf_counter()
    if one_by_one:
        for tok in ids:
            engine.eval([tok])
    else:
        engine.eval(ids)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF file (default: the default model, fetched if needed)")
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-r", "--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from llama_cpp import Llama  # the reference; a test extra, never a runtime dependency

    path = args.model
    if path is None:
        from pyinfer.models import default_model_path
        path = str(default_model_path())
    ctx = args.n_prompt + args.n_gen + 8
    ours = pyinfer.load(path, n_ctx=ctx)
    rng = np.random.default_rng(0)
    pp = rng.integers(0, ours.n_vocab, size=args.n_prompt).tolist()
    tg = rng.integers(0, ours.n_vocab, size=args.n_gen).tolist()
    print(f"{path}: pp{args.n_prompt} / tg{args.n_gen} tokens/s, median of {args.repeats}")
    print("| threads | pyinfer pp | llama.cpp pp | ratio | pyinfer tg | llama.cpp tg | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for th in args.threads:
        ours.n_threads = th
        ref = Llama(model_path=path, n_ctx=ctx, n_batch=max(args.n_prompt, 8), n_threads=th, n_threads_batch=th,
                    verbose=False)
        row = [str(th)]
        for ids, one in ((pp, False), (tg, True)):
            time_eval(ours, ids[:4], one), time_eval(ref, ids[:4], one)  # warm-up
            a, b = [], []
            for _ in range(args.repeats):
                a.append(len(ids) / time_eval(ours, ids, one))
                b.append(len(ids) / time_eval(ref, ids, one))
            ma, mb = statistics.median(a), statistics.median(b)
            row += [f"{ma:.1f}", f"{mb:.1f}", f"{ma / mb:.2f}"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
