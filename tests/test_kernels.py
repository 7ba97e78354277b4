"""Each kernel on every ISA this machine runs, against its scalar twin (the `ref` table) and a numpy oracle.
Sizes 0 .. 2 x the widest vector + 1, a large odd size, and misaligned (offset) views of the inputs.
"""
import numpy as np
import pytest

import pyinfer
from pyinfer import _ext
from tolerances import KERNEL_F16, KERNEL_F32, assert_close

K = _ext.kernels
ISAS = pyinfer.build_info()["isa_available"]
SIZES = list(range(0, 2 * 16 + 2)) + [1031]


def misaligned(a: np.ndarray, byte_offset: int = 4) -> np.ndarray:
    """A C-contiguous copy of `a` whose data starts `byte_offset` bytes past a 64-byte boundary."""
    buf = np.zeros(a.nbytes + 64 + byte_offset, np.uint8)
    start = (-buf.ctypes.data) % 64 + byte_offset
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def rng(seed=0):
    return np.random.default_rng(seed)


def gelu_np(x):
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_ref_is_always_there_and_selected_isa_is_available():
    info = pyinfer.build_info()
    assert "ref" in info["isa_compiled"] and "ref" in info["isa_available"]
    assert info["isa_selected"] in info["isa_available"]


def test_unknown_isa_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown ISA"):
        K.add("sse9", np.zeros(3, np.float32), np.zeros(3, np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
def test_matmul_every_size(isa, wdtype):
    r = rng(1)
    for k in SIZES:
        for t, n in ((1, 5), (4, 9), (7, 70)):
            x = r.standard_normal((t, k)).astype(np.float32)
            w = r.standard_normal((n, k)).astype(wdtype)
            b = r.standard_normal(n).astype(np.float32)
            out = K.matmul(isa, x, w, b)
            want = x.astype(np.float64) @ w.astype(np.float64).T + b  # numpy oracle on the same weights
            assert_close(out, want, KERNEL_F32, f"{isa} matmul {wdtype.__name__} T={t} N={n} K={k}")
            assert_close(out, K.matmul("ref", x, w, b), KERNEL_F32, f"{isa} vs ref, K={k}")


@pytest.mark.parametrize("isa", ISAS)
def test_matmul_large_misaligned_no_bias(isa):
    r = rng(2)
    x = misaligned(r.standard_normal((13, 1031)).astype(np.float32))
    w = misaligned(r.standard_normal((131, 1031)).astype(np.float32), 8)
    out = K.matmul(isa, x, w)
    assert_close(out, x.astype(np.float64) @ w.T.astype(np.float64), KERNEL_F32, f"{isa} misaligned matmul")
    # f16 weights vs the f32 weights they were rounded from
    out16 = K.matmul(isa, x, misaligned(w.astype(np.float16), 2))
    assert_close(out16, x.astype(np.float64) @ w.T.astype(np.float64), KERNEL_F16, f"{isa} f16 vs f32 weights")


@pytest.mark.parametrize("isa", ISAS)
def test_matmul_rows_do_not_depend_on_batch(isa):
    """Decode (T=1) and prefill (T>1) give bit-identical rows: the KV-cache path equals recompute."""
    r = rng(3)
    x = r.standard_normal((11, 200)).astype(np.float32)
    w = r.standard_normal((67, 200)).astype(np.float16)
    full = K.matmul(isa, x, w)
    for t in range(11):
        assert np.array_equal(K.matmul(isa, x[t:t + 1].copy(), w), full[t:t + 1])


def test_matmul_checks_shapes_and_dtypes():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="columns"):
        K.matmul("ref", x, np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        K.matmul("ref", x.astype(np.float64), np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="unsupported dtype"):
        K.matmul("ref", x, np.zeros((3, 8), np.int8))
    with pytest.raises(ValueError, match="C-contiguous"):
        K.matmul("ref", np.zeros((8, 2), np.float32).T, np.zeros((3, 8), np.float32))


@pytest.mark.parametrize("isa", ISAS)
def test_layernorm(isa):
    r = rng(4)
    for c in [s for s in SIZES if s > 0]:
        x = (r.standard_normal((3, c)) * 3 + 1).astype(np.float32)
        g, b = r.standard_normal(c).astype(np.float32), r.standard_normal(c).astype(np.float32)
        xd = x.astype(np.float64)
        want = (xd - xd.mean(1, keepdims=True)) / np.sqrt(xd.var(1, keepdims=True) + 1e-5) * g + b
        out = K.layernorm(isa, misaligned(x), g, b, 1e-5)
        assert_close(out, want, KERNEL_F32, f"{isa} layernorm C={c}")
        assert_close(out, K.layernorm("ref", x, g, b, 1e-5), KERNEL_F32, f"{isa} layernorm vs ref C={c}")
        assert_close(K.layernorm(isa, x, g, None, 1e-5), want - b, KERNEL_F32, f"{isa} layernorm no bias")


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_tanh(isa):
    r = rng(5)
    for n in SIZES:
        x = misaligned((r.standard_normal(n) * 4).astype(np.float32))
        out = K.gelu_tanh(isa, x)
        assert_close(out, gelu_np(x), KERNEL_F32, f"{isa} gelu n={n}")
        assert_close(out, K.gelu_tanh("ref", x), KERNEL_F32, f"{isa} gelu vs ref n={n}")
    extremes = np.array([-1e30, -100, -10, -1e-8, 0, 1e-8, 10, 100, 1e30], np.float32)
    assert_close(K.gelu_tanh(isa, extremes), gelu_np(extremes), KERNEL_F32, f"{isa} gelu extremes")


@pytest.mark.parametrize("isa", ISAS)
def test_softmax(isa):
    r = rng(6)
    for n in [s for s in SIZES if s > 0]:
        x = misaligned((r.standard_normal(n) * 10).astype(np.float32))
        e = np.exp(x.astype(np.float64) - x.max())
        out = K.softmax(isa, x)
        assert_close(out, e / e.sum(), KERNEL_F32, f"{isa} softmax n={n}")
        assert_close(out, K.softmax("ref", x), KERNEL_F32, f"{isa} softmax vs ref n={n}")
    # huge spreads: no overflow, the max gets all the mass
    x = np.array([-1e4, 0, 1e4] + [-3e4] * 20, np.float32)
    assert_close(K.softmax(isa, x), np.eye(1, 23, 2)[0], KERNEL_F32, f"{isa} softmax large spread")


@pytest.mark.parametrize("isa", ISAS)
def test_add(isa):
    r = rng(7)
    for n in SIZES:
        a, b = r.standard_normal(n).astype(np.float32), misaligned(r.standard_normal(n).astype(np.float32))
        assert np.array_equal(K.add(isa, a, b), a + b)  # one rounding: exact


def attention_np(q, k, v, n_past, n_head, n_head_kv, n_window=0):
    T, hd = q.shape[0], q.shape[1] // n_head
    out = np.zeros((T, n_head * hd))
    for h in range(n_head):
        hk = h // (n_head // n_head_kv)
        qh, kh, vh = (a.astype(np.float64) for a in (q[:, h * hd:(h + 1) * hd], k[:, hk * hd:(hk + 1) * hd],
                                                      v[:, hk * hd:(hk + 1) * hd]))
        s = qh @ kh.T / np.sqrt(hd)  # [T, n_past + T]
        pos = (n_past + np.arange(T))[:, None]  # [T, 1] the queries' positions
        mask = np.arange(k.shape[0])[None, :] > pos
        if n_window:  # sliding window: key j visible only if pos - j < n_window
            mask |= np.arange(k.shape[0])[None, :] <= pos - n_window
        s[mask] = -np.inf
        p = np.exp(s - s.max(1, keepdims=True))
        out[:, h * hd:(h + 1) * hd] = (p / p.sum(1, keepdims=True)) @ vh
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("T,n_past,n_head,n_head_kv,hd", [(1, 0, 1, 1, 1), (5, 0, 4, 4, 16), (1, 37, 4, 4, 33),
                                                          (6, 9, 8, 2, 64), (3, 4, 6, 1, 17)])
def test_attention(isa, T, n_past, n_head, n_head_kv, hd):
    r = rng(8)
    q = r.standard_normal((T, n_head * hd)).astype(np.float32)
    k = r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32)
    v = misaligned(r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32))
    want = attention_np(q, k, v, n_past, n_head, n_head_kv)
    out = K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 1)
    assert_close(out, want, KERNEL_F32, f"{isa} attention")
    assert_close(out, K.attention("ref", q, k, v, n_past, n_head, n_head_kv, 1), KERNEL_F32, f"{isa} vs ref")
    assert np.array_equal(out, K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 2)), "1 vs 2 threads"
    for n_shared in {1, n_past, n_past + T}:  # the cache split into a shared prefix span and an own span
        assert np.array_equal(out, K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 1, n_shared)), n_shared


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("T,n_past,n_window", [(1, 40, 8), (12, 0, 5), (7, 30, 1), (6, 3, 100), (9, 20, 24)])
def test_attention_sliding_window(isa, T, n_past, n_window):
    r = rng(18)
    n_head, n_head_kv, hd = 4, 2, 24
    q = r.standard_normal((T, n_head * hd)).astype(np.float32)
    k = r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32)
    v = r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32)
    want = attention_np(q, k, v, n_past, n_head, n_head_kv, n_window)
    out = K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 1, n_window=n_window)
    assert_close(out, want, KERNEL_F32, f"{isa} sliding-window attention")
    assert_close(out, K.attention("ref", q, k, v, n_past, n_head, n_head_kv, 1, n_window=n_window), KERNEL_F32,
                 f"{isa} vs ref")
    assert np.array_equal(out, K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 2, n_window=n_window))
    for n_shared in {1, n_past, n_past + T}:
        assert np.array_equal(out, K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 1, n_shared, n_window))
    if n_window < n_past + T:  # the window changes the result
        assert not np.allclose(out, K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 1))


def attention_inputs(r, T, n_past, n_head, n_head_kv, hd, f16):
    """q (T, n_head hd) and a cache k, v (n_past + T, n_head_kv hd), float32 or half bits (uint16)"""
    q = r.standard_normal((T, n_head * hd)).astype(np.float32)
    k = r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32)
    v = r.standard_normal((n_past + T, n_head_kv * hd)).astype(np.float32)
    if f16:
        k, v = k.astype(np.float16).view(np.uint16), v.astype(np.float16).view(np.uint16)
    return q, k, v


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("f16", [False, True])
@pytest.mark.parametrize("T,n_past,n_head,n_head_kv,hd,n_window", [(9, 0, 2, 1, 64, 0), (11, 5, 3, 3, 17, 0),
                                                                    (8, 30, 4, 2, 40, 6), (13, 2, 2, 2, 8, 0)])
def test_attention_batch_equals_one_query_at_a_time(isa, f16, T, n_past, n_head, n_head_kv, hd, n_window):
    # prefill works on blocks of queries that share each key / value row; each query must get exactly what it gets
    # alone (decode), whatever block it falls in
    q, k, v = attention_inputs(rng(28), T, n_past, n_head, n_head_kv, hd, f16)
    out = K.attention(isa, q, k, v, n_past, n_head, n_head_kv, 2, n_window=n_window)
    for t in range(T):
        one = K.attention(isa, q[t:t + 1], k[:n_past + t + 1], v[:n_past + t + 1], n_past + t, n_head, n_head_kv, 1,
                          n_window=n_window)
        assert np.array_equal(out[t:t + 1], one), t


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("f16", [False, True])
@pytest.mark.parametrize("T,n_past,n_head,n_head_kv,hd,n_window", [(1, 40, 9, 3, 64, 0), (1, 40, 4, 1, 48, 0),
                                                                    (2, 30, 8, 1, 24, 0), (3, 21, 10, 2, 16, 7),
                                                                    (1, 50, 14, 2, 40, 9), (1, 12, 6, 3, 8, 0)])
def test_attention_gqa_equals_repeated_heads(isa, f16, T, n_past, n_head, n_head_kv, hd, n_window):
    # decode (and batches under a query block) widens each key / value row once for the heads of its group; every
    # head must get exactly what it gets with a kv head of its own holding the same rows (group sizes 3, 4, 8, 5, 7
    # and 2 here; with more threads, a group splits into smaller sets, down to one head)
    q, k, v = attention_inputs(rng(38), T, n_past, n_head, n_head_kv, hd, f16)
    group = n_head // n_head_kv
    rep = lambda a: np.repeat(a.reshape(len(a), n_head_kv, 1, hd), group, axis=2).reshape(len(a), n_head * hd)
    want = K.attention(isa, q, rep(k), rep(v), n_past, n_head, n_head, 1, n_window=n_window)
    # and the same with the cache head-major, as the model keeps it: (n_head_kv, positions, hd)
    hm = lambda a: np.ascontiguousarray(a.reshape(len(a), n_head_kv, hd).transpose(1, 0, 2))
    for n_threads in (1, 2, 4):
        for n_shared in (0, n_past // 2):
            got = K.attention(isa, q, k, v, n_past, n_head, n_head_kv, n_threads, n_shared, n_window)
            assert np.array_equal(got, want), (n_threads, n_shared)
            got = K.attention(isa, q, hm(k), hm(v), n_past, n_head, n_head_kv, n_threads, n_shared, n_window)
            assert np.array_equal(got, want), ("head-major", n_threads, n_shared)


@pytest.mark.parametrize("isa", ISAS)
def test_get_row_f16(isa):
    r = rng(9)
    for n in SIZES:
        w = r.standard_normal((3, n)).astype(np.float16)
        assert np.array_equal(K.get_row(isa, w, 2), w[2].astype(np.float32))


def test_fp16_conversion_matches_numpy_exhaustively():
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    f = K.fp32_from_fp16(bits)
    want = bits.view(np.float16).astype(np.float32)
    assert np.array_equal(np.isnan(f), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(f[ok].view(np.uint32), want[ok].view(np.uint32))
    # float -> half rounding (nearest even), over every half value, the midpoints and random floats
    r = rng(10)
    xs = np.concatenate([want[ok], r.standard_normal(200000).astype(np.float32) * 100,
                         (r.standard_normal(200000) * 1e-5).astype(np.float32),
                         np.array([65504, 65519.99, 65520, 1e10, -1e10, 2.0 ** -25, 2.0 ** -24 * 1.5], np.float32)])
    mids = (want[ok][:-1].astype(np.float64) + want[ok][1:].astype(np.float64)) / 2
    xs = np.concatenate([xs, mids[np.isfinite(mids)].astype(np.float32)])
    got = K.fp16_from_fp32(xs)
    with np.errstate(over="ignore"):  # numpy warns on the values that round to inf, as intended
        want16 = xs.astype(np.float16)
    assert np.array_equal(got, want16.view(np.uint16))


@pytest.mark.parametrize("isa", ISAS)
def test_rmsnorm(isa):
    r = rng(11)
    for c in [s for s in SIZES if s > 0]:
        x = (r.standard_normal((3, c)) * 3).astype(np.float32)
        g = r.standard_normal(c).astype(np.float32)
        xd = x.astype(np.float64)
        want = xd / np.sqrt((xd ** 2).mean(1, keepdims=True) + 1e-6) * g
        out = K.rmsnorm(isa, misaligned(x), g, 1e-6)
        assert_close(out, want, KERNEL_F32, f"{isa} rmsnorm C={c}")
        assert_close(out, K.rmsnorm("ref", x, g, 1e-6), KERNEL_F32, f"{isa} rmsnorm vs ref C={c}")


def rope_np(x, n_heads, n_rot, pos, base, neox):
    T, hd = x.shape[0], x.shape[1] // n_heads
    out = x.astype(np.float64).copy()
    theta = pos[:, None] * base ** (-np.arange(0, n_rot, 2) / n_rot)[None, :]  # [T, n_rot/2]
    c, s = np.cos(theta), np.sin(theta)
    for h in range(n_heads):
        v = out[:, h * hd:(h + 1) * hd]
        a = np.arange(n_rot // 2) if neox else 2 * np.arange(n_rot // 2)
        b = a + n_rot // 2 if neox else a + 1
        x0, x1 = v[:, a].copy(), v[:, b].copy()
        v[:, a] = x0 * c - x1 * s
        v[:, b] = x0 * s + x1 * c
    return out, np.stack([c, s], -1).astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_heads,hd,n_rot", [(1, 2, 2), (3, 64, 64), (2, 96, 32), (4, 34, 34)])
def test_rope(isa, neox, n_heads, hd, n_rot):
    r = rng(12)
    x = r.standard_normal((5, n_heads * hd)).astype(np.float32)
    pos = np.array([0, 1, 17, 300, 4095], np.float64)
    want, cs = rope_np(x, n_heads, n_rot, pos, 10000.0, neox)
    out = K.rope(isa, x, n_heads, n_rot, cs, neox)
    assert_close(out, want, KERNEL_F32, f"{isa} rope")
    assert_close(out, K.rope("ref", x, n_heads, n_rot, cs, neox), KERNEL_F32, f"{isa} rope vs ref")
    # the dims beyond n_rot pass through untouched
    for h in range(n_heads):
        assert np.array_equal(out[:, h * hd + n_rot:(h + 1) * hd], x[:, h * hd + n_rot:(h + 1) * hd])


@pytest.mark.parametrize("isa", ISAS)
def test_silu_mul(isa):
    r = rng(13)
    for n in SIZES:
        g = misaligned((r.standard_normal(n) * 5).astype(np.float32))
        u = r.standard_normal(n).astype(np.float32)
        gd = g.astype(np.float64)
        want = gd / (1 + np.exp(-gd)) * u
        out = K.silu_mul(isa, g, u)
        assert_close(out, want, KERNEL_F32, f"{isa} silu_mul n={n}")
        assert_close(out, K.silu_mul("ref", g, u), KERNEL_F32, f"{isa} silu_mul vs ref n={n}")
    big = np.array([-1e4, -100, -20, 0, 20, 100, 1e4], np.float32)
    out = K.silu_mul(isa, big, np.ones(7, np.float32))
    assert np.all(np.isfinite(out)) and out[0] == 0 and out[-1] == 1e4


@pytest.mark.parametrize("isa", ISAS)
def test_gelu_mul(isa):
    r = rng(19)
    for n in SIZES:
        g = misaligned((r.standard_normal(n) * 5).astype(np.float32))
        u = r.standard_normal(n).astype(np.float32)
        gd = g.astype(np.float64)
        want = 0.5 * gd * (1 + np.tanh(np.sqrt(2 / np.pi) * (gd + 0.044715 * gd ** 3))) * u
        out = K.gelu_mul(isa, g, u)
        assert_close(out, want, KERNEL_F32, f"{isa} gelu_mul n={n}")
        assert_close(out, K.gelu_mul("ref", g, u), KERNEL_F32, f"{isa} gelu_mul vs ref n={n}")
        assert np.array_equal(out, K.gelu_tanh(isa, g) * u), "gelu_mul == gelu_tanh(g) * u"
    big = np.array([-1e4, -100, -20, 0, 20, 100, 1e4], np.float32)
    out = K.gelu_mul(isa, big, np.ones(7, np.float32))
    assert np.all(np.isfinite(out)) and out[0] == 0 and out[-1] == 1e4


@pytest.mark.parametrize("isa", ISAS)
def test_elementwise_kernels_same_bits_on_any_thread_count(isa):
    # From 16384 elements (prefill) the elementwise kernels cut their range among the threads at multiples of 4096:
    # every element takes the path (vector loop or scalar tail) it takes on one thread, so the bits are the same.
    r = rng(23)
    n = 3 * 4 * 4096 + 4096 + 1003  # whole chunks, then a short one that ends in a scalar tail
    g = misaligned((r.standard_normal(n) * 5).astype(np.float32))
    u = r.standard_normal(n).astype(np.float32)
    gd, gelu = g.astype(np.float64), gelu_np(g)
    x = r.standard_normal((300, 4 * 64)).astype(np.float32)  # rope: 300 tokens of 4 heads, cut by token
    pos = np.arange(300, dtype=np.float64)
    rope_want, cs = rope_np(x, 4, 64, pos, 10000.0, False)
    runs = {  # name: (kernel on n threads, numpy oracle)
        "add": (lambda nt: K.add(isa, g, u, n_threads=nt), gd + u),
        "silu_mul": (lambda nt: K.silu_mul(isa, g, u, n_threads=nt), gd / (1 + np.exp(-gd)) * u),
        "gelu_mul": (lambda nt: K.gelu_mul(isa, g, u, n_threads=nt), gelu * u),
        "gelu_tanh": (lambda nt: K.gelu_tanh(isa, g, n_threads=nt), gelu),
        "rope": (lambda nt: K.rope(isa, x, 4, 64, cs, False, n_threads=nt), rope_want),
    }
    for name, (run, want) in runs.items():
        one = run(1)
        assert_close(one, want, KERNEL_F32, f"{isa} {name} n={n}")
        for nt in (2, 3, 4):
            assert np.array_equal(run(nt), one), f"{isa} {name}: {nt} threads differ from 1"
