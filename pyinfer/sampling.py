"""Sampling: one step's logits [n_vocab] -> the next token id, as a chain of logit processors and one selector.
The chain works on a candidate set (ids, logits), both 1-D and kept in ascending-id order, in llama.cpp's default
order (common/sampling.cpp: logit bias first, then `common_params_sampling::samplers`):

    logit bias -> penalties (repeat, frequency, presence) -> top-k -> typical-p -> top-p -> min-p -> temperature
    -> draw (temperature > 0) | argmax (temperature <= 0)

`Sampler(order=...)` reorders the part after the logit bias. Because temperature comes after the filters, the filters
decide on softmax(logits) at temperature 1; the survivors are then drawn from softmax(logits / T).
temperature <= 0 is an exact argmax: of the raw logits when no bias or penalty is active, else of the logits after
them (llama.cpp: "greedy with penalties applies penalties first"); the lowest id wins ties. Off values change nothing:
top_k=0 (or >= n_vocab), top_p=1, min_p=0, typical_p=1, repeat_penalty=1, frequency/presence_penalty=0,
repeat_last_n=0, no logit bias. Probabilities are computed in float64.
The functions here are the spec. sample() runs two parts of the chain in C++ (_ext.sampling, held to them by the
tests): top-k with the logit bias over all n_vocab raw logits, and the tail top-p -> min-p -> temperature -> draw.
Not here: the decode loop and stop conditions (generate.py), beam search (beam_search.py), grammars, DRY, XTC,
mirostat.
"""
import math
import numbers
from collections import deque
from functools import partial

import numpy as np

from . import _ext

# Cumulative sums over up to ~1e5 float64 probabilities drift by well under this; it makes a top_p that lies exactly
# on a cumulative boundary (0.4 + 0.3 vs p=0.7) keep the boundary token, as exact arithmetic would. The same slack
# settles exact boundaries for typical-p (cum > p) and min-p (p_i >= min_p * p_max) the way exact arithmetic would.
TOP_P_SLACK = 1e-12

# The chain after the logit bias, as llama.cpp's default `--samplers` (its dry, top_n_sigma and xtc are not here).
DEFAULT_ORDER = ("penalties", "top_k", "typical_p", "top_p", "min_p", "temperature")

# The chain's end that sample() hands to C++ with the draw (_ext.sampling.tail), in this order.
TAIL = ("top_p", "min_p", "temperature")

# llama.cpp's defaults (common/common.h, common_params_sampling) for what generate() and `pyinfer run` expose.
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_LAST_N = 64


# ----------------------------------------------------------------------------------------------------------------
# processors: (logits [n_cand] float64, ids [n_cand] int64, param) -> (logits [n_keep], ids [n_keep]), ids ascending


def softmax(logits):
    """float64 softmax of a 1-D array: [n] -> [n], sums to 1."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - np.max(x))  # [n], max element -> 1
    return e / np.sum(e)


def log_softmax(logits):
    """float64 log-softmax over the last axis with the max subtracted first: [..., n] -> [..., n]."""
    x = np.asarray(logits, dtype=np.float64)
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _positions(ids, token_ids):
    """Positions in the ascending candidate ids of those token_ids that are candidates: (pos [m], which [m])."""
    token_ids = np.asarray(token_ids, dtype=np.int64)
    pos = np.searchsorted(ids, token_ids)  # [k]
    pos_c = np.minimum(pos, ids.shape[0] - 1)
    which = np.flatnonzero((pos < ids.shape[0]) & (ids[pos_c] == token_ids))
    return pos[which], which


def apply_logit_bias(logits, ids, bias_ids, bias_values):
    """Add bias_values[j] to the logit of token bias_ids[j] (where it is a candidate); -inf bans a token."""
    if len(bias_ids) == 0:
        return logits, ids
    pos, which = _positions(ids, bias_ids)
    out = logits.copy()
    np.add.at(out, pos, np.asarray(bias_values, dtype=np.float64)[which])  # a token listed twice gets both
    return out, ids


def apply_penalties(logits, ids, counts, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0):
    """llama.cpp's penalties over the recent-token counts {token id: occurrences in the last N tokens}.

    Once per distinct recent token: a logit > 0 is divided by repeat_penalty and a logit <= 0 multiplied by it
    (so a penalty > 1 always makes the token less likely), then count * frequency_penalty + presence_penalty is
    subtracted. Tokens not seen in the window are untouched.
    """
    if not counts or (repeat_penalty == 1.0 and frequency_penalty == 0.0 and presence_penalty == 0.0):
        return logits, ids
    toks = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))  # [k] distinct recent tokens
    cnt = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))  # [k] their counts (>= 1)
    pos, which = _positions(ids, toks)
    out = logits.copy()
    x = out[pos]  # [m] logits of the recent tokens that are candidates
    x = np.where(x <= 0, x * repeat_penalty, x / repeat_penalty)
    out[pos] = x - (cnt[which] * frequency_penalty + presence_penalty)
    return out, ids


def top_k_positions(logits, k):
    """Positions of the k largest logits (0 < k < n), ascending; ties at the boundary keep the lowest positions.
    (The spec of _ext.sampling.top_k, which the sampler runs on the raw logits.)"""
    n = logits.shape[0]
    buf = logits.copy()
    buf.partition(n - k)
    kth = buf[n - k]  # the k-th largest value
    above = np.flatnonzero(logits > kth)  # strictly larger: all kept, fewer than k of them
    tied = np.flatnonzero(logits == kth)[: k - above.size]  # fill up with the lowest positions equal to kth
    return np.sort(np.concatenate((above, tied)))  # [k] positions, ascending -> ids stay ascending


def apply_top_k(logits, ids, k):
    """Keep the k largest logits; ties at the boundary keep the lowest ids. k <= 0 or k >= n: unchanged."""
    if k <= 0 or k >= logits.shape[0]:
        return logits, ids
    keep = top_k_positions(logits, k)
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
    order = np.argsort(-logits, kind="stable")  # [n] largest logit first, equal logits by lower position (id)
    n_keep = top_p_count(probs[order], p)  # softmax keeps the order: probs[order] is sorted descending
    if n_keep >= logits.shape[0]:
        return logits, ids
    keep = np.sort(order[:n_keep])  # apply_top_k(logits, ids, n_keep)'s candidates, ascending
    return logits[keep], ids[keep]


def apply_min_p(logits, ids, p):
    """Keep the candidates whose probability is at least p times the largest one (llama.cpp: logit >= max_logit
    + log(p)); the most probable always stays. p <= 0: unchanged."""
    if p <= 0.0:
        return logits, ids
    keep = np.flatnonzero(logits >= np.max(logits) + math.log(p) - TOP_P_SLACK)  # ascending positions
    if keep.size == logits.shape[0]:
        return logits, ids
    return logits[keep], ids[keep]


def apply_typical(logits, ids, p):
    """Locally typical sampling (Meister et al. 2022) as llama.cpp does it: with H the entropy of softmax(logits),
    rank candidates by |-log p_i - H| (closest to H first; equal scores: more probable first, then lower id) and keep
    the shortest prefix of that ranking whose probabilities sum to more than p. p >= 1: unchanged."""
    if p >= 1.0:
        return logits, ids
    probs = softmax(logits)  # [n]
    with np.errstate(divide="ignore"):
        logp = np.log(probs)  # [n], -inf where a probability underflowed to 0
    nz = probs > 0
    entropy = -np.sum(probs[nz] * logp[nz])
    shifted = np.abs(-logp - entropy)  # [n], inf for zero-probability candidates
    by_prob = np.argsort(-probs, kind="stable")  # llama.cpp sorts by probability first
    order = by_prob[np.argsort(shifted[by_prob], kind="stable")]  # [n] most typical first
    cum = np.cumsum(probs[order])
    n_keep = int(np.searchsorted(cum, p + TOP_P_SLACK, side="right")) + 1  # first index with cum > p, inclusive
    if n_keep >= logits.shape[0]:
        return logits, ids
    keep = np.sort(order[:n_keep])
    return logits[keep], ids[keep]


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
    return _draw(logits, ids, rng.random())


def _draw(logits, ids, u):
    """select_dist with its uniform u in [0, 1) drawn."""
    probs = softmax(logits)  # [n_cand]
    cdf = np.cumsum(probs)  # [n_cand]
    u = u * cdf[-1]  # in [0, total)
    i = int(np.searchsorted(cdf, u, side="right"))  # first i with cdf[i] > u: zero-probability entries never win
    if i >= probs.shape[0]:  # u rounded up onto the total: take the last candidate that has any mass
        i = int(np.flatnonzero(probs)[-1])
    return int(ids[i])


# ----------------------------------------------------------------------------------------------------------------
# the sampler


def _check_shape(logits):
    x = np.asarray(logits)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty 1-D array [n_vocab], got shape {x.shape}")
    return x


def _check_logits(logits):
    x = _check_shape(logits)
    if not np.all(x < np.inf):  # catches NaN and +inf in one pass; -inf (a banned token) is fine
        raise ValueError("logits contain NaN or +inf; the model produced invalid values")
    return x


def _is_real(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real)


def _check_real(name, v, ok, what):
    if not _is_real(v) or not math.isfinite(v) or not ok(float(v)):
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return float(v)


def parse_logit_bias(logit_bias):
    """{token id: bias} or [(token id, bias), ...] -> (ids int64 [k], biases float64 [k]); -inf bans a token.
    A token given twice gets the sum of its biases."""
    if logit_bias is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    items = logit_bias.items() if hasattr(logit_bias, "items") else logit_bias
    ids, vals = [], []
    for item in items:
        try:
            tok, b = item
        except (TypeError, ValueError):
            raise ValueError(f"logit_bias entries must be (token id, bias) pairs, got {item!r}") from None
        if isinstance(tok, bool) or not isinstance(tok, numbers.Integral) or tok < 0:
            raise ValueError(f"logit_bias: token ids must be integers >= 0, got {tok!r}")
        if not _is_real(b) or math.isnan(b) or b == math.inf:
            raise ValueError(f"logit_bias: bias for token {tok} must be a finite number or -inf, got {b!r}")
        ids.append(int(tok))
        vals.append(float(b))
    return np.asarray(ids, np.int64), np.asarray(vals, np.float64)


class Sampler:
    """The chain logit bias -> penalties -> top-k -> typical-p -> top-p -> min-p -> temperature -> draw, seeded by a
    numpy Generator the sampler owns (llama.cpp's semantics for each step; see the module docstring).

    temperature <= 0: greedy (argmax after logit bias and penalties; the filters cannot change an argmax).
    Off values: top_k=0, top_p=1, min_p=0, typical_p=1, repeat_penalty=1, frequency_penalty=presence_penalty=0,
    repeat_last_n=0, logit_bias None. The defaults here switch min-p off so that Sampler(temperature, top_k, top_p)
    keeps its meaning; generate() and `pyinfer run` default to llama.cpp's min_p=0.05.
    seed: an int >= 0 gives a reproducible sequence of draws; None draws fresh OS entropy.
    Penalties look at the last repeat_last_n tokens passed to accept() (the generation loop passes the prompt, then
    each kept token, as llama.cpp's main does); reset_history() forgets them.
    order: the chain after the logit bias, any arrangement of a subset of DEFAULT_ORDER's names.
    """

    def __init__(self, temperature=0.8, top_k=40, top_p=0.95, seed=None, *, min_p=0.0, typical_p=1.0,
                 repeat_penalty=1.0, repeat_last_n=DEFAULT_REPEAT_LAST_N, frequency_penalty=0.0, presence_penalty=0.0,
                 logit_bias=None, order=DEFAULT_ORDER):
        if not _is_real(temperature) or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite number (<= 0 means greedy), got {temperature!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 means off), got {top_k!r}")
        if not _is_real(top_p) or not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 means off), got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"seed must be an integer >= 0, or None for a random seed, got {seed!r}")
        self.min_p = _check_real("min_p", min_p, lambda v: 0.0 <= v <= 1.0, "in [0, 1] (0 means off)")
        self.typical_p = _check_real("typical_p", typical_p, lambda v: 0.0 < v <= 1.0, "in (0, 1] (1 means off)")
        self.repeat_penalty = _check_real("repeat_penalty", repeat_penalty, lambda v: v > 0.0,
                                          "a finite number > 0 (1 means off)")
        self.frequency_penalty = _check_real("frequency_penalty", frequency_penalty, lambda v: True,
                                             "a finite number (0 means off)")
        self.presence_penalty = _check_real("presence_penalty", presence_penalty, lambda v: True,
                                            "a finite number (0 means off)")
        if isinstance(repeat_last_n, bool) or not isinstance(repeat_last_n, numbers.Integral) or repeat_last_n < 0:
            raise ValueError(f"repeat_last_n must be an integer >= 0 (0 means off), got {repeat_last_n!r}")
        order = tuple(order)
        bad = [s for s in order if s not in DEFAULT_ORDER]
        if bad or len(set(order)) != len(order):
            raise ValueError(f"order must list distinct names from {DEFAULT_ORDER}, got {order!r}")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.repeat_last_n = int(repeat_last_n)
        self.order = order
        self.logit_bias_ids, self.logit_bias_values = parse_logit_bias(logit_bias)
        self._n_biased = np.unique(self.logit_bias_ids).size  # distinct biased ids (_top_k_first)
        # numpy calls cost ~30 us each on a token's cold cache: what never changes is worked out here
        self._max_bias_id = int(self.logit_bias_ids.max()) if self.logit_bias_ids.size else -1
        self.seed = None if seed is None else int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.penalties_on = self.repeat_last_n > 0 and not (
            self.repeat_penalty == 1.0 and self.frequency_penalty == 0.0 and self.presence_penalty == 0.0)
        self._history = deque(maxlen=max(self.repeat_last_n, 1))  # the last repeat_last_n accepted ids
        self._counts = {}  # token id -> occurrences in _history
        steps = {
            "penalties": self._apply_penalties,
            "top_k": partial(apply_top_k, k=self.top_k),
            "typical_p": partial(apply_typical, p=self.typical_p),
            "top_p": partial(apply_top_p, p=self.top_p),
            "min_p": partial(apply_min_p, p=self.min_p),
            "temperature": partial(apply_temperature, t=self.temperature),
        }
        # (name, fn(logits, ids) -> (logits, ids)), run in this order
        self.chain = [("logit_bias", self._apply_logit_bias)] + [(name, steps[name]) for name in order]
        # the steps that can move an argmax (the filters keep the most probable candidate, temperature scales)
        self._greedy_chain = [(n, f) for n, f in self.chain if n in ("logit_bias", "penalties")]
        self._head, self._tail, self._tail_params = self._split_tail()

    def _is_off(self, name):
        """Whether the step changes nothing whatever the logits (top_k's off value >= n_vocab is not known here)."""
        return {"penalties": not self.penalties_on, "top_k": self.top_k <= 0, "typical_p": self.typical_p >= 1.0,
                "top_p": self.top_p >= 1.0, "min_p": self.min_p <= 0.0, "temperature": self.temperature == 1.0,
                "logit_bias": False}[name]

    def _split_tail(self):
        """(head, tail, (top_p, min_p, temperature)): the chain's last steps that _ext.sampling.tail runs with the
        draw in one C++ call (sample()), the steps before them, and the tail's parameters (off where absent). The
        tail is the longest end of the chain whose active steps come in TAIL's order; steps that are off may sit
        anywhere in it."""
        head, tail = list(self.chain), []
        while len(head) > 1:  # the logit bias stays in the head
            name = head[-1][0]
            later = [n for n, _ in tail if not self._is_off(n)]
            if not (self._is_off(name) or (name in TAIL and (not later or TAIL.index(name) < TAIL.index(later[0])))):
                break
            tail.insert(0, head.pop())
        names = {n for n, _ in tail}
        params = (self.top_p if "top_p" in names else 1.0, self.min_p if "min_p" in names else 0.0,
                  self.temperature if "temperature" in names else 1.0)
        return head, tail, params

    # --- history (penalties) --------------------------------------------------------------------------------
    def accept(self, token_id):
        """Told of every token the generation loop keeps (the prompt's, then each generated one)."""
        if not self.penalties_on:
            return
        t = int(token_id)
        if len(self._history) == self._history.maxlen:  # the oldest falls out of the window
            old = self._history[0]
            c = self._counts[old] - 1
            if c:
                self._counts[old] = c
            else:
                del self._counts[old]
        self._history.append(t)
        self._counts[t] = self._counts.get(t, 0) + 1

    def reset_history(self, token_ids=()):
        """Forget the accepted tokens, then accept token_ids (only the last repeat_last_n matter)."""
        self._history.clear()
        self._counts.clear()
        if self.penalties_on:
            for t in list(token_ids)[-self.repeat_last_n:]:
                self.accept(t)

    @property
    def history(self):
        """The accepted ids the penalties look at, oldest first."""
        return list(self._history) if self.penalties_on else []

    def _apply_penalties(self, logits, ids):
        if not self.penalties_on:
            return logits, ids
        return apply_penalties(logits, ids, self._counts, self.repeat_penalty, self.frequency_penalty,
                               self.presence_penalty)

    def _apply_logit_bias(self, logits, ids):
        return apply_logit_bias(logits, ids, self.logit_bias_ids, self.logit_bias_values)

    # --- the chain ------------------------------------------------------------------------------------------
    @property
    def greedy(self):
        return self.temperature <= 0.0

    def _check_bias_ids(self, n_vocab):
        if self._max_bias_id >= n_vocab:
            raise ValueError(f"logit_bias: token id {self._max_bias_id} is out of range for a vocabulary of {n_vocab}")

    def _ids(self, n):
        """np.arange(n) int64, made once per vocabulary size (read-only): a fresh 400 kB array per token costs
        page faults (allocations that large are mmap'ed and unmapped each time)."""
        ids = self.__dict__.get("_ids_cache")
        if ids is None or ids.shape[0] != n:
            ids = self.__dict__["_ids_cache"] = np.arange(n, dtype=np.int64)
            ids.flags.writeable = False
        return ids

    def _top_k_first(self, x, chain):
        """The default chain's head at C speed: when top-k is the first filter (after the logit bias; penalties off or
        after it), it runs on the raw logits in place of a float64 copy of all n_vocab of them. With b biased ids, the
        k + b largest raw logits hold every unbiased member of the biased top k (at most b of them can be outranked
        by biased ids only), so the bias and top-k then run on those and the biased ids alone: the same float64
        values, the same candidates, ties included. Returns (x, ids, rest of chain) or None."""
        i = self._top_k_index(chain)
        k = self.top_k
        if i is None or k <= 0 or k + self._n_biased >= x.shape[0]:
            return None
        # one C++ pass over the raw logits (tests: equal to apply_logit_bias then apply_top_k), which also rejects
        # NaN / +inf as _check_logits does
        r = _ext.sampling.top_k(np.ascontiguousarray(x), k, self.logit_bias_ids, self.logit_bias_values)
        if r is None:  # biases summed to +inf on an id: the general chain decides
            return None
        return r[1], r[0], chain[i + 1:]

    def _top_k_index(self, chain):
        """Where top-k sits in chain if only the logit bias and penalties that are off come before it, else None."""
        names = [n for n, _ in chain]
        if "top_k" not in names:
            return None
        i = names.index("top_k")
        if any(n not in ("logit_bias", "penalties") or (n == "penalties" and self.penalties_on) for n in names[:i]):
            return None
        return i

    def _run(self, logits, chain):
        x = _check_shape(logits)
        self._check_bias_ids(x.shape[0])
        fast = self._top_k_first(x, chain) if x.dtype in (np.float32, np.float64) else None
        if fast is not None:
            x, ids, chain = fast
        else:
            x = _check_logits(x)
            x, ids = x.astype(np.float64), self._ids(x.shape[0])  # [n_vocab] float64 copy, [n_vocab]
        for _, proc in chain:
            x, ids = proc(x, ids)
        return x, ids

    def candidates(self, logits):
        """Run the processor chain: logits [n_vocab] -> (logits [n_cand] float64, ids [n_cand] int64)."""
        return self._run(logits, self.chain)

    def _greedy_pick(self, logits):
        if not self.penalties_on and not self.logit_bias_ids.size:
            return select_greedy(_check_logits(logits))  # the exact argmax of the raw logits
        x, ids = self._run(logits, self._greedy_chain)
        return int(ids[select_greedy(x)])

    def distribution(self, logits):
        """The distribution the next draw follows: (ids [n_cand] ascending, probs [n_cand] float64 summing to 1).
        Greedy: the argmax alone with probability 1."""
        if self.greedy:
            return np.array([self._greedy_pick(logits)], dtype=np.int64), np.ones(1)
        x, ids = self.candidates(logits)
        return ids, softmax(x)

    def sample(self, logits):
        """logits [n_vocab] (any float dtype) -> the next token id (int)."""
        if self.greedy:
            return self._greedy_pick(logits)
        x, ids = self._run(logits, self._head)
        u = self.rng.random()
        i = _ext.sampling.tail(np.ascontiguousarray(x, dtype=np.float64), *self._tail_params, u)
        if i >= 0:
            return int(ids[i])
        for _, proc in self._tail:  # no finite logit to draw by: the spec decides, with the same uniform
            x, ids = proc(x, ids)
        return _draw(x, ids, u)

    # --- RNG state (to resume a seeded run exactly) ---------------------------------------------------------
    def get_rng_state(self):
        """The generator's state, a JSON-able dict."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def __repr__(self):
        extra = ""
        if self.min_p:
            extra += f", min_p={self.min_p}"
        if self.typical_p != 1.0:
            extra += f", typical_p={self.typical_p}"
        if self.penalties_on:
            extra += (f", repeat_penalty={self.repeat_penalty}, repeat_last_n={self.repeat_last_n}, "
                      f"frequency_penalty={self.frequency_penalty}, presence_penalty={self.presence_penalty}")
        if self.logit_bias_ids.size:
            extra += f", logit_bias={dict(zip(self.logit_bias_ids.tolist(), self.logit_bias_values.tolist()))}"
        return (f"Sampler(temperature={self.temperature}, top_k={self.top_k}, top_p={self.top_p}, "
                f"seed={self.seed}{extra})")
