"""Block quantizers and quantized matmuls on every ISA this machine runs: quantizers bit-identical to the gguf
package's numpy quantizers (themselves bit-exact ports of ggml's reference); matmuls against the scalar twin and a
numpy oracle that repeats the activation quantization and sums the integer products exactly.
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

import pyinfer
from kquant_bytes import dequantized_activations, q16_oracle
from pyinfer import _ext
from tolerances import KERNEL_F32, QUANT_ACT_VS_F32, assert_close

K = _ext.kernels
ISAS = pyinfer.build_info()["isa_available"]
TYPES = {"q8_0": (8, Q.Q8_0), "q4_0": (2, Q.Q4_0), "q4_1": (3, Q.Q4_1), "q5_0": (6, Q.Q5_0), "q5_1": (7, Q.Q5_1)}
# (type, max relative RMS round-trip error on N(0, 1) blocks): Q8_0 keeps 8 bits, Q4_x 4 bits, Q5_x 5 bits (half the
# step of Q4_x)
ROUNDTRIP_RMS = {"q8_0": 0.01, "q4_0": 0.15, "q4_1": 0.12, "q5_0": 0.075, "q5_1": 0.06}
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}


def awkward_rows(rng, n_rows=41, n=256):
    """Rows of mixed scales with the edge cases a quantizer must get right."""
    x = (rng.standard_normal((n_rows, n)) * rng.uniform(1e-3, 30, (n_rows, 1))).astype(np.float32)
    x[0, :64] = 0                      # all-zero blocks (d = 0)
    x[1, :32] = 7.0                    # a constant block (q4_1: max == min)
    x[2, 5] = -np.abs(x[2, :32]).max() * 3  # the largest magnitude is negative
    x[3, 7] = np.abs(x[3, 32:64]).max()  # ties between + and - extremes
    x[3, 8] = -x[3, 7]
    x[4, :32] = np.linspace(-1, 1, 32)  # values landing exactly on rounding midpoints
    x[5] *= 1e-30                      # subnormal scales in fp16
    return x


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_quantizer_bit_exact_with_gguf(isa, name):
    type_id, qtype = TYPES[name]
    x = awkward_rows(np.random.default_rng(0))
    raw = K.quantize(isa, x, type_id)
    assert raw.dtype == np.uint8
    assert np.array_equal(raw, quantize(x, qtype)), f"{isa} {name} differs from gguf's quantizer"
    assert np.array_equal(K.dequantize(isa, raw, type_id, x.shape[1]), dequantize(raw, qtype))


@pytest.mark.parametrize("name", TYPES)
def test_roundtrip_error_bound(name):
    type_id, _ = TYPES[name]
    x = np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32)
    back = K.dequantize("ref", K.quantize("ref", x, type_id), type_id, 1024)
    rms = np.sqrt(np.mean((back - x) ** 2) / np.mean(x ** 2))
    assert rms <= ROUNDTRIP_RMS[name], f"{name}: relative RMS error {rms:.4f}"


def test_block_sizes_and_bad_rows():
    for name, size in BLOCK_BYTES.items():
        assert K.quantize("ref", np.zeros((1, 64), np.float32), TYPES[name][0]).shape == (1, 2 * size)
    with pytest.raises(ValueError, match="multiple of 32"):
        K.quantize("ref", np.zeros((1, 40), np.float32), 8)
    with pytest.raises(ValueError, match="unsupported ggml type"):
        K.quantize("ref", np.zeros((1, 64), np.float32), 9)  # Q8_1: an activation type, never a weight
    with pytest.raises(ValueError, match="bytes"):
        K.matmul("ref", np.zeros((1, 64), np.float32), (np.zeros((2, 60), np.uint8), 8, 64))


def q8a_oracle(x):
    """The activation blocks the kernels make (block_q8a: 32 values, one f32 scale per 16), in numpy:
    (d [T, nb, 2], s [T, nb] = d0 * sum0 + d1 * sum1 in float32, q [T, nb, 32] int)."""
    T, n = x.shape
    d, q = q16_oracle(x)  # [T, n / 16], [T, n / 16, 16]
    d = d.reshape(T, n // 32, 2)
    sums = q.sum(-1).reshape(T, n // 32, 2).astype(np.float32)
    d32 = d.astype(np.float32)
    s = (d32[..., 0] * sums[..., 0] + d32[..., 1] * sums[..., 1]).astype(np.float32).astype(np.float64)
    return d, s, q.reshape(T, n // 32, 32)


def quant_matmul_oracle(x, raw, qtype):
    """float64 x_q . w_q^T from the exact integer block sums (what the kernels compute, up to f32 rounding). The min
    term of q4_1 / q5_1 (stored min m) and of q4_0 / q5_0 (m = -8 d / -16 d: their offset) meets the stored activation
    sum s = d0 * sum0 + d1 * sum1 (float32), the unsigned weights q the integer sums."""
    d_x, s_x, q_x = q8a_oracle(x)  # [T, nb, 2], [T, nb], [T, nb, 32]
    T, nb = s_x.shape
    offset = {Q.Q4_0: 8, Q.Q5_0: 16}.get(qtype, 0)
    if qtype in (Q.Q4_0, Q.Q5_0, Q.Q4_1, Q.Q5_1):
        blocks = raw.reshape(raw.shape[0], nb, -1)
        dw = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float64)  # [N, nb]
        unit = blocks.copy()  # the same blocks with d = 1 (and m = 0): gguf's dequantize gives q - offset
        unit[..., 0:2] = np.array([1.0], np.float16).view(np.uint8)
        if offset:
            mw = -offset * dw
        else:
            mw = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
            unit[..., 2:4] = 0
        qw = dequantize(unit.reshape(raw.shape), qtype).reshape(raw.shape[0], nb, 2, 16).astype(np.int64) + offset
        isum = np.einsum("tbhi,nbhi->tnbh", q_x.reshape(T, nb, 2, 16), qw)  # exact integers per half
        return (np.einsum("tbh,nb,tnbh->tn", d_x, dw, isum.astype(np.float64))
                + np.einsum("tb,nb->tn", s_x, mw))
    wd = dequantize(raw, qtype).astype(np.float64)  # d_w * q_w exactly
    return dequantized_activations(x) @ wd.T


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_quant_matmul(isa, name):
    type_id, qtype = TYPES[name]
    rng = np.random.default_rng(2)
    # T and N cover every tile path: 16-, 8- and 4-row decode tiles, the packed prefill tiles with every count of
    # tokens left over (1-3 of 4 or 3), leftover rows
    for T, N, n_cols in ((1, 1, 32), (1, 9, 64), (1, 15, 64), (2, 13, 96), (3, 64, 256), (5, 70, 1056), (6, 48, 128),
                         (8, 33, 32), (9, 79, 64), (15, 37, 96)):
        x = rng.standard_normal((T, n_cols)).astype(np.float32)
        w = rng.standard_normal((N, n_cols)).astype(np.float32)
        raw = quantize(w, qtype)
        b = rng.standard_normal(N).astype(np.float32)
        out = K.matmul(isa, x, (raw, type_id, n_cols), b)
        want = quant_matmul_oracle(x, raw, qtype) + b
        assert_close(out, want, KERNEL_F32, f"{isa} {name} T={T} N={N} K={n_cols} vs oracle")
        # every ISA follows the scalar spec's float operations in order (integer block sums are exact): bit-identical
        assert np.array_equal(out, K.matmul("ref", x, (raw, type_id, n_cols), b)), f"{isa} {name} T={T} N={N} vs ref"
        # and close to the plain f32 product with the dequantized weights (only activation rounding differs)
        f32 = x.astype(np.float64) @ dequantize(raw, qtype).astype(np.float64).T + b
        assert_close(out, f32, QUANT_ACT_VS_F32, f"{isa} {name} vs dequantized f32 matmul")


# the byte ranges of a block's values: q8_0's signed qs, q4_x's nibbles, q5_x's fifth bits and nibbles
VALUE_BYTES = {"q8_0": (2, 34), "q4_0": (2, 18), "q4_1": (4, 20), "q5_0": (2, 22), "q5_1": (4, 24)}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_quant_matmul_extreme_integer_sums(isa, name):
    """The largest integer sums a block can give: every weight at its extreme (q8_0: -128 and 127; q4_x: 15; q5_x:
    31) against activations all at +-127.  The prefill tiles add a half's products in int16 before widening (q4_x /
    q5_x: 4 x 2 x 31 x 127 = 31496 < 2^15); an overflow or saturation there changes the result."""
    type_id, qtype = TYPES[name]
    rng = np.random.default_rng(11)
    n_cols, N = 96, 19
    raw = quantize(rng.standard_normal((N, n_cols)).astype(np.float32), qtype)
    blocks = raw.reshape(N, n_cols // 32, BLOCK_BYTES[name])
    a, b = VALUE_BYTES[name]
    blocks[..., a:b] = 0xFF if name != "q8_0" else 0x7F
    if name == "q8_0":
        blocks[::2, :, a:b] = 0x80  # -128: its |q| only fits maddubs' unsigned operand as 128
    x = np.ones((9, n_cols), np.float32)
    x[1::2] = -1.0  # all +127 or all -127 after rounding
    x[2, :16] *= 3.0  # one half scaled apart from the other
    for T in (9, 4, 1):
        out = K.matmul(isa, x[:T].copy(), (raw, type_id, n_cols))
        assert np.array_equal(out, K.matmul("ref", x[:T].copy(), (raw, type_id, n_cols))), f"{isa} {name} T={T}"
        assert_close(out, quant_matmul_oracle(x[:T], raw, qtype), KERNEL_F32, f"{isa} {name} T={T} vs oracle")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_quant_matmul_rows_independent_of_batch_and_threads(isa, name):
    type_id, qtype = TYPES[name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((11, 320)).astype(np.float32)
    w = (raw := quantize(rng.standard_normal((150, 320)).astype(np.float32), qtype), type_id, 320)
    full = K.matmul(isa, x, w, None, 1)
    assert np.array_equal(full, K.matmul(isa, x, w, None, 2)), "1 vs 2 threads"
    for t in range(11):
        assert np.array_equal(K.matmul(isa, x[t:t + 1].copy(), w), full[t:t + 1]), "decode row vs prefill row"
    assert raw.flags.c_contiguous


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_get_row_dequantizes(isa, name):
    type_id, qtype = TYPES[name]
    w = np.random.default_rng(4).standard_normal((5, 96)).astype(np.float32)
    raw = quantize(w, qtype)
    for r in range(5):
        assert np.array_equal(K.get_row(isa, (raw, type_id, 96), r), dequantize(raw, qtype)[r])


def test_benchmark_helpers():
    """The references benchmarks/bench_kernels.py divides by: a plain read really reads every 64-byte line, the int8
    peak loop reports its operation count, the timed matmul checks its weights like matmul does."""
    buf = np.random.default_rng(5).integers(0, 256, size=64 * 1000 + 40, dtype=np.uint8)
    times, checksum = K.bench_stream_read(buf, 2, 3)
    assert len(times) == 3 and min(times) > 0
    assert checksum == int(np.bitwise_xor.reduce(buf[:64 * 1000].view(np.uint64)))  # three passes: x ^ x ^ x = x
    for isa in ISAS:
        times, ops = K.bench_int8_peak(isa, 1, 2, 1000)
        assert len(times) == 2 and ops == 2 * 32 * 4 * 1000
    w = (quantize(np.ones((8, 64), np.float32), Q.Q8_0), 8, 64)
    assert len(K.bench_matmul("ref", np.ones((2, 64), np.float32), [w, w], 1, 5)) == 5
    w_other = (quantize(np.ones((4, 64), np.float32), Q.Q8_0), 8, 64)
    with pytest.raises(ValueError, match="same shape"):
        K.bench_matmul("ref", np.ones((2, 64), np.float32), [w, w_other], 1, 5)
