"""Scoring a model on a text: perplexity and KL divergence by llama.cpp's rule (tools/perplexity/perplexity.cpp,
`perplexity()` and `kl_divergence()`), plus `token_logprobs`, the per-token log-likelihood other scorers build on.
Pure Python over the public Model API (tokenize, forward, n_ctx); log-softmax in float64 with max subtraction.
Does not do llama.cpp's strided variant (--ppl-stride), saved-logits files, or HellaSwag/Winogrande scoring.

The rule: tokenize the whole text once (BOS first when the model adds one); cut it into n_chunk = len // n_ctx
non-overlapping windows of n_ctx tokens (the tail that does not fill a window is dropped); when the model adds BOS,
the first token of every window is replaced by BOS; each window is evaluated from an empty cache, and only its
second half is scored: the logits at positions first = n_ctx // 2 .. n_ctx - 2 against the tokens at first + 1 ..
n_ctx - 1 (n_ctx - 1 - first predictions per window; the last position has no target inside the window). The text
must hold at least 2 * n_ctx tokens.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .model import target_logprobs

DEFAULT_N_CTX = 512  # llama-perplexity's default context (params.n_ctx = 512), capped at the model's
_ROW_BLOCK = 64  # rows of [*, n_vocab] logits converted to float64 at a time (64 x 50257 x 8 B ~ 26 MB)


# ----------------------------------------------------------------------------------------------------------------
# log-softmax


def log_softmax(logits) -> np.ndarray:
    """float64 log-softmax over the last axis, with the row max subtracted first: [..., n_vocab] -> [..., n_vocab]."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def token_logprobs(model, ids) -> np.ndarray:
    """log p(ids[i + 1] | ids[: i + 1]) for i = 0 .. len(ids) - 2: float64 [len(ids) - 1], from one fresh forward.

    `ids` must fit the model's context (model.n_ctx); fewer than 2 ids give an empty array.
    """
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {ids.shape}")
    if ids.size < 2:
        return np.zeros(0, np.float64)
    logits = model.forward(ids)  # [len, n_vocab] float32
    return target_logprobs(logits[:-1], ids[1:].astype(np.int64))


# ----------------------------------------------------------------------------------------------------------------
# windows


def _resolve_n_ctx(models, n_ctx) -> int:
    """The window length: n_ctx, or min(512, each model's context); checked against each model's context."""
    if n_ctx is None:
        n_ctx = min([DEFAULT_N_CTX] + [int(m.n_ctx) for m in models])
    n_ctx = int(n_ctx)
    if n_ctx < 3:  # first = n_ctx // 2 and n_ctx - 1 - first predictions per window: 3 is the least that scores one
        raise ValueError(f"n_ctx must be at least 3 to score any token per window, got {n_ctx}")
    for m in models:
        if n_ctx > m.n_ctx:
            raise ValueError(f"n_ctx {n_ctx} exceeds the model's context of {m.n_ctx} tokens; load it with "
                             f"n_ctx={n_ctx} (if its positions allow) or pass a smaller n_ctx")
    return n_ctx


def _check_length(n_tokens: int, n_ctx: int) -> None:
    # llama.cpp: `if (int(tokens.size()) < 2*n_ctx)` -> "you need at least %d tokens to evaluate perplexity ..."
    if n_tokens < 2 * n_ctx:
        raise ValueError(f"the text tokenizes to only {n_tokens} tokens; at least {2 * n_ctx} (2 windows of "
                         f"n_ctx = {n_ctx}) are needed: give a longer text or a smaller n_ctx")


def _windows(model, tokens: np.ndarray, n_ctx: int):
    """Yield each window (int32 [n_ctx]) with BOS in its first slot when the model adds BOS, as llama.cpp does."""
    tok = model.tokenizer
    bos = tok.bos_id if (tok.add_bos and tok.bos_id is not None) else None
    for i in range(len(tokens) // n_ctx):
        w = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        if bos is not None:
            w[0] = bos
        yield w


def _progress_fn(progress, fmt=".4f"):
    """progress=True: llama.cpp's `[1]12.3456,[2]...` on stderr; a callable: called (i, n_chunk, value); else none."""
    if callable(progress):
        return progress, lambda: None
    if progress:
        def show(i, n_chunk, value):
            sys.stderr.write(f"[{i}]{value:{fmt}},")
            sys.stderr.flush()

        def done():
            sys.stderr.write("\n")
            sys.stderr.flush()
        return show, done
    return (lambda i, n_chunk, value: None), (lambda: None)


def _mean_and_uncertainty(s: float, s2: float, count: int, min_count: int = 1, undefined: float = math.nan):
    """llama.cpp's estimate of a mean and its standard error from sum and sum of squares: sqrt(var / (count - 1)),
    var = s2/count - mean^2; `undefined` when var <= 0 or count <= min_count (perplexity(): nan, as llama.cpp then
    prints no estimate; kl_divergence(): 0, as its mean_and_uncertainty lambda returns)."""
    if count < 1:
        return math.nan, math.nan
    mean = s / count
    var = s2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) if (var > 0 and count > min_count) else undefined
    return mean, err


# ----------------------------------------------------------------------------------------------------------------
# perplexity


@dataclass(eq=False)
class PerplexityResult:
    """exp(mean NLL) over the scored tokens, with llama.cpp's standard error (ppl * stdev(NLL) / sqrt(count - 1))."""
    ppl: float
    ppl_stderr: float  # nan when the NLL variance is not positive (llama.cpp: "Unexpected negative standard deviation")
    nll: float  # mean negative log-likelihood, nats per token
    n_tokens: int  # tokens scored: n_chunks * (n_ctx - 1 - n_ctx // 2)
    n_chunks: int
    n_ctx: int
    n_text_tokens: int  # tokens in the whole text (BOS included when the model adds it)
    running: list = field(default_factory=list)  # ppl over chunks 1..k, k = 1 .. n_chunks (llama.cpp's [k] values)
    nlls: np.ndarray = None  # float64 [n_tokens]: -log p of each scored token, window by window
    t_eval_s: float = 0.0  # wall time of the forward passes and scoring


def perplexity(model, text: str, n_ctx: int | None = None, progress=True) -> PerplexityResult:
    """Perplexity of `model` on `text` by llama.cpp's windowed rule (see the module docstring).

    n_ctx: window length, default min(512, model.n_ctx). progress: True prints llama.cpp's running `[k]ppl,` line to
    stderr, a callable gets (k, n_chunks, running ppl), False is silent. A text under 2 * n_ctx tokens: ValueError.
    """
    n_ctx = _resolve_n_ctx([model], n_ctx)
    tokens = np.asarray(model.tokenize(text), dtype=np.int32)
    _check_length(len(tokens), n_ctx)
    first = n_ctx // 2
    show, done = _progress_fn(progress)
    n_chunk = len(tokens) // n_ctx
    nlls, running = [], []
    s = s2 = 0.0
    count = 0
    t0 = time.perf_counter()
    for i, w in enumerate(_windows(model, tokens, n_ctx)):
        logits = model.forward(w)  # [n_ctx, n_vocab] float32
        nll = -target_logprobs(logits[first:n_ctx - 1], w[first + 1:].astype(np.int64))  # [n_ctx - 1 - first]
        nlls.append(nll)
        s += float(np.sum(nll))
        s2 += float(np.sum(nll * nll))
        count += len(nll)
        running.append(math.exp(s / count))
        show(i + 1, n_chunk, running[-1])
    done()
    t_eval_s = time.perf_counter() - t0
    mean, err = _mean_and_uncertainty(s, s2, count)
    ppl = math.exp(mean)
    return PerplexityResult(ppl=ppl, ppl_stderr=err * ppl, nll=mean, n_tokens=count, n_chunks=n_chunk, n_ctx=n_ctx,
                            n_text_tokens=len(tokens), running=running, nlls=np.concatenate(nlls), t_eval_s=t_eval_s)


# ----------------------------------------------------------------------------------------------------------------
# KL divergence


@dataclass(eq=False)
class KLDResult:
    """KL(P_a || P_b) per scored position (a = the reference), summarised as llama.cpp's kl_divergence() does."""
    kld_mean: float
    kld_stderr: float
    kld_median: float
    kld_p99: float  # 99th percentile (linear interpolation between sorted values, as llama.cpp)
    kld_max: float
    top1: float  # fraction of scored positions where argmax P_a == argmax P_b ("Same top p")
    ppl_a: float
    ppl_a_stderr: float
    ppl_b: float
    ppl_b_stderr: float
    delta_ppl: float  # ppl_b - ppl_a
    rms_dp: float  # RMS over positions of p_b(token) - p_a(token), the probability of the actual next token
    n_tokens: int
    n_chunks: int
    n_ctx: int
    kld: np.ndarray = None  # float64 [n_tokens]: the per-position divergences, window by window
    t_eval_s: float = 0.0


class KLDAccumulator:
    """Running KL(P_a || P_b) statistics over scored positions, fed one block of logits at a time so that no more
    than a window's logits is ever held (a 262k vocabulary: [256, 262144] float32 is 268 MB).

    acc.add(logits_a, logits_b, targets): logits [n, n_vocab] (any float dtype), targets int [n] (the next tokens);
    acc.result(n_chunks, n_ctx, t_eval_s) -> KLDResult, as llama.cpp's kl_divergence() summarises.
    """

    def __init__(self):
        self.klds, self.nll_a, self.nll_b, self.same_top = [], [], [], []

    def add(self, logits_a, logits_b, targets) -> np.ndarray:
        """Adds n positions; returns their KLDs (float64 [n])."""
        if np.shape(logits_a) != np.shape(logits_b) or np.ndim(logits_a) != 2 or len(targets) != len(logits_a):
            raise ValueError(f"logits_a {np.shape(logits_a)}, logits_b {np.shape(logits_b)} and targets "
                             f"{np.shape(targets)} must be [n, n_vocab], [n, n_vocab] and [n]")
        targets = np.asarray(targets, dtype=np.int64)
        out = []
        for b in range(0, len(targets), _ROW_BLOCK):
            lpa = log_softmax(logits_a[b:b + _ROW_BLOCK])  # [blk, n_vocab] float64
            lpb = log_softmax(logits_b[b:b + _ROW_BLOCK])
            pa = np.exp(lpa)
            # sum_v p_a (log p_a - log p_b); a token with p_a == 0 contributes 0 (guards 0 * inf)
            out.append(np.sum(np.where(pa > 0, pa * (lpa - lpb), 0.0), axis=1))
            t = targets[b:b + _ROW_BLOCK]
            rows = np.arange(len(t))
            self.nll_a.append(-lpa[rows, t])
            self.nll_b.append(-lpb[rows, t])
            self.same_top.append(np.argmax(lpa, axis=1) == np.argmax(lpb, axis=1))
        self.klds.extend(out)
        return np.concatenate(out) if out else np.zeros(0, np.float64)

    def mean(self) -> float:
        return float(np.mean(np.concatenate(self.klds))) if self.klds else math.nan

    def result(self, n_chunks: int, n_ctx: int, t_eval_s: float = 0.0) -> "KLDResult":
        if not self.klds:
            raise ValueError("no positions were scored")
        kld = np.concatenate(self.klds)
        nll_a, nll_b = np.concatenate(self.nll_a), np.concatenate(self.nll_b)
        count = len(kld)

        def ppl_of(nll):
            mean, err = _mean_and_uncertainty(float(np.sum(nll)), float(np.sum(nll * nll)), count, min_count=10,
                                              undefined=0.0)
            return math.exp(mean), math.exp(mean) * err

        ppl_a, ppl_a_err = ppl_of(nll_a)
        ppl_b, ppl_b_err = ppl_of(nll_b)
        # llama.cpp's kl_divergence() reports an uncertainty only for more than 10 positions (0 otherwise)
        kld_mean, kld_err = _mean_and_uncertainty(float(np.sum(kld)), float(np.sum(kld * kld)), count,
                                                  min_count=10, undefined=0.0)
        dp = np.exp(-nll_b) - np.exp(-nll_a)  # [count]
        return KLDResult(kld_mean=kld_mean, kld_stderr=kld_err, kld_median=float(np.median(kld)),
                         kld_p99=float(np.percentile(kld, 99.0)), kld_max=float(np.max(kld)),
                         top1=float(np.mean(np.concatenate(self.same_top))), ppl_a=ppl_a, ppl_a_stderr=ppl_a_err,
                         ppl_b=ppl_b, ppl_b_stderr=ppl_b_err, delta_ppl=ppl_b - ppl_a,
                         rms_dp=float(np.sqrt(np.mean(dp * dp))), n_tokens=count, n_chunks=n_chunks, n_ctx=n_ctx,
                         kld=kld, t_eval_s=t_eval_s)


def check_same_tokenizer(model_a, model_b, text: str) -> np.ndarray:
    """The text's tokens (int32) when both models tokenize it alike and add the same BOS; else ValueError."""
    if model_a.n_vocab != model_b.n_vocab:
        raise ValueError(f"the models have different vocabularies (n_vocab {model_a.n_vocab} vs {model_b.n_vocab}); "
                         f"KL divergence needs the same tokenizer")
    tokens = np.asarray(model_a.tokenize(text), dtype=np.int32)
    tokens_b = np.asarray(model_b.tokenize(text), dtype=np.int32)
    if not np.array_equal(tokens, tokens_b):
        raise ValueError(f"the models tokenize the text differently ({len(tokens)} vs {len(tokens_b)} tokens); "
                         f"KL divergence needs the same tokenizer")
    tok_a, tok_b = model_a.tokenizer, model_b.tokenizer
    bos_a = tok_a.bos_id if tok_a.add_bos else None
    bos_b = tok_b.bos_id if tok_b.add_bos else None
    if bos_a != bos_b:
        raise ValueError(f"the models put different BOS tokens first ({bos_a} vs {bos_b}); KL divergence needs the "
                         f"same tokenizer")
    return tokens


def windows(model, text: str, n_ctx: int | None = None, models=()):
    """(n_ctx, first, [windows]): the text's perplexity windows (int32 [n_ctx] each, BOS first when the model adds
    it) and the first scored position; n_ctx checked against `model` and `models`, the length against 2 * n_ctx."""
    n_ctx = _resolve_n_ctx([model, *models], n_ctx)
    tokens = np.asarray(model.tokenize(text), dtype=np.int32)
    _check_length(len(tokens), n_ctx)
    return n_ctx, n_ctx // 2, list(_windows(model, tokens, n_ctx))


def kl_divergence(model_a, model_b, text: str, n_ctx: int | None = None, progress=False) -> KLDResult:
    """KL(P_a || P_b) and ppl of both over the windows perplexity() scores (a: the reference, e.g. the f32 source).

    Both models must share a tokenizer: equal n_vocab and identical tokenization of `text`, else ValueError.
    progress: True prints the running mean KLD as `[k]value,` on stderr; a callable gets (k, n_chunks, mean KLD).
    """
    tokens = check_same_tokenizer(model_a, model_b, text)
    n_ctx = _resolve_n_ctx([model_a, model_b], n_ctx)
    _check_length(len(tokens), n_ctx)
    first = n_ctx // 2
    show, done = _progress_fn(progress, ".4g")
    n_chunk = len(tokens) // n_ctx
    acc = KLDAccumulator()
    t0 = time.perf_counter()
    for i, w in enumerate(_windows(model_a, tokens, n_ctx)):
        la = model_a.forward(w)[first:n_ctx - 1]  # [n_ctx - 1 - first, n_vocab] float32
        lb = model_b.forward(w)[first:n_ctx - 1]
        acc.add(la, lb, w[first + 1:])  # targets: the tokens at first + 1 .. n_ctx - 1
        show(i + 1, n_chunk, acc.mean())
    done()
    return acc.result(n_chunk, n_ctx, time.perf_counter() - t0)
