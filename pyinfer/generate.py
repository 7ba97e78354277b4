"""The generation loop: prefill the prompt (reusing the cached prefix), then sample -> yield -> decode one token at
a time, with timings. `generate_tokens` yields token ids and stops on end-of-generation tokens, max_tokens or a
full context; `stream_text` turns them into UTF-8-safe text pieces and applies stop strings; `generate` is the
one-call API behind Model.generate (sampling or beam search). Knows nothing of the CLI; sampling policy lives in
sampling.py, beam search in beam_search.py. Not here: chat templates, batching of independent requests.
"""
import contextlib
import numbers
import time

import numpy as np

from .beam_search import beam_generate
from .results import Completion, GenerationStats, Sequence, stop_token_ids  # noqa: F401  (re-exported)
from .sampling import DEFAULT_MIN_P, DEFAULT_REPEAT_LAST_N, Sampler, log_softmax
from .tokenizer import IncrementalDecoder


@contextlib.contextmanager
def _timed(stats, field_name):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        setattr(stats, field_name, getattr(stats, field_name) + time.perf_counter() - t0)


def _check_max_tokens(max_tokens):
    if max_tokens is None:
        return -1
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < -1:
        raise ValueError(f"max_tokens must be an integer >= 0, or -1/None for no limit, got {max_tokens!r}")
    return int(max_tokens)


def _check_logprobs(logprobs):
    if logprobs is None:
        return None
    if isinstance(logprobs, bool) or not isinstance(logprobs, numbers.Integral) or logprobs < 0:
        raise ValueError(f"logprobs must be None (off) or an integer >= 0 (alternatives per token), got {logprobs!r}")
    return int(logprobs)


def top_logprobs_of(lp, n):
    """The n most probable (id, logprob) pairs of a log-softmax row lp [n_vocab], most probable first (lower id
    first on ties)."""
    if n <= 0:
        return []
    n = min(n, lp.shape[0])
    part = np.argpartition(-lp, n - 1)[:n]  # the n largest, unordered
    order = part[np.lexsort((part, -lp[part]))]  # by logprob descending, then id ascending
    return [(int(i), float(lp[i])) for i in order]


class _GeneratorIterator:
    """The iterator protocol over self._it, the generator a subclass makes in __init__."""

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)


class Generation(_GeneratorIterator):
    """An iterator of generated token ids over one model; .stats fills in as it runs and is final once it ends.

    Validates up front (the constructor raises, not the first next()). The prompt's longest cached prefix is kept
    (cache_prompt=True, the default; at least the last prompt token is evaluated) and the rest evaluated. Stops after
    max_tokens ids (-1/None: no limit), before yielding an end-of-generation id (stop_ids, default
    stop_token_ids(model.tokenizer); ignore_eos=True generates through them), or once the context is full (the last
    token yielded is then the one whose logits filled it: at most n_ctx - n_prompt + 1 tokens). close() stops
    decoding at once; finish(reason) does too and records the reason (stop strings use it).

    logprobs=N (>= 0): .logprobs[i] is the log-probability of the i-th yielded token and .top_logprobs[i] its N most
    probable alternatives [(id, logprob)], both from the log-softmax of the *raw* model logits (before any sampler
    processing, as llama-cpp-python reports them). None: not computed (the hot loop stays one eval + one sample).
    """

    def __init__(self, model, prompt_ids, sampler, max_tokens=128, *, stop_ids=None, ignore_eos=False, logprobs=None,
                 cache_prompt=True):
        self.model = model
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.sampler = sampler
        self.max_tokens = _check_max_tokens(max_tokens)
        self.n_logprobs = _check_logprobs(logprobs)
        n, n_ctx = len(self.prompt_ids), int(model.n_ctx)
        if n == 0:
            raise ValueError("prompt is empty (0 tokens); give at least one token")
        if n > n_ctx:
            raise ValueError(f"prompt is {n} tokens but the context is {n_ctx}; shorten the prompt or load the "
                             f"model with a larger context (-c/--ctx-size), up to the model's maximum")
        self.stop_ids = frozenset() if ignore_eos else (
            stop_token_ids(model.tokenizer) if stop_ids is None else frozenset(int(t) for t in stop_ids))
        eos = getattr(model.tokenizer, "eos_id", None)
        self.eos_id = None if eos is None else int(eos)
        self.cache_prompt = bool(cache_prompt)
        self.tokens = []  # the ids yielded so far
        self.logprobs = [] if self.n_logprobs is not None else None
        self.top_logprobs = [] if self.n_logprobs is not None else None
        self.stats = GenerationStats(n_prompt=n)
        self._it = self._run()

    def close(self):
        self._it.close()
        if self.stats.stop_reason is None:  # closed before it started
            self.stats.stop_reason = "closed"

    def finish(self, reason):
        """Stop decoding now and record why (e.g. "stop" when a stop string matched)."""
        self._it.close()
        self.stats.stop_reason = reason

    def _prefill(self):
        model, ids = self.model, self.prompt_ids
        trim = getattr(model, "trim_cache", None)
        if self.cache_prompt and trim is not None:
            n_keep = int(trim(ids))  # the KV cache now holds ids[:n_keep]
        else:
            model.reset()
            n_keep = 0
        self.stats.n_reused = n_keep
        return model.eval(ids[n_keep:])  # [n_vocab] at the last prompt position

    def _run(self):
        st, model, sampler = self.stats, self.model, self.sampler
        claim = getattr(model, "_claim", None)  # one generation at a time owns the model's cache
        if claim is not None:
            claim(self)
        try:
            if self.max_tokens == 0:
                st.stop_reason = "length"
                return
            reset_history = getattr(sampler, "reset_history", None)
            if reset_history is not None:
                reset_history(self.prompt_ids)  # penalties see the prompt too, as in llama.cpp's main
            with _timed(st, "t_prompt_s"):
                logits = self._prefill()
            while True:
                with _timed(st, "t_gen_s"):
                    t0 = time.perf_counter()
                    tok = int(sampler.sample(logits))
                    st.t_sample_s += time.perf_counter() - t0
                if tok in self.stop_ids:
                    st.stop_reason = "eos"
                    return
                if self.n_logprobs is not None:
                    lp = log_softmax(logits)  # [n_vocab] float64, of the raw logits
                    self.logprobs.append(float(lp[tok]))
                    self.top_logprobs.append(top_logprobs_of(lp, self.n_logprobs))
                sampler.accept(tok)
                self.tokens.append(tok)
                st.n_gen += 1
                yield tok
                if self.max_tokens >= 0 and st.n_gen >= self.max_tokens:
                    st.stop_reason = "length"
                    return
                if model.n_past >= model.n_ctx:
                    st.stop_reason = "context"
                    return
                with _timed(st, "t_gen_s"):
                    logits = model.eval([tok])  # [n_vocab]
        except GeneratorExit:
            if st.stop_reason is None:
                st.stop_reason = "closed"
            raise
        except KeyboardInterrupt:
            st.stop_reason = "interrupted"
            raise
        except BaseException:
            st.stop_reason = "error"
            raise
        finally:
            release = getattr(model, "_release", None)
            if release is not None:
                release(self)


def generate_tokens(model, prompt_ids, sampler, max_tokens=128, **kwargs):
    """Token ids generated after prompt_ids (reusing the cached prefix; cache_prompt=False resets the cache first).
    Returns a Generation: iterate it for the ids, read .stats afterwards. kwargs: stop_ids, ignore_eos, logprobs,
    cache_prompt. Raises ValueError now if the prompt does not fit the context."""
    return Generation(model, prompt_ids, sampler, max_tokens, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# text: UTF-8-safe pieces and stop strings


def _check_stop(stop):
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    stop = tuple(stop)
    for s in stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty str, got {s!r}")
    return stop


def _held_back(text, stop):
    """Length of the longest suffix of text that is a proper prefix of some stop string (a match in progress)."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _first_match(text, stop):
    """Index of the earliest complete stop string in text, or -1."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else -1


class TextStream(_GeneratorIterator):
    """Text pieces of a stream of token ids: never a partial UTF-8 character, never an empty piece. With stop
    strings, text that could still complete one is held back until it cannot, and a completed stop string ends the
    stream (the generation is finished with reason "stop") with neither it nor anything after it emitted; the
    pieces concatenate to the text before the first stop string (else to tokenizer.decode(all ids)).
    Closing this iterator closes the generation (no more decoding). .text is what has been emitted so far;
    .stopped_by the stop string that ended it, if one did."""

    def __init__(self, generation, tokenizer, stop=None, on_finish=None):
        self.generation = generation
        self.tokenizer = tokenizer
        self.stop = _check_stop(stop)
        self.text = ""
        self.stopped_by = None
        self._on_finish = on_finish
        self._done = False
        self._it = self._run()

    def close(self):
        self._it.close()
        self._finish()

    def result(self):
        """The Completion (text, ids, logprobs, finish reason, timings) once the stream has ended; needs a
        Generation underneath."""
        if not self._done:
            raise RuntimeError("the stream has not ended yet: exhaust or close it first")
        return completion_of(self.generation, self)

    def _finish(self):
        if not self._done:
            self._done = True
            close = getattr(self.generation, "close", None)
            if close is not None:
                close()
            if self._on_finish is not None:
                self._on_finish(self)

    def _emit(self, piece):
        self.text += piece
        return piece

    def _run(self):
        dec, stop, pending = IncrementalDecoder(self.tokenizer), self.stop, ""
        try:
            for tok in self.generation:
                pending += dec.add(tok)
                if stop:
                    cut = _first_match(pending, stop)
                    if cut >= 0:
                        self.stopped_by = min((s for s in stop if pending.find(s) == cut), key=len)
                        finish = getattr(self.generation, "finish", None)
                        if finish is not None:
                            finish("stop")
                        if cut:
                            yield self._emit(pending[:cut])
                        return
                    n_ready = len(pending) - _held_back(pending, stop)
                else:
                    n_ready = len(pending)
                if n_ready:
                    yield self._emit(pending[:n_ready])
                    pending = pending[n_ready:]
            pending += dec.flush()
            cut = _first_match(pending, stop) if stop else -1
            if cut >= 0:  # completed by the last, flushed bytes
                self.stopped_by = min((s for s in stop if pending.find(s) == cut), key=len)
                stats = getattr(self.generation, "stats", None)
                if stats is not None:
                    stats.stop_reason = "stop"
                pending = pending[:cut]
            if pending:
                yield self._emit(pending)
        finally:
            self._finish()


def stream_text(generation, tokenizer, stop=None):
    """A TextStream over generation (a Generation or any iterable of ids): UTF-8-safe pieces with stop strings
    applied; the pieces concatenate to the generated text."""
    return TextStream(generation, tokenizer, stop)


# ----------------------------------------------------------------------------------------------------------------
# results


def completion_of(generation, stream):
    """The Completion of a finished Generation and the TextStream that consumed it."""
    st = generation.stats
    return Completion(text=stream.text, tokens=list(generation.tokens), finish_reason=st.stop_reason,
                      n_prompt=st.n_prompt, n_gen=st.n_gen, n_reused=st.n_reused, timings=st.timings(),
                      logprobs=generation.logprobs, top_logprobs=generation.top_logprobs,
                      seed=getattr(generation.sampler, "seed", None), stop=stream.stopped_by)


# ----------------------------------------------------------------------------------------------------------------
# the one-call API


def prompt_to_ids(model, prompt):
    """A str is tokenized by the model (BOS added if its tokenizer wants one; an empty str becomes [BOS] where
    there is one); a sequence of ints is taken as token ids."""
    if isinstance(prompt, str):
        ids = list(model.tokenize(prompt))
        bos = getattr(model.tokenizer, "bos_id", None)
        if not ids and bos is not None:  # empty prompt: start from BOS, as llama.cpp does
            ids = [int(bos)]
        return ids
    return [int(t) for t in prompt]  # already token ids


def make_sampler(model, temperature=0.8, top_k=40, top_p=0.95, seed=None, *, min_p=DEFAULT_MIN_P, typical_p=1.0,
                 repeat_penalty=1.0, repeat_last_n=DEFAULT_REPEAT_LAST_N, frequency_penalty=0.0,
                 presence_penalty=0.0, logit_bias=None, ignore_eos=False):
    """The Sampler generate() uses. ignore_eos=True adds a -inf bias on every end-of-generation token (llama.cpp's
    --ignore-eos), so they are never drawn."""
    bias = []
    if logit_bias is not None:
        bias = list(logit_bias.items()) if hasattr(logit_bias, "items") else list(logit_bias)
    if ignore_eos:
        bias += [(t, float("-inf")) for t in sorted(stop_token_ids(model.tokenizer))]
    return Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, min_p=min_p, typical_p=typical_p,
                   repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, frequency_penalty=frequency_penalty,
                   presence_penalty=presence_penalty, logit_bias=bias or None)


_BEAM_DEFAULTS = dict(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, logit_bias=None, stop=None,
                      logprobs=None)


def generate(model, prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, seed=None, stream=False, *,
             min_p=DEFAULT_MIN_P, typical_p=1.0, repeat_penalty=1.0, repeat_last_n=DEFAULT_REPEAT_LAST_N,
             frequency_penalty=0.0, presence_penalty=0.0, logit_bias=None, stop=None, ignore_eos=False,
             logprobs=None, details=False, num_beams=1, length_penalty=1.0, early_stopping=False,
             num_return_sequences=1, cache_prompt=True, _rng_state=None, _on_finish=None):
    """The text generated after prompt (a str, or a list of token ids), without the prompt.

    stream=False: one str (details=True: a Completion with ids, logprobs, finish reason, counts and timings).
    stream=True: a TextStream of str pieces whose concatenation equals the stream=False result for the same seed;
    closing it early stops decoding; once it has ended, .result() is the Completion. Bad arguments or a prompt
    longer than the context raise ValueError here, at the call, in both modes.

    Sampling: see sampling.Sampler (llama.cpp's chain and defaults: min_p=0.05, repeat_last_n=64, penalties off).
    Stops: end-of-generation tokens (unless ignore_eos, which bans them), stop strings (never emitted), max_tokens.
    cache_prompt: keep the KV cache of the longest common prefix with the previous run (Completion.n_reused).
    num_beams > 1: beam search as HF transformers' generate(num_beams, do_sample=False, length_penalty,
    early_stopping, num_return_sequences); returns the best text, or a list of num_return_sequences texts when that
    is > 1 (details=True: a Completion with .sequences). Sampling parameters do not apply to it; penalties, logit
    bias, stop strings, logprobs and streaming are refused.
    """
    if isinstance(num_beams, bool) or not isinstance(num_beams, numbers.Integral) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    prompt_ids = prompt_to_ids(model, prompt)
    if num_beams > 1 or num_return_sequences != 1:
        given = dict(repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                     presence_penalty=presence_penalty, logit_bias=logit_bias, stop=stop, logprobs=logprobs)
        bad = [k for k, v in given.items()
               if (bool(v) if k in ("logit_bias", "stop") else v != _BEAM_DEFAULTS[k])]
        if stream:
            bad.insert(0, "stream")
        if bad:
            raise ValueError(f"beam search (num_beams > 1) does not support {', '.join(bad)}")
        return beam_generate(model, prompt_ids, num_beams=int(num_beams), max_tokens=max_tokens,
                             length_penalty=length_penalty, early_stopping=early_stopping,
                             num_return_sequences=num_return_sequences, ignore_eos=ignore_eos, details=details,
                             cache_prompt=cache_prompt, on_finish=_on_finish)
    sampler = make_sampler(model, temperature, top_k, top_p, seed, min_p=min_p, typical_p=typical_p,
                           repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                           frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                           logit_bias=logit_bias, ignore_eos=ignore_eos)
    sampler._check_bias_ids(int(model.n_vocab))
    if _rng_state is not None:
        sampler.set_rng_state(_rng_state)
    gen = Generation(model, prompt_ids, sampler, max_tokens, ignore_eos=ignore_eos, logprobs=logprobs,
                     cache_prompt=cache_prompt)
    on_finish = None if _on_finish is None else (lambda ts: _on_finish(gen, ts))
    pieces = TextStream(gen, model.tokenizer, stop, on_finish=on_finish)
    if stream:
        return pieces
    for _ in pieces:
        pass
    if details:
        return completion_of(gen, pieces)
    return pieces.text
