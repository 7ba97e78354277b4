"""Test helpers for block types the gguf package cannot quantize to (the K-quants): random but valid raw bytes, and
a numpy twin of the matmul kernels' activation rounding (8 bits, one f32 scale per 16 values). Not a test module.
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


def q16_oracle(x):
    """The kernels' activation rounding in numpy (quant_blocks.h): per group of 16 values amax = max |x|,
    q = round-half-even(x * (127 / amax)), d = amax / 127 (float32 throughout); an all-zero group is d = 0, q = 0.
    Returns (d [T, n / 16] float64, q [T, n / 16, 16] int64)."""
    T, n = x.shape
    b = np.asarray(x, np.float32).reshape(T, n // 16, 16)
    amax = np.abs(b).max(-1)
    with np.errstate(divide="ignore"):
        inv = np.where(amax == 0, np.float32(0), np.float32(127) / amax).astype(np.float32)
    q = np.rint(b * inv[..., None]).astype(np.int64)
    d = (amax / np.float32(127)).astype(np.float32)
    return d.astype(np.float64), q


def dequantized_activations(x):
    """float64 [T, n]: x as the kernels see it after rounding (q16_oracle's d * q)."""
    d, q = q16_oracle(x)
    return (q * d[..., None]).reshape(x.shape)
