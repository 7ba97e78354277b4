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


# ----------------------------------------------------------------------------------------------------------------
# the full chain: logit bias -> penalties -> top-k -> typical-p -> top-p -> min-p -> temperature (llama.cpp's order)
# Expected values are llama.cpp tests/test-sampling.cpp's, written as closed forms.


def with_history(history, **kw):
    s = Sampler(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, **kw})
    s.reset_history(history)
    return s


def dist_of(sampler, logits):
    ids, probs = sampler.distribution(np.asarray(logits, dtype=np.float64))
    return dict(zip(ids.tolist(), probs.tolist()))


P5 = [0.2] * 5


@pytest.mark.parametrize("history, penalized", [([0], [0]), ([0, 1, 2], [0, 1, 2]), ([0, 1, 2, 0, 0], [0, 1, 2])])
def test_repeat_penalty_once_per_distinct_token(history, penalized):
    # log(0.2) < 0 is multiplied by 50: p_i ~ 0.2^50, once however often the token occurs in the window
    got = dist_of(with_history(history, repeat_penalty=50.0, repeat_last_n=len(history)), logits_of(P5))
    w = np.array([0.2 ** 50 if i in penalized else 0.2 for i in range(5)])
    assert_dist(got, dict(enumerate(w / w.sum())))
    assert all(got[i] < 1e-30 for i in penalized)


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    s = with_history([0, 1], repeat_penalty=2.0)
    x, ids = s.candidates(np.array([2.0, -1.0, 0.5, 0.0]))
    assert ids.tolist() == [0, 1, 2, 3] and x.tolist() == [1.0, -2.0, 0.5, 0.0]
    x, _ = with_history([3], repeat_penalty=2.0).candidates(np.array([2.0, -1.0, 0.5, 0.0]))
    assert x.tolist() == [2.0, -1.0, 0.5, 0.0]  # a zero logit stays zero (<= 0: multiplied)


@pytest.mark.parametrize("history, sub", [
    ([0], {0: 10.0}),  # count 1: 5 * 1 + 5
    ([0, 1, 2], {0: 10.0, 1: 10.0, 2: 10.0}),
    ([0, 1, 2, 0, 0], {0: 20.0, 1: 10.0, 2: 10.0}),  # count 3: 5 * 3 + 5
])
def test_frequency_and_presence_penalties(history, sub):
    got = dist_of(with_history(history, frequency_penalty=5.0, presence_penalty=5.0, repeat_last_n=len(history)),
                  logits_of(P5))
    w = np.array([0.2 * math.exp(-sub.get(i, 0.0)) for i in range(5)])
    assert_dist(got, dict(enumerate(w / w.sum())))
    if history == [0]:
        assert round(got[0], 6) == 0.000011  # llama.cpp's expected value, printed to 6 decimals


def test_penalty_window_is_the_last_n_accepted_tokens():
    s = with_history([0, 1, 2], repeat_penalty=50.0, repeat_last_n=2)  # only 1 and 2 are in the window
    assert s.history == [1, 2]
    got = dist_of(s, logits_of(P5))
    assert got[0] == pytest.approx(got[3]) and got[1] < 1e-30
    s.accept(3)  # 1 falls out
    assert s.history == [2, 3]
    got = dist_of(s, logits_of(P5))
    assert got[1] == pytest.approx(got[0]) and got[3] < 1e-30


def test_logit_bias():
    assert_dist(dist(np.zeros(4), logit_bias={1: math.log(3.0)}), {0: 1 / 6, 1: 3 / 6, 2: 1 / 6, 3: 1 / 6})
    got = dist(np.zeros(4), logit_bias=[(3, float("-inf")), (1, 1.0), (1, -1.0)])  # a repeated id adds up
    assert_dist(got, {0: 1 / 3, 1: 1 / 3, 2: 1 / 3, 3: 0.0})


@pytest.mark.parametrize("p, want", [
    (0.0, [0, 1, 2, 3]), (0.24, [0, 1, 2, 3]), (0.25, [0, 1, 2, 3]),  # 0.1 / 0.4 = 0.25 exactly: kept
    (0.26, [1, 2, 3]), (0.49, [1, 2, 3]), (0.51, [2, 3]), (0.74, [2, 3]), (0.76, [3]), (1.0, [3]),
])
def test_min_p(p, want):
    q = np.array(P4)[want]
    assert_dist(dist(logits_of(P4), min_p=p), dict(zip(want, q / q.sum())))


@pytest.mark.parametrize("probs, p, want", [
    ([0.97, 0.01, 0.01, 0.01], 0.5, [0]),  # llama.cpp
    ([0.4, 0.2, 0.2, 0.2], 0.5, [1, 2, 3]),  # llama.cpp: the 0.2s are closer to the entropy than 0.4
    ([0.4, 0.2, 0.2, 0.2], 0.6, [0, 1, 2, 3]),  # 0.2 * 3 is not > 0.6: the 0.4 joins
    # H = 1.1422; |-log p - H| = .449 .062 .755 1.853: the second token is the most typical, the first the next
    ([0.5, 0.3, 0.15, 0.05], 0.2, [1]),
    ([0.5, 0.3, 0.15, 0.05], 0.5, [0, 1]),
    ([0.5, 0.3, 0.15, 0.05], 0.85, [0, 1, 2]),
    ([0.5, 0.3, 0.15, 0.05], 1.0, [0, 1, 2, 3]),  # off
])
def test_typical_p(probs, p, want):
    probs = np.array(probs)
    h = -np.sum(probs * np.log(probs))
    shifted = np.abs(-np.log(probs) - h)
    if probs[1] == 0.3:
        assert np.argsort(shifted).tolist() == [1, 0, 2, 3]  # the ranking the cases above rely on
    q = probs[want]
    assert_dist(dist(np.log(probs), typical_p=p), dict(zip(want, q / q.sum())))


def test_order_bias_before_penalties():
    # logit 1, bias +1, repeat penalty 2: bias first gives 2 / 2 = 1; penalty first would give 0.5 + 1 = 1.5
    s = with_history([0], repeat_penalty=2.0, logit_bias={0: 1.0})
    x, _ = s.candidates(np.array([1.0, 0.0]))
    assert x.tolist() == [1.0, 0.0]


def test_order_typical_before_top_p_before_min_p():
    p = np.log([0.5, 0.3, 0.15, 0.05])
    # typical(0.2) first keeps token 1 alone; top-p(0.2) first would keep token 0
    assert_dist(dist(p, typical_p=0.2, top_p=0.2), {1: 1.0})
    # top-p(0.83) then min-p(0.25): top-p keeps 3 tokens (0.5 + 0.3 < 0.83), min-p keeps them (0.15 / 0.5 >= 0.25).
    # min-p first would renormalise to .526 .316 .158 and top-p(0.83) would then keep only 2.
    q = np.array([0.5, 0.3, 0.15])
    assert_dist(dist(p, top_p=0.83, min_p=0.25), dict(enumerate(q / q.sum())))
    # a custom order: min-p before top-p
    s = Sampler(temperature=1.0, top_k=0, top_p=0.83, min_p=0.25, order=("min_p", "top_p", "temperature"))
    q = np.array([0.5, 0.3])
    assert_dist(dist_of(s, p), dict(enumerate(q / q.sum())))


def test_greedy_applies_bias_and_penalties_first():
    x = np.array([3.0, 2.5, 0.0, 1.0])
    assert Sampler(temperature=0).sample(x) == 0
    s = with_history([0], temperature=0.0, repeat_penalty=2.0)
    assert s.sample(x) == 1  # 3 / 2 = 1.5 < 2.5
    assert Sampler(temperature=0, logit_bias={3: 5.0}).sample(x) == 3
    assert Sampler(temperature=0, logit_bias={0: float("-inf")}).sample(x) == 1
    assert_dist(dist_of(s, x), {1: 1.0})


def test_off_values_change_nothing():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(300) * 2
    history = rng.integers(0, 300, size=100).tolist()
    base = Sampler(temperature=0.9, top_k=0, top_p=1.0)
    want_ids, want = base.distribution(x)
    for kw in [dict(min_p=0.0), dict(typical_p=1.0), dict(repeat_penalty=1.0), dict(frequency_penalty=0.0),
               dict(presence_penalty=0.0), dict(repeat_penalty=3.0, repeat_last_n=0), dict(logit_bias={}),
               dict(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, repeat_last_n=64),
               dict(top_k=300), dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0)]:
        s = Sampler(temperature=0.9, **{"top_k": 0, "top_p": 1.0, **kw})
        s.reset_history(history)
        ids, probs = s.distribution(x)
        assert ids.tolist() == want_ids.tolist(), kw
        assert np.array_equal(probs, want), kw
    # and each of them is live: the same history with a real value changes the distribution
    for kw in [dict(min_p=0.1), dict(typical_p=0.9), dict(repeat_penalty=1.3), dict(frequency_penalty=0.5),
               dict(presence_penalty=0.5), dict(logit_bias={7: 2.0})]:
        s = Sampler(temperature=0.9, top_k=0, top_p=1.0, **kw)
        s.reset_history(history)
        ids, probs = s.distribution(x)
        assert ids.tolist() != want_ids.tolist() or not np.allclose(probs, want), kw


def full_chain_reference(logits, history, *, bias, rp, fp, pp, last_n, top_k, typical, top_p, min_p, temp):
    """The chain written out independently of pyinfer.sampling (loops, dicts), for one distribution."""
    x = dict(enumerate(float(v) for v in logits))
    for t, b in bias.items():
        x[t] += b
    window = history[-last_n:]
    for t in set(window):
        c = window.count(t)
        x[t] = x[t] * rp if x[t] <= 0 else x[t] / rp
        x[t] -= c * fp + pp

    def probs(d):
        m = max(d.values())
        e = {t: math.exp(v - m) for t, v in d.items()}
        z = sum(e.values())
        return {t: v / z for t, v in e.items()}

    x = dict(sorted(x.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
    p = probs(x)
    h = -sum(v * math.log(v) for v in p.values())
    ranked = sorted(p, key=lambda t: (abs(-math.log(p[t]) - h), -p[t], t))
    keep, cum = [], 0.0
    for t in ranked:
        keep.append(t)
        cum += p[t]
        if cum > typical:
            break
    x = {t: x[t] for t in keep}
    p = probs(x)
    keep, cum = [], 0.0
    for t in sorted(p, key=lambda t: (-p[t], t)):
        keep.append(t)
        cum += p[t]
        if cum >= top_p:
            break
    x = {t: x[t] for t in keep}
    p = probs(x)
    pmax = max(p.values())
    x = {t: v / temp for t, v in x.items() if p[t] >= min_p * pmax}
    return probs(x)


# chosen so that the result changes when top-k, typical-p or top-p is switched off (min-p alone removes nothing here)
CHAIN = dict(bias={2: 0.7, 9: -1.5}, rp=1.3, fp=0.2, pp=0.3, last_n=6, top_k=6, typical=0.6, top_p=0.85,
             min_p=0.15, temp=0.8)


def chain_sampler(seed):
    c = CHAIN
    return Sampler(temperature=c["temp"], top_k=c["top_k"], top_p=c["top_p"], seed=seed, min_p=c["min_p"],
                   typical_p=c["typical"], repeat_penalty=c["rp"], repeat_last_n=c["last_n"],
                   frequency_penalty=c["fp"], presence_penalty=c["pp"], logit_bias=c["bias"])


def test_full_chain_distribution_and_draws():
    x = np.log(np.array([0.12, 0.02, 0.09, 0.15, 0.04, 0.11, 0.07, 0.13, 0.05, 0.10, 0.08, 0.04]))
    history = [1, 3, 3, 5, 0, 7, 3, 10]  # the window (last 6) is 3 5 0 7 3 10
    want = full_chain_reference(x, history, **CHAIN)
    s = chain_sampler(seed=99)
    s.reset_history(history)
    got = dist_of(s, x)
    assert sorted(t for t, v in got.items() if v > 0) == sorted(want)
    for t, v in want.items():
        assert abs(got[t] - v) < EXACT
    assert sorted(want) == [2, 6, 7, 8]  # 8 of 12 removed: by top-k, typical-p and top-p together

    n = 20000
    counts = np.bincount([s.sample(x) for _ in range(n)], minlength=12)
    kept = sorted(want)
    assert counts[[t for t in range(12) if t not in want]].sum() == 0
    dof = len(kept) - 1
    crit = {2: 18.42, 3: 21.11, 4: 23.51, 5: 25.74, 6: 27.86}[dof]  # chi-square at alpha = 1e-4
    assert chi_square(counts[kept], [want[t] for t in kept], n) < crit
    flat = np.ones(len(kept)) / len(kept)  # power: the draws are not uniform over the survivors
    assert chi_square(counts[kept], flat, n) > crit


def test_full_chain_seeding_and_rng_state():
    x = np.zeros(64)
    s1, s2 = chain_sampler(5), chain_sampler(5)
    a = [s1.sample(x) for _ in range(100)]
    assert a == [s2.sample(x) for _ in range(100)]
    assert a != [chain_sampler(6).sample(x) for _ in range(100)]
    n1, n2 = chain_sampler(None), chain_sampler(None)
    assert [n1.sample(x) for _ in range(40)] != [n2.sample(x) for _ in range(40)]
    # the RNG state resumes a sequence exactly, in a fresh sampler
    s = chain_sampler(7)
    head = [s.sample(x) for _ in range(30)]
    state = s.get_rng_state()
    tail = [s.sample(x) for _ in range(30)]
    r = chain_sampler(None)
    r.set_rng_state(state)
    assert [r.sample(x) for _ in range(30)] == tail
    s7 = chain_sampler(7)
    assert head + tail == [s7.sample(x) for _ in range(60)]


@pytest.mark.parametrize("kw, name", [
    (dict(min_p=-0.1), "min_p"), (dict(min_p=1.5), "min_p"), (dict(typical_p=0.0), "typical_p"),
    (dict(typical_p=1.2), "typical_p"), (dict(repeat_penalty=0.0), "repeat_penalty"),
    (dict(repeat_penalty=float("inf")), "repeat_penalty"), (dict(frequency_penalty=float("nan")), "frequency_penalty"),
    (dict(presence_penalty="x"), "presence_penalty"), (dict(repeat_last_n=-1), "repeat_last_n"),
    (dict(logit_bias={-1: 1.0}), "logit_bias"), (dict(logit_bias={1: float("nan")}), "logit_bias"),
    (dict(logit_bias={1: float("inf")}), "logit_bias"), (dict(logit_bias=[(1,)]), "logit_bias"),
    (dict(order=("top_k", "bogus")), "order"), (dict(order=("top_k", "top_k")), "order"),
])
def test_bad_chain_params_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        Sampler(**kw)


def test_logit_bias_out_of_vocab_raises():
    with pytest.raises(ValueError, match="logit_bias"):
        Sampler(temperature=1.0, logit_bias={10: 1.0}).sample(np.zeros(4))


def test_top_k_fast_path_equals_the_general_chain():
    """The default chain's head (top-k on the raw float32 logits, in C++) keeps the same
    candidates as the general float64 chain, ties at the k-th value included, and the draws are the same, with a
    logit bias too (duplicate ids, bans, more biased ids than k); it steps aside for active penalties."""
    rng = np.random.default_rng(11)
    for kwargs in (dict(), dict(top_k=5, top_p=1.0, min_p=0.0), dict(top_k=3, typical_p=0.9),
                   dict(order=("top_p", "top_k", "min_p", "temperature")), dict(repeat_penalty=1.3, top_k=7),
                   dict(logit_bias={3: 2.0}, top_k=4), dict(logit_bias=[(3, 2.0), (3, 0.5), (7, -np.inf), (299, 5.0)]),
                   dict(logit_bias={i: -np.inf for i in range(0, 300, 2)}, top_k=40),
                   dict(logit_bias={i: 1.0 for i in range(250)}, top_k=40),
                   dict(logit_bias=[(3, 1e308), (3, 1e308)], top_k=4)):  # +inf after the bias: the C++ steps aside
        fast, slow = Sampler(seed=5, **kwargs), Sampler(seed=5, **kwargs)
        slow._top_k_first = lambda x, chain: None
        for step in range(200):
            x = (rng.standard_normal(300) * 2).astype(np.float32)
            x[rng.integers(0, 300, 6)] = np.sort(x)[-40]  # ties around the k-th largest value
            if step % 3 == 0:
                x[rng.integers(0, 300, 4)] = -np.inf  # banned tokens
            with np.errstate(invalid="ignore", over="ignore"):  # the +inf case: overflow, NaN softmax on both paths
                a, b = fast.distribution(x), slow.distribution(x)
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True), (kwargs, step)
                t = fast.sample(x)
                assert t == slow.sample(x), (kwargs, step)
            fast.accept(t)
            slow.accept(t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_top_k_equals_its_spec(dtype):
    """_ext.sampling.top_k (one pass over all the logits, blocks skipped by their maximum) keeps exactly
    top_k_positions' candidates: ties at the k-th value (the lowest positions win), -inf values, every k; NaN and
    +inf anywhere are the same ValueError as _check_logits gives."""
    from pyinfer import _ext
    from pyinfer.sampling import top_k_positions
    rng = np.random.default_rng(12)
    for n in (2, 3, 63, 64, 65, 130, 1000, 49152):
        for trial in range(6):
            x = rng.standard_normal(n).astype(dtype)
            if trial % 2:
                x = np.round(x * 2).astype(dtype)  # few distinct values: many ties
            if trial % 3 == 2:
                x[rng.integers(0, n, max(1, n // 3))] = -np.inf
            if trial == 5:
                x[:] = -np.inf
            for k in sorted({1, 2, n // 2, n - 1} & set(range(1, n))):
                assert np.array_equal(_ext.sampling.top_k(x, k)[0], top_k_positions(x, k)), (n, trial, k)
    for bad in (np.nan, np.inf):
        for at in (0, 5, 999):
            x = rng.standard_normal(1000).astype(dtype)
            x[at] = bad
            with pytest.raises(ValueError, match="NaN or \\+inf"):
                _ext.sampling.top_k(x, 40)
    with pytest.raises(ValueError, match="k plus"):
        _ext.sampling.top_k(np.zeros(5, dtype), 5)
    with pytest.raises(ValueError, match="k plus"):
        _ext.sampling.top_k(np.zeros(5, dtype), 3, np.array([1, 2, 2]), np.ones(3))
    with pytest.raises(ValueError, match="bias_ids must be in"):
        _ext.sampling.top_k(np.zeros(5, dtype), 1, np.array([5]), np.ones(1))
    with pytest.raises(ValueError, match="same length"):
        _ext.sampling.top_k(np.zeros(5, dtype), 1, np.array([1]), np.ones(2))
    with pytest.raises(ValueError, match="float32 or float64"):
        _ext.sampling.top_k(np.zeros(5, np.float16), 2)


def test_cpp_tail_draws_as_the_python_chain():
    """sample() hands the chain's end (top-p -> min-p -> temperature) and the draw to _ext.sampling.tail. Its draws
    equal select_dist's on the Python chain, uniform for uniform: random logits with ties and -inf, every order of the
    tail steps (a step out of TAIL's order stays in Python), off steps between them, and no finite logit (the C++
    side declines; the spec decides with the same uniform)."""
    from pyinfer.sampling import TAIL, select_dist
    rng = np.random.default_rng(21)
    orders = [None, ("top_k", "top_p", "min_p", "temperature"), ("top_k", "min_p", "top_p", "temperature"),
              ("temperature", "top_k", "top_p", "min_p"), ("top_p", "top_k", "temperature", "min_p"),
              ("top_k", "typical_p", "top_p", "penalties", "min_p"), ("min_p",)]
    params = [dict(), dict(top_k=0, top_p=0.5), dict(top_p=0.3, min_p=0.2, temperature=0.4),
              dict(top_k=7, top_p=1.0, min_p=0.0, temperature=1.7), dict(top_k=0, top_p=0.9, typical_p=0.8),
              dict(repeat_penalty=1.2, top_p=0.7), dict(logit_bias={3: 1.5, 8: -np.inf}, min_p=0.3)]
    for order in orders:
        for kw in params:
            kw = dict(kw, min_p=kw.get("min_p", 0.05), **({"order": order} if order else {}))
            fast, slow = Sampler(seed=3, **kw), Sampler(seed=3, **kw)
            active = [n for n, _ in fast._tail if not fast._is_off(n)]
            assert active == [n for n in TAIL if n in active], (order, kw)  # the C++ order
            for step in range(60):
                x = (rng.standard_normal(200) * 3).astype(np.float32)
                x[rng.integers(0, 200, 5)] = np.sort(x)[-10]  # ties inside the candidates
                if step % 4 == 0:
                    x[rng.integers(0, 200, 30)] = -np.inf
                if step == 7:
                    x[:] = -np.inf  # nothing finite: softmax is NaN in both; the Python spec draws
                with np.errstate(invalid="ignore"):  # step 7's NaN softmax
                    want = select_dist(*slow.candidates(x), slow.rng)
                    assert fast.sample(x) == want, (order, kw, step)
                fast.accept(want)
                slow.accept(want)
    # where the tail splits: the logit bias and any active step out of TAIL's order stay in the head
    s = Sampler(top_k=5, top_p=0.9, min_p=0.1, temperature=0.7)
    assert [n for n, _ in s._head] == ["logit_bias", "penalties", "top_k"]  # typical_p is off: in the tail
    assert s._tail_params == (0.9, 0.1, 0.7)
    s = Sampler(top_p=0.9, min_p=0.1, temperature=0.7, order=("top_p", "temperature", "min_p"))
    assert [n for n, _ in s._head] == ["logit_bias", "top_p", "temperature"] and s._tail_params == (1.0, 0.1, 1.0)


def test_cpp_tail_at_cumulative_boundaries():
    """With u * total landing exactly on a cumulative probability, select_dist takes the next candidate: the C++ tail
    must sum the probabilities in numpy's order (np.sum pairwise, np.cumsum sequential) to agree. Checked where this
    numpy's float64 exp is the C library's (numpy has its own exp on some AVX-512 CPUs; the draws above hold
    everywhere)."""
    from pyinfer import _ext
    from pyinfer.sampling import _draw
    rng = np.random.default_rng(22)
    checked = 0
    for n in (1, 3, 7, 8, 9, 16, 40, 127, 128, 129, 300, 1000):
        x = rng.standard_normal(n) * 2
        e = x - x.max()
        if not all(np.exp(v) == math.exp(v) for v in e):
            continue
        p = softmax(x)
        cdf = np.cumsum(p)
        for j in range(0, n, max(1, n // 12)):
            u = cdf[j] / cdf[-1]
            if u >= 1.0 or u * cdf[-1] != cdf[j]:
                continue  # this boundary is not reachable with one multiplication
            ids = np.arange(n)
            assert _ext.sampling.tail(x, 1.0, 0.0, 1.0, u) == _draw(x, ids, u) == min(j + 1, n - 1), (n, j)
            checked += 1
        cum = np.cumsum(p[np.argsort(-x, kind="stable")])  # top-p's cumulative sums, most probable first
        for top_p in (0.3, 0.9, cum[n // 2] + 1e-12):  # the last: on a cumulative sum plus the slack
            if top_p <= 1.0:
                for u in (0.0, 0.5, 0.999999):
                    assert _ext.sampling.tail(x, top_p, 0.0, 1.0, u) == _draw(*apply_top_p(x, np.arange(n), top_p), u)
    assert checked > 20
    for bad, msg in [(dict(top_p=0.0), "top_p"), (dict(min_p=1.5), "min_p"), (dict(temperature=0.0), "temperature"),
                     (dict(u=1.0), "u must"), (dict(x=np.zeros(0)), "empty"), (dict(x=np.zeros(3, np.float32)), "dtype")]:
        args = dict(dict(x=np.zeros(3), top_p=1.0, min_p=0.0, temperature=1.0, u=0.5), **bad)
        with pytest.raises(ValueError, match=msg):
            _ext.sampling.tail(args["x"], args["top_p"], args["min_p"], args["temperature"], args["u"])
