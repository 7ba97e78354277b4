"""Test helpers for block types the gguf package cannot quantize to (the K-quants): random but valid raw bytes, and
a numpy twin of ggml's quantize_row_q8_K_ref (the K-quant matmul's activation rounding). Not a test module.
"""
import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

# byte offsets of each block's fp16 fields (scale d, and dmin / m where the type has one), ggml-common.h
FP16_FIELDS = {Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,), Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2),
               Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def random_blocks(qtype, n_rows, n_cols, rng, scale=0.01):
    """uint8 [n_rows, row_bytes] of random blocks of `qtype`: every packed quant, sub-block scale and high bit
    random; the fp16 fields set to finite values ~ N(0, scale) (random bytes there would give NaN/Inf)."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_rows, n_cols // block, size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        v = (rng.standard_normal(raw.shape[:2]) * scale).astype(np.float16)
        raw[..., off:off + 2] = v.view(np.uint8).reshape(raw.shape[:2] + (2,))
    return raw.reshape(n_rows, -1)


def q8k_oracle(x):
    """ggml's quantize_row_q8_K_ref in numpy: per 256 values, max = the value of largest magnitude (first on ties),
    iscale = -127 / max, q = min(127, round-half-even(iscale * x)), d = 1 / iscale (float32 throughout); an all-zero
    block is d = 0, q = 0.  Returns (d [T, nb] float64, q [T, nb, 256] int64)."""
    T, n = x.shape
    b = x.reshape(T, n // 256, 256).astype(np.float32)
    idx = np.abs(b).argmax(-1)
    mx = np.take_along_axis(b, idx[..., None], -1)[..., 0]
    zero = mx == 0
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, np.float32(0), np.float32(-127) / np.where(zero, np.float32(1), mx)).astype(np.float32)
        d = np.where(zero, np.float32(0), np.float32(1) / np.where(zero, np.float32(1), iscale)).astype(np.float32)
    q = np.minimum(np.rint(b * iscale[..., None]), 127).astype(np.int64)
    return d.astype(np.float64), q
