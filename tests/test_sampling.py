"""Sampler tests in pure numpy (no model, no extension calls): exact distributions on 4-token examples in the
manner of llama.cpp's tests/test-sampling.cpp, the chain order, off values, seeding, a chi-square check that draws
follow the processed distribution, and parameter validation.
"""
import math

import numpy as np
import pytest

from pyinfer.sampling import Sampler, apply_top_k, apply_top_p, softmax

P4 = [0.1, 0.2, 0.3, 0.4]  # token i has probability P4[i] at temperature 1
EXACT = 1e-12  # float64 softmax of log(p) reproduces p to ~1e-16


def dist(logits, **kw):
    """{token id: probability} of the distribution the next draw follows."""
    kw.setdefault("temperature", 1.0)
    kw.setdefault("top_k", 0)
    kw.setdefault("top_p", 1.0)
    ids, probs = Sampler(**kw).distribution(np.asarray(logits))
    assert np.all(np.diff(ids) > 0), "candidate ids must come back ascending"
    return dict(zip(ids.tolist(), probs.tolist()))


def assert_dist(got, want):
    assert sorted(got) == sorted(want), f"candidates {sorted(got)} != {sorted(want)}"
    for i, p in want.items():
        assert abs(got[i] - p) < EXACT, f"token {i}: {got[i]!r} != {p!r}"


def logits_of(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


# ----------------------------------------------------------------------------------------------------------------
# greedy


def test_greedy_is_argmax_lowest_index_on_ties():
    assert Sampler(temperature=0).sample(np.array([0.0, 2.0, 5.0, 5.0, 1.0], dtype=np.float32)) == 2
    assert Sampler(temperature=0).sample(np.array([7.0, 7.0, 7.0], dtype=np.float32)) == 0
    assert Sampler(temperature=-1.0).sample(np.array([1.0, 3.0, 3.0])) == 1  # any temperature <= 0 is greedy
    rng = np.random.default_rng(0)
    s = Sampler(temperature=0.0, top_k=1, top_p=0.1, seed=0)  # filters are irrelevant on the greedy path
    for _ in range(50):
        x = rng.standard_normal(1000).astype(np.float32)
        x[rng.integers(1000, size=3)] = x.max()  # force a three-way tie at the top
        assert s.sample(x) == int(np.argmax(x))


def test_greedy_distribution_is_a_point_mass():
    assert_dist(dist(logits_of(P4), temperature=0.0), {3: 1.0})
    assert_dist(dist([1.0, 4.0, 4.0, 0.0], temperature=0.0, top_k=40, top_p=0.95), {1: 1.0})


# ----------------------------------------------------------------------------------------------------------------
# top-k, top-p, temperature: exact distributions (llama.cpp test-sampling.cpp values)


@pytest.mark.parametrize("k, want", [
    (1, {3: 1.0}),
    (3, {3: 0.4 / 0.9, 2: 0.3 / 0.9, 1: 0.2 / 0.9}),
    (4, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}),
    (0, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}),  # off
    (9, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}),  # k > n_vocab: off
])
def test_top_k(k, want):
    assert_dist(dist(logits_of(P4), top_k=k), want)


@pytest.mark.parametrize("p, want", [
    (1e-9, {3: 1.0}),  # always at least one token
    (0.4, {3: 1.0}),  # exactly on the first boundary: the boundary token is enough
    (0.5, {3: 0.4 / 0.7, 2: 0.3 / 0.7}),
    (0.7, {3: 0.4 / 0.7, 2: 0.3 / 0.7}),  # exactly on a boundary (0.4 + 0.3)
    (0.8, {3: 0.4 / 0.9, 2: 0.3 / 0.9, 1: 0.2 / 0.9}),
    (0.95, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}),
    (1.0, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}),  # off: no collapse to greedy
])
def test_top_p(p, want):
    assert_dist(dist(logits_of(P4), top_p=p), want)


def test_top_p_equal_probabilities_keep_lowest_ids():
    assert_dist(dist(np.zeros(4), top_p=0.3), {0: 0.5, 1: 0.5})


def test_top_k_ties_at_the_boundary_keep_lowest_ids():
    logits = np.array([1.0, 3.0, 3.0, 3.0, 0.0])
    x, ids = apply_top_k(logits, np.arange(5), 2)
    assert ids.tolist() == [1, 2] and x.tolist() == [3.0, 3.0]
    x, ids = apply_top_k(logits, np.arange(5), 4)
    assert ids.tolist() == [0, 1, 2, 3]


def test_processors_alone():
    ids = np.arange(4)
    x, kept = apply_top_p(logits_of(P4), ids, 0.7)
    assert kept.tolist() == [2, 3]
    assert np.allclose(softmax(x), [0.3 / 0.7, 0.4 / 0.7], rtol=0, atol=EXACT)
    x, kept = apply_top_k(logits_of(P4), ids, 0)
    assert kept.tolist() == [0, 1, 2, 3]


def test_temperature():
    want = np.array(P4) ** (1 / 0.5)  # softmax(log(p) / T) = p^(1/T), renormalized
    assert_dist(dist(logits_of(P4), temperature=0.5), dict(enumerate(want / want.sum())))
    assert_dist(dist(logits_of(P4), temperature=1.0), dict(enumerate(P4)))


def test_top_k_runs_before_top_p():
    # top-k(2) first: {0.3, 0.4} -> {3/7, 4/7}; top-p(0.5) on that keeps token 3 alone.
    # (top-p first would keep {2, 3}, and top-k(2) would then leave both.)
    assert_dist(dist(logits_of(P4), top_k=2, top_p=0.5), {3: 1.0})


def test_filters_run_before_temperature():
    # top-p(0.7) decides on the temperature-1 probabilities, keeping {2, 3}; only then T = 2 flattens them.
    # (temperature first would give p^(1/2) -> top-p(0.7) keeping three tokens.)
    q = np.sqrt([0.3, 0.4])
    assert_dist(dist(logits_of(P4), top_p=0.7, temperature=2.0), {2: q[0] / q.sum(), 3: q[1] / q.sum()})


def test_off_values_give_softmax_over_temperature():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000).astype(np.float32) * 3
    want = softmax(x.astype(np.float64) / 0.7)
    for k in (0, 1000, 5000):
        ids, probs = Sampler(temperature=0.7, top_k=k, top_p=1.0).distribution(x)
        assert ids.tolist() == list(range(1000))
        assert np.max(np.abs(probs - want)) < EXACT


# ----------------------------------------------------------------------------------------------------------------
# seeding and the draw


def draws(sampler, logits, n):
    return [sampler.sample(logits) for _ in range(n)]


def test_same_seed_same_sequence_different_seed_different_sequence():
    x = np.zeros(50, dtype=np.float32)  # uniform over 50 tokens: 200 equal draws by chance is impossible
    kw = dict(temperature=1.0, top_k=0, top_p=1.0)
    a = draws(Sampler(seed=1234, **kw), x, 200)
    assert a == draws(Sampler(seed=1234, **kw), x, 200)
    assert a != draws(Sampler(seed=1235, **kw), x, 200)
    assert draws(Sampler(seed=None, **kw), x, 200) != draws(Sampler(seed=None, **kw), x, 200)
    assert len(set(a)) > 1


# chi-square critical value for 4 degrees of freedom at alpha = 1e-4: the x with exp(-x/2) * (1 + x/2) = 1e-4
CHI2_CRIT_DOF4_ALPHA1E4 = 23.5127


def chi_square(counts, probs, n):
    expected = n * np.asarray(probs)
    return float(np.sum((np.asarray(counts) - expected) ** 2 / expected))


def test_draws_follow_the_processed_distribution():
    p = np.array([0.02, 0.25, 0.05, 0.20, 0.03, 0.15, 0.18, 0.12])
    s = Sampler(temperature=0.7, top_k=6, top_p=0.9, seed=7)
    # top-k(6) drops ids 0 and 4; renormalized cumulative: .263 .474 .663 .821 .947 -> top-p(0.9) keeps 5 tokens
    kept = [1, 3, 5, 6, 7]
    q = p[kept] ** (1 / 0.7)
    q /= q.sum()
    assert abs(math.exp(-CHI2_CRIT_DOF4_ALPHA1E4 / 2) * (1 + CHI2_CRIT_DOF4_ALPHA1E4 / 2) - 1e-4) < 1e-8
    assert_dist(dist(np.log(p), temperature=0.7, top_k=6, top_p=0.9), dict(zip(kept, q)))

    n = 20000
    got = np.bincount(draws(s, np.log(p).astype(np.float32), n), minlength=8)
    assert got[[0, 2, 4]].sum() == 0, "a filtered-out token was drawn"
    assert chi_square(got[kept], q, n) < CHI2_CRIT_DOF4_ALPHA1E4
    # the test has power: the same draws are rejected against the distribution before temperature
    q1 = p[kept] / p[kept].sum()
    assert chi_square(got[kept], q1, n) > CHI2_CRIT_DOF4_ALPHA1E4


# ----------------------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("kw, name", [
    (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=-0.1), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature="hot"), "temperature"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
])
def test_bad_params_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        Sampler(**kw)


@pytest.mark.parametrize("logits", [np.zeros((2, 4)), np.zeros(0), np.array([0.0, np.nan, 1.0]),
                                    np.array([0.0, np.inf])])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_bad_logits_raise(logits, temperature):
    with pytest.raises(ValueError, match="logits"):
        Sampler(temperature=temperature, seed=0).sample(logits)


def test_minus_inf_logits_are_never_drawn():
    x = np.array([0.0, -np.inf, 0.0, -np.inf])
    s = Sampler(temperature=1.0, top_k=0, top_p=1.0, seed=3)
    assert set(draws(s, x, 200)) == {0, 2}
