"""Sampling: one step's logits [n_vocab] -> the next token id, as a chain of logit processors and one selector.
The chain works on a candidate set (ids, logits), both 1-D and kept in ascending-id order, in llama.cpp's order:

    [penalties, logit bias: planned] -> top-k -> top-p -> [min-p, typical-p: planned] -> temperature -> draw

Because temperature comes after the filters (as in llama.cpp's default chain), top-k and top-p decide on
softmax(logits) at temperature 1; the survivors are then drawn from softmax(logits / T). temperature <= 0 skips
the chain entirely: an exact argmax of the raw logits (lowest id on ties). Off values change nothing: top_k=0 or
top_k >= n_vocab, top_p=1. Probabilities are computed in float64. Not here: beam search, grammars, stop strings.
"""
import math
import numbers
from functools import partial

import numpy as np

# Cumulative sums over up to ~1e5 float64 probabilities drift by well under this; it makes a top_p that lies exactly
# on a cumulative boundary (0.4 + 0.3 vs p=0.7) keep the boundary token, as exact arithmetic would.
TOP_P_SLACK = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# processors: (logits [n_cand] float64, ids [n_cand] int64, param) -> (logits [n_keep], ids [n_keep]), ids ascending


def softmax(logits):
    """float64 softmax of a 1-D array: [n] -> [n], sums to 1."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - np.max(x))  # [n], max element -> 1
    return e / np.sum(e)


def apply_top_k(logits, ids, k):
    """Keep the k largest logits; ties at the boundary keep the lowest ids. k <= 0 or k >= n: unchanged."""
    n = logits.shape[0]
    if k <= 0 or k >= n:
        return logits, ids
    kth = np.partition(logits, n - k)[n - k]  # the k-th largest value
    above = np.flatnonzero(logits > kth)  # strictly larger: all kept, fewer than k of them
    tied = np.flatnonzero(logits == kth)[: k - above.size]  # fill up with the lowest positions equal to kth
    keep = np.sort(np.concatenate((above, tied)))  # [k] positions, ascending -> ids stay ascending
    return logits[keep], ids[keep]


def top_p_count(probs_desc, p):
    """How many of probs_desc (sorted descending) form the smallest prefix with cumulative prob >= p (>= 1)."""
    cum = np.cumsum(probs_desc)  # [n], non-decreasing
    n_keep = int(np.searchsorted(cum, p - TOP_P_SLACK, side="left")) + 1  # first index with cum >= p, inclusive
    return min(n_keep, probs_desc.shape[0])


def apply_top_p(logits, ids, p):
    """Nucleus filter on softmax(logits): keep the smallest set of most probable candidates whose probabilities
    sum to >= p (always at least one; equal probabilities rank the lower id first). p >= 1: unchanged."""
    if p >= 1.0:
        return logits, ids
    probs = softmax(logits)  # [n]
    n_keep = top_p_count(np.sort(probs)[::-1], p)  # sorting values only: cheaper than an argsort
    return apply_top_k(logits, ids, n_keep)  # the n_keep most probable = the n_keep largest logits, same tie rule


def apply_temperature(logits, ids, t):
    """Scale logits by 1/t (t > 0): t < 1 sharpens, t > 1 flattens. t == 1: unchanged."""
    if t == 1.0:
        return logits, ids
    return logits / t, ids


# ----------------------------------------------------------------------------------------------------------------
# selectors: the end of the chain, candidates -> one token id


def select_greedy(logits):
    """Index of the largest logit, the lowest one on ties (np.argmax's rule)."""
    return int(np.argmax(logits))


def select_dist(logits, ids, rng):
    """Draw one id from softmax(logits) over the candidates with the generator rng (one uniform per draw)."""
    probs = softmax(logits)  # [n_cand]
    cdf = np.cumsum(probs)  # [n_cand]
    u = rng.random() * cdf[-1]  # in [0, total)
    i = int(np.searchsorted(cdf, u, side="right"))  # first i with cdf[i] > u: zero-probability entries never win
    if i >= probs.shape[0]:  # u rounded up onto the total: take the last candidate that has any mass
        i = int(np.flatnonzero(probs)[-1])
    return int(ids[i])


# ----------------------------------------------------------------------------------------------------------------
# the sampler


def _check_logits(logits):
    x = np.asarray(logits)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty 1-D array [n_vocab], got shape {x.shape}")
    if not np.all(x < np.inf):  # catches NaN and +inf in one pass; -inf (a banned token) is fine
        raise ValueError("logits contain NaN or +inf; the model produced invalid values")
    return x


class Sampler:
    """top-k -> top-p -> temperature -> draw, seeded by a numpy Generator the sampler owns.

    temperature <= 0: greedy (argmax of the raw logits), top_k/top_p ignored. top_k=0: off. top_p=1: off.
    seed: an int >= 0 gives a reproducible sequence of draws; None draws fresh OS entropy.
    """

    def __init__(self, temperature=0.8, top_k=40, top_p=0.95, seed=None):
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number (<= 0 means greedy), got {temperature!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 means off), got {top_k!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 means off), got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be an integer >= 0, or None for a random seed, got {seed!r}")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.seed = None if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)
        # (name, fn(logits, ids) -> (logits, ids)); history-dependent processors (penalties) will go first.
        self.chain = [
            ("top_k", partial(apply_top_k, k=self.top_k)),
            ("top_p", partial(apply_top_p, p=self.top_p)),
            ("temperature", partial(apply_temperature, t=self.temperature)),
        ]

    @property
    def greedy(self):
        return self.temperature <= 0.0

    def candidates(self, logits):
        """Run the processor chain: logits [n_vocab] -> (logits [n_cand] float64, ids [n_cand] int64)."""
        x = _check_logits(logits).astype(np.float64)  # [n_vocab] float64 copy
        ids = np.arange(x.shape[0], dtype=np.int64)  # [n_vocab]
        for _, proc in self.chain:
            x, ids = proc(x, ids)
        return x, ids

    def distribution(self, logits):
        """The distribution the next draw follows: (ids [n_cand] ascending, probs [n_cand] float64 summing to 1).
        Greedy: the argmax alone with probability 1."""
        if self.greedy:
            return np.array([select_greedy(_check_logits(logits))], dtype=np.int64), np.ones(1)
        x, ids = self.candidates(logits)
        return ids, softmax(x)

    def sample(self, logits):
        """logits [n_vocab] (any float dtype) -> the next token id (int)."""
        if self.greedy:
            return select_greedy(_check_logits(logits))
        x, ids = self.candidates(logits)
        return select_dist(x, ids, self.rng)

    def accept(self, token_id):
        """Told of every token the generation loop keeps. No-op for now: penalties will record history here."""

    def __repr__(self):
        return (f"Sampler(temperature={self.temperature}, top_k={self.top_k}, top_p={self.top_p}, "
                f"seed={self.seed})")
