"""K-quant (Q2_K..Q6_K) kernels, and the 32-weight Q5_0/Q5_1 on the same random-byte and real-file blocks: row
dequantization equal to the gguf package's numpy code (np.array_equal), matmul bit-identical to the scalar twin on
every ISA this machine runs, for every tile shape, batch and thread count, and close to a numpy oracle that rounds
the activations as the kernels do (8 bits, one f32 scale per 16 values) and sums in float64.
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

import pyinfer
from kquant_bytes import FP16_FIELDS, dequantized_activations, random_blocks
from pyinfer import _ext
from test_kernels import misaligned
from tolerances import KQUANT_VS_ORACLE, QUANT_ACT_VS_F32, assert_close

K = _ext.kernels
ISAS = pyinfer.build_info()["isa_available"]
KTYPES = {"q2_K": Q.Q2_K, "q3_K": Q.Q3_K, "q4_K": Q.Q4_K, "q5_K": Q.Q5_K, "q6_K": Q.Q6_K}
ALL = {**KTYPES, "q5_0": Q.Q5_0, "q5_1": Q.Q5_1}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ALL)
def test_dequantize_random_blocks_equals_gguf(isa, name):
    qtype = ALL[name]
    rng = np.random.default_rng(0)
    for n_rows, n_cols in ((1, 256), (2, 512), (7, 2560), (33, 1024)):
        raw = random_blocks(qtype, n_rows, n_cols, rng)
        want = dequantize(raw, qtype)
        assert np.array_equal(K.dequantize(isa, raw, int(qtype), n_cols), want), f"{isa} {name} {n_rows}x{n_cols}"
        assert np.array_equal(K.get_row(isa, (misaligned(raw, 3), int(qtype), n_cols), n_rows - 1), want[-1])


def kquant_matmul_oracle(x, raw, qtype):
    """float64 (d_x q_x) . w^T with w = gguf's dequantization: what the kernels compute up to f32 rounding."""
    return dequantized_activations(x) @ dequantize(raw, qtype).astype(np.float64).T


# (T, N, K): decode (T = 1) and prefill, 4-row tiles and 1-3 leftover rows, one super-block up to many; from 10
# tokens the packed 8-row tiles (2 tokens a pass, an odd one last) with leftover rows
SHAPES = ((1, 1, 256), (1, 4, 256), (1, 7, 512), (1, 70, 1024), (2, 5, 256), (3, 17, 768), (5, 64, 512),
          (8, 33, 256), (9, 67, 2560), (13, 41, 768))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", KTYPES)
def test_kquant_matmul_vs_scalar_twin_and_oracle(isa, name):
    qtype = KTYPES[name]
    rng = np.random.default_rng(1)
    for T, N, n_cols in SHAPES:
        x = rng.standard_normal((T, n_cols)).astype(np.float32)
        x[0, :256] *= 0 if T > 1 else 1  # an all-zero activation super-block (d = 0) in prefill
        x[-1, 16:32] = 0  # and an all-zero group of 16
        raw = random_blocks(qtype, N, n_cols, rng)
        b = rng.standard_normal(N).astype(np.float32)
        out = K.matmul(isa, x, (raw, int(qtype), n_cols), b)
        assert np.array_equal(out, K.matmul("ref", x, (raw, int(qtype), n_cols), b)), f"{isa} {name} {T}x{N}x{n_cols}"
        assert_close(out, kquant_matmul_oracle(x, raw, qtype) + b, KQUANT_VS_ORACLE, f"{isa} {name} T={T} N={N} vs oracle")
        # misaligned views give the same bits
        assert np.array_equal(K.matmul(isa, misaligned(x), (misaligned(raw, 5), int(qtype), n_cols), b), out)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", KTYPES)
def test_kquant_matmul_extreme_integer_sums(isa, name):
    """Every packed bit set (each value at its type's maximum, q6_K's 63; the largest 6-bit scales and mins) against
    activations all at +-127: the prefill tiles add a group's products in int16 (q6_K by pairs) before widening, and
    an overflow there changes the result."""
    qtype = KTYPES[name]
    rng = np.random.default_rng(12)
    n_cols, N = 512, 19
    raw = random_blocks(qtype, N, n_cols, rng)
    blocks = raw.reshape(N, n_cols // 256, -1)
    fp16 = {off + i for off in FP16_FIELDS[qtype] for i in (0, 1)}
    blocks[..., [i for i in range(blocks.shape[-1]) if i not in fp16]] = 0xFF
    x = np.ones((13, n_cols), np.float32)
    x[1::2] = -1.0
    x[2, :16] *= 3.0
    for T in (13, 4, 1):
        out = K.matmul(isa, x[:T].copy(), (raw, int(qtype), n_cols))
        assert np.array_equal(out, K.matmul("ref", x[:T].copy(), (raw, int(qtype), n_cols))), f"{isa} {name} T={T}"
        assert_close(out, kquant_matmul_oracle(x[:T], raw, qtype), KQUANT_VS_ORACLE, f"{isa} {name} T={T} vs oracle")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ALL)
def test_rows_independent_of_batch_and_threads(isa, name):
    qtype = ALL[name]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((11, 512)).astype(np.float32)
    w = (random_blocks(qtype, 150, 512, rng), int(qtype), 512)
    full = K.matmul(isa, x, w, None, 1)
    assert np.array_equal(full, K.matmul(isa, x, w, None, 2)), "1 vs 2 threads"
    assert np.array_equal(full, K.matmul("ref", x, w, None, 1)), "vs the scalar twin"
    for t in range(11):
        row = K.matmul(isa, x[t:t + 1].copy(), w, None, 2)
        assert np.array_equal(row, full[t:t + 1]), f"decode row {t} vs prefill row"


# ---------------------------------------------------------------------------------------------------------------------
# real blocks: Gemma 3 270M Q4_K_M as llama.cpp wrote it holds Q5_0, Q4_K, Q6_K and Q8_0 tensors
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_tensors():
    from pyinfer import gguf_file, models
    reader = gguf_file.read_gguf(models.named_model_path("gemma3-270m", quiet=True))
    by_type = {}
    for t in reader.tensors:
        if len(t.shape) == 2 and t.tensor_type not in by_type:
            by_type[t.tensor_type] = t
    return by_type


@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q4_K, Q.Q6_K, Q.Q8_0])
def test_real_gemma_blocks(gemma_tensors, qtype):
    t = gemma_tensors[qtype]
    from pyinfer import gguf_file
    raw = np.ascontiguousarray(gguf_file.tensor_raw(t)[:96])  # [96, row_bytes]
    n_cols = int(t.shape[0])
    want = dequantize(raw, qtype)
    x = np.random.default_rng(3).standard_normal((3, n_cols)).astype(np.float32)
    ref = K.matmul("ref", x, (raw, int(qtype), n_cols))
    f32 = x.astype(np.float64) @ want.astype(np.float64).T
    for isa in ISAS:
        assert np.array_equal(K.dequantize(isa, raw, int(qtype), n_cols), want), f"{isa} {t.name} ({qtype.name})"
        out = K.matmul(isa, x, (raw, int(qtype), n_cols))
        assert np.array_equal(out, ref), f"{isa} {t.name}: SIMD vs scalar twin"
        assert np.array_equal(K.matmul(isa, x[1:2].copy(), (raw, int(qtype), n_cols)), ref[1:2]), "decode vs prefill"
        assert_close(out, f32, QUANT_ACT_VS_F32, f"{isa} {t.name} ({qtype.name}) vs dequantized f32 matmul")
    if qtype in KTYPES.values():
        assert_close(ref, kquant_matmul_oracle(x, raw, qtype), KQUANT_VS_ORACLE, f"{t.name} vs oracle")


def test_kquant_rows_must_be_whole_super_blocks():
    with pytest.raises(ValueError, match="multiple of 256"):
        K.matmul("ref", np.zeros((1, 96), np.float32), (np.zeros((2, 54), np.uint8), int(Q.Q4_K), 96))


@pytest.mark.parametrize("name", KTYPES)
def test_quantize_refuses_or_roundtrips(name):
    """quantize writes a K-quant correctly or refuses it with a ValueError; never returns unwritten bytes."""
    x = np.random.default_rng(4).standard_normal((4, 512)).astype(np.float32)
    try:
        raw = K.quantize("ref", x, int(KTYPES[name]))
    except ValueError as e:
        assert "not supported" in str(e) and name.upper() in str(e).upper()
        return
    back = dequantize(raw, KTYPES[name])
    assert np.sqrt(np.mean((back - x) ** 2) / np.mean(x ** 2)) < 0.5, f"{name}: quantize wrote garbage"


@pytest.mark.parametrize("isa", ISAS)
def test_activation_rounding_ties_and_groups(isa):
    """Activations on rounding midpoints: a group of 16 whose largest magnitude is 127 gets the scale 1, so q =
    round(x) exactly at the .5 ties; they round half to even (half away from zero would move every tie and the
    result by ~1e-2).  Each group of 16 has its own scale: a group of tiny values next to a group with a large one
    keeps its precision (one scale per 256, as ggml's Q8_K, would round the tiny ones to 0)."""
    rng = np.random.default_rng(5)
    x = np.zeros((3, 512), np.float32)
    x[0, :256] = rng.integers(-126, 126, 256) + 0.5
    x[0, ::16] = np.where(np.arange(32) % 2 == 0, -127.0, 127.0)  # every group's largest magnitude: 127
    x[1, :256] = -x[0, :256]
    x[:2, 256:] = rng.standard_normal((2, 256)).astype(np.float32)
    # values below half a step of a 256-wide scale set by 1.0 (3e-3 < 0.5 / 127), beside one 1.0 per 256: per-16
    # scales keep them (error ~1e-4 here), one scale per 256 would round them all to 0 (error ~5e-2 of the result)
    x[2] = np.clip(rng.standard_normal(512), -1, 1).astype(np.float32) * 3e-3
    x[2, 0:16] = x[2, 256:272] = 0.0
    x[2, ::256] = 1.0  # alone in its group
    for qtype in KTYPES.values():
        raw = random_blocks(qtype, 12, 512, rng)
        out = K.matmul(isa, x, (raw, int(qtype), 512))
        assert_close(out, kquant_matmul_oracle(x, raw, qtype), KQUANT_VS_ORACLE, f"{isa} {qtype.name} on ties")
        exact = x.astype(np.float64) @ dequantize(raw, qtype).astype(np.float64).T
        assert_close(out[2], exact[2], QUANT_ACT_VS_F32, f"{isa} {qtype.name}: per-16 scales")


@pytest.mark.parametrize("isa", ISAS)
def test_fused_matmul_equals_separate_matmuls(isa):
    """matmul_multi (q/k/v and gate/up in one parallel region, the input rounded once for every weight type that needs
    it) gives each weight exactly the separate matmul's result, for any mix of types, batch and thread count."""
    rng = np.random.default_rng(7)
    n_cols = 512
    mixes = ((Q.Q4_K, Q.Q8_0, Q.Q6_K), (Q.Q5_0, Q.Q2_K), (Q.Q3_K,), (Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q5_0))
    for types in mixes:
        ws = [(random_blocks(q, int(rng.integers(1, 70)), n_cols, rng), int(q), n_cols) for q in types]
        ws.append(rng.standard_normal((13, n_cols)).astype(np.float32)) if len(ws) < 4 else None
        for T in (1, 5, 9):
            x = rng.standard_normal((T, n_cols)).astype(np.float32)
            for threads in (1, 2):
                outs = K.matmul_multi(isa, x, ws, n_threads=threads)
                assert len(outs) == len(ws)
                for i, (w, out) in enumerate(zip(ws, outs)):
                    assert np.array_equal(out, K.matmul(isa, x, w)), f"{isa} {types} T={T} weight {i}"
    with pytest.raises(ValueError, match="columns"):
        K.matmul_multi(isa, x, [ws[0], rng.standard_normal((3, 256)).astype(np.float32)])
    with pytest.raises(ValueError, match="1 to 4"):
        K.matmul_multi(isa, x, [ws[0]] * 5)
