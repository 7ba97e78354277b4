"""Kernel speed against this machine's own limits, measured in the same run: a quantized matrix-vector product's
weight-streaming rate as a fraction of a plain read of the same number of bytes (cold: from DRAM; hot: from cache),
and the prefill matrix-matrix product in GOP/s as a fraction of the ISA's int8 peak (its block-dot instructions
on registers only, on as many cores).  Not a test.  Kernel and reference alternate in 5 rounds of --repeats calls
(timed in C++); each figure is the median over the rounds, so a slow minute of a shared machine weighs on both.

    python benchmarks/bench_kernels.py                   # selected ISA, 1 and 2 threads
    python benchmarks/bench_kernels.py --isa ref --threads 1 --types q8_0
    python benchmarks/bench_kernels.py --types q6_K q4_K --shapes 640x2048 65536x2048 --no-prefill
"""
import argparse
import statistics

import numpy as np

from pyinfer import _ext, build_info

GGML_TYPE = {"f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
             "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14}
# (weights per block, bytes per block, offsets of the fp16 fields) of the types quantize cannot write: random valid
# blocks stand in for them (the speed of a matrix-vector product does not depend on the values)
RANDOM_BLOCKS = {"q2_K": (256, 84, (80, 82)), "q3_K": (256, 110, (108,)), "q4_K": (256, 144, (0, 2)),
                 "q5_K": (256, 176, (0, 2)), "q6_K": (256, 210, (208,))}
COLD_BYTES = 256 << 20  # several copies of a matrix, cycled, so that each call reads it from DRAM

# (rows N, columns K): GPT-2-124M's ffn_up, ffn_down and LM head
MATVEC_SHAPES = [(3072, 768), (768, 3072), (50257, 768)]
PREFILL_SHAPES = [(3072, 768), (768, 3072)]


def block_size(wtype):
    return RANDOM_BLOCKS[wtype][0] if wtype in RANDOM_BLOCKS else 1 if wtype == "f16" else 32


def make_weight(isa, n, k, wtype, rng):
    if wtype in RANDOM_BLOCKS:
        bs, nbytes, fp16_at = RANDOM_BLOCKS[wtype]
        raw = rng.integers(0, 256, size=(n, k // bs, nbytes), dtype=np.uint8)
        for off in fp16_at:
            raw[..., off:off + 2] = np.full(raw.shape[:2], 1e-3, np.float16).view(np.uint8).reshape(raw.shape[:2] + (2,))
        return (raw.reshape(n, -1), GGML_TYPE[wtype], k)
    w = rng.standard_normal((n, k), dtype=np.float32) * 0.02
    if wtype == "f16":
        return w.astype(np.float16)
    return (_ext.kernels.quantize(isa, w, GGML_TYPE[wtype]), GGML_TYPE[wtype], k)


def weight_bytes(w):
    return (w[0] if isinstance(w, tuple) else w).nbytes


def copies(w, n_copies):
    if isinstance(w, tuple):
        return [(w[0].copy(), w[1], w[2]) for _ in range(n_copies)]
    return [w.copy() for _ in range(n_copies)]


def median_s(times):
    return statistics.median(times[1:] if len(times) > 2 else times)  # the first call warms up


def stream_read_gbs(buf, threads, repeats):
    times, _ = _ext.kernels.bench_stream_read(buf, threads, repeats)
    return buf.nbytes / median_s(times) / 1e9


def bench_matvec(isa, wtype, shape, threads, repeats, rng, rounds=5):
    """(weight bytes, [(where, kernel GB/s, read GB/s)]): the kernel and the plain read of as many bytes (hot: one
    buffer of the matrix's size read again and again; cold: a 256 MB buffer) timed in alternating rounds, so that
    a slow minute of a shared machine weighs on both; medians over the rounds."""
    n, k = shape
    w = make_weight(isa, n, k, wtype, rng)
    x = rng.standard_normal((1, k), dtype=np.float32)
    nb = weight_bytes(w)
    rows = []
    for cold in (False, True):
        ws = copies(w, max(1, -(-COLD_BYTES // nb))) if cold else [w]
        buf = np.ones(max(nb, COLD_BYTES) if cold else nb, dtype=np.uint8)
        reps = max(repeats, len(ws) + 1)
        kern, read = [], []
        for _ in range(rounds):
            kern.append(nb / median_s(_ext.kernels.bench_matmul(isa, x, ws, threads, reps)) / 1e9)
            read.append(stream_read_gbs(buf, threads, max(3, repeats // 2 if cold else repeats * 4)))
        rows.append(("cold" if cold else "hot", statistics.median(kern), statistics.median(read)))
        del ws, buf
    return nb, rows


def bench_prefill(isa, wtype, shape, t_tokens, threads, repeats, rng, rounds=5):
    """(GOP/s, int8 peak GOP/s or None for f16), timed in alternating rounds; medians over the rounds."""
    n, k = shape
    w = make_weight(isa, n, k, wtype, rng)
    x = rng.standard_normal((t_tokens, k), dtype=np.float32)
    gops, peak = [], []
    for _ in range(rounds):
        gops.append(2.0 * t_tokens * n * k / median_s(_ext.kernels.bench_matmul(isa, x, [w], threads, repeats)) / 1e9)
        if wtype != "f16":  # float arithmetic: no int8 peak to compare with
            times, ops = _ext.kernels.bench_int8_peak(isa, threads, 3)
            peak.append(ops / median_s(times) / 1e9)
    return statistics.median(gops), (statistics.median(peak) if peak else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default=None, help="kernel table (default: the one selected for this CPU)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--types", nargs="+", default=["q8_0", "q4_0", "q4_1", "f16"], choices=sorted(GGML_TYPE))
    ap.add_argument("--tokens", type=int, default=128, help="prefill tokens")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shapes", nargs="+", default=None, help="matrix-vector shapes NxK (default: GPT-2's)")
    ap.add_argument("--no-prefill", action="store_true", help="matrix-vector products only")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes] if args.shapes else MATVEC_SHAPES
    isa = args.isa or build_info()["isa_selected"]
    rng = np.random.default_rng(0)
    print(f"isa {isa}; kernel and reference timed in 5 alternating rounds (each the median of {args.repeats} "
          "calls); medians of the rounds")
    print("\nmatrix-vector (decode)")
    print(f"{'type':5} {'N x K':>11} {'MB':>6} {'thr':>3} {'where':5} {'GB/s':>6} {'read GB/s':>9} {'ratio':>6}")
    for wtype in args.types:
        for shape in shapes:
            if shape[1] % block_size(wtype):
                continue  # K not a multiple of the type's block (e.g. 640 for the K-quants' 256)
            for th in args.threads:
                nb, rows = bench_matvec(isa, wtype, shape, th, args.repeats, rng)
                for where, gbs, ref in rows:
                    print(f"{wtype:5} {shape[0]:>5}x{shape[1]:<5} {nb / 1e6:6.1f} {th:3d} {where:5} {gbs:6.1f} "
                          f"{ref:9.1f} {gbs / ref:6.2f}", flush=True)
    if args.no_prefill:
        return
    print(f"\nmatrix-matrix (prefill, {args.tokens} tokens; 2 ops per multiply-add; f16 is float arithmetic)")
    print(f"{'type':5} {'N x K':>11} {'thr':>3} {'GOP/s':>6} {'peak GOP/s':>10} {'ratio':>6}")
    for wtype in args.types:
        for shape in PREFILL_SHAPES:
            if shape[1] % block_size(wtype):
                continue
            for th in args.threads:
                g, peak = bench_prefill(isa, wtype, shape, args.tokens, th, args.repeats, rng)
                if peak is None:
                    print(f"{wtype:5} {shape[0]:>5}x{shape[1]:<5} {th:3d} {g:6.1f} {'-':>10} {'-':>6}", flush=True)
                else:
                    print(f"{wtype:5} {shape[0]:>5}x{shape[1]:<5} {th:3d} {g:6.1f} {peak:10.1f} {g / peak:6.2f}",
                          flush=True)

if __name__ == "__main__":
    main()
