"""The f16 KV cache (kv_type="f16", the default as in llama.cpp): the attention kernel over half-precision K/V against
its scalar twin and a numpy oracle on the same rounded values, the f32 -> f16 row conversion bit for bit against
numpy, and the whole model against the f32 cache (logits within KV_F16_VS_F32, greedy agreement reported), with
decode == recompute, save/load and beams on the f16 cache."""
import numpy as np
import pytest

import pyinfer
from pyinfer import _ext
from subproc import run_cli, run_py
from tolerances import GREEDY_KV_F16_AGREE, KERNEL_F32, KV_F16_VS_F32, MODEL_F32_VS_HF, assert_close
from test_kernels import attention_np, misaligned

K = _ext.kernels
ISAS = pyinfer.build_info()["isa_available"]
PROMPT = "The quick brown fox jumps over the lazy dog and"


def rng(seed):
    return np.random.default_rng(seed)


def half(a):
    """(rounded f32 values, their IEEE half bits as uint16)."""
    h = a.astype(np.float16)
    return h.astype(np.float32), np.ascontiguousarray(h.view(np.uint16))


@pytest.mark.parametrize("isa", ISAS)
def test_to_f16_matches_numpy(isa):
    r = rng(1)
    for n in list(range(0, 40)) + [1000]:
        x = (r.standard_normal(n) * 10.0 ** r.integers(-8, 5, n)).astype(np.float32)
        want = x.astype(np.float16).view(np.uint16)
        assert np.array_equal(K.to_f16(isa, x), want), n
        assert np.array_equal(K.to_f16(isa, misaligned(x)), want), n
    edge = np.array([0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 6e-8, 2.9e-8, 3e-8, 6.1e-5, np.inf, -np.inf] * 2,
                    np.float32)
    with np.errstate(over="ignore"):  # the overflow to inf is the point
        assert np.array_equal(K.to_f16(isa, edge), edge.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("T,n_past,n_head,n_head_kv,hd,n_window", [
    (1, 0, 1, 1, 8, 0), (1, 37, 4, 2, 16, 0), (5, 11, 6, 3, 7, 0), (9, 20, 4, 4, 33, 0), (1, 40, 4, 2, 24, 8),
    (12, 0, 4, 2, 24, 5), (7, 30, 2, 1, 64, 1)])
def test_attention_f16_cache(isa, T, n_past, n_head, n_head_kv, hd, n_window):
    r = rng(8)
    q = r.standard_normal((T, n_head * hd)).astype(np.float32)
    k32, k16 = half(r.standard_normal((n_past + T, n_head_kv * hd)))
    v32, v16 = half(r.standard_normal((n_past + T, n_head_kv * hd)))
    out = K.attention(isa, q, k16, v16, n_past, n_head, n_head_kv, 1, 0, n_window)
    # the oracle on the same rounded values, and the f32 kernel on them: the f16 kernel only widens
    assert_close(out, attention_np(q, k32, v32, n_past, n_head, n_head_kv, n_window), KERNEL_F32, f"{isa} vs numpy")
    assert np.array_equal(out, K.attention(isa, q, k32, v32, n_past, n_head, n_head_kv, 1, 0, n_window)), "vs f32"
    assert_close(out, K.attention("ref", q, k16, v16, n_past, n_head, n_head_kv, 1, 0, n_window), KERNEL_F32,
                 f"{isa} vs ref")
    assert np.array_equal(out, K.attention(isa, q, k16, v16, n_past, n_head, n_head_kv, 2, 0, n_window)), "threads"
    for n_shared in {1, n_past, n_past + T}:
        assert np.array_equal(out, K.attention(isa, q, k16, v16, n_past, n_head, n_head_kv, 1, n_shared, n_window))


@pytest.fixture(scope="module")
def pair(gpt2_small):
    return pyinfer.load(gpt2_small, n_threads=1, kv_type="f16"), pyinfer.load(gpt2_small, n_threads=1, kv_type="f32")


def test_logits_close_to_f32_cache_and_greedy_agreement(pair):
    m16, m32 = pair
    assert (m16.kv_type, m32.kv_type) == ("f16", "f32")
    ids = m32.tokenize(PROMPT * 3)[:40]
    a, b = m16.forward(ids), m32.forward(ids)
    print(f"f16 vs f32 cache: max|dlogit| / max|logit| = {np.max(np.abs(a - b)) / np.max(np.abs(b)):.2e}")
    assert_close(a, b, KV_F16_VS_F32, "f16 cache vs f32 cache")
    assert not np.array_equal(a[1:], b[1:])  # the cache really is rounded (position 0 attends to itself only)
    g16 = m16.generate(PROMPT, max_tokens=32, temperature=0, ignore_eos=True, details=True).tokens
    g32 = m32.generate(PROMPT, max_tokens=32, temperature=0, ignore_eos=True, details=True).tokens
    agree = np.mean(np.array(g16) == np.array(g32))
    print(f"greedy agreement f16 vs f32 cache: {agree:.3f} over {len(g32)} tokens")
    assert agree >= GREEDY_KV_F16_AGREE


def test_decode_equals_recompute_on_f16_cache(pair):
    m16, _ = pair
    ids = m16.tokenize(PROMPT)
    full = m16.forward(ids)
    m16.reset()
    step = np.stack([m16.eval([t]) for t in ids])
    assert np.array_equal(step, full)  # both read the same rounded cache rows


def test_state_and_beams_on_f16_cache(pair, gpt2_small):
    m16, m32 = pair
    s = m16.session()
    s.generate(PROMPT, max_tokens=4, temperature=0)
    data = s.save()
    s2 = m16.session().load(data)
    assert s2.generate(None, max_tokens=6, temperature=0) == s.generate(None, max_tokens=6, temperature=0)
    with pytest.raises(ValueError, match="f16 KV cache.*f32.*kv_type"):
        m32.session().load(data)
    # beams share the prompt's f16 cache rows in place (child contexts): with length_penalty 0 each returned score is
    # the sum of its tokens' log-probabilities, which a fresh recompute on the same cache type must give
    from pyinfer.beam_search import beam_search
    ids = m16.tokenize(PROMPT)
    hyps = beam_search(m16, ids, 3, 6, length_penalty=0.0, early_stopping=False, num_return_sequences=3, eos_ids=())
    assert len(hyps) == 3 and len({tuple(h[0]) for h in hyps}) == 3
    for toks, score, sum_lp in hyps:
        lp = float(np.sum(m16.score(ids + list(toks))[len(ids) - 1:]))
        assert_close(np.array([score, sum_lp]), np.array([lp, lp]), MODEL_F32_VS_HF, "beam score vs recompute")


def test_default_is_f16_and_cli_flag():
    env_free = ("import os; os.environ.pop('PYINFER_KV_TYPE', None); import pyinfer.model as m; "
                "print(m.check_kv_type(None))")
    rc, out, err = run_py(["-c", env_free])
    assert rc == 0, err
    assert out.strip() == "f16"
    with pytest.raises(ValueError, match="kv_type must be 'f16'.*'f32'"):
        pyinfer.model.check_kv_type("q8_0")
    rc, out, err = run_cli("run", "--cache-type", "bf16", "-p", "x")
    assert rc != 0 and "--cache-type" in err
