"""The generation loop: prefill the prompt, then sample -> yield -> decode one token at a time, with timings.
`generate_tokens` yields token ids; `stream_text` turns them into UTF-8-safe text pieces; `generate` is the
one-call API behind Model.generate. Knows nothing of the CLI; sampling policy lives in sampling.py. Not here yet:
stop strings, chat templates, batching.
"""
import contextlib
import numbers
import time
from dataclasses import dataclass
from typing import Optional

from .sampling import Sampler
from .tokenizer import IncrementalDecoder


@dataclass
class GenerationStats:
    """Counts and wall-clock seconds of one run. t_gen_s covers sampling and the one-token decode steps, not the
    time a consumer holds the generator between tokens; t_sample_s is the sampling part of it."""
    n_prompt: int = 0  # prompt tokens evaluated in the prefill
    t_prompt_s: float = 0.0
    n_gen: int = 0  # tokens yielded (EOS is not counted)
    t_gen_s: float = 0.0
    t_sample_s: float = 0.0
    stop_reason: Optional[str] = None  # "length" | "eos" | "context" | "closed" | "interrupted" | "error"

    @property
    def prompt_tokens_per_s(self):
        return self.n_prompt / self.t_prompt_s if self.t_prompt_s > 0 else 0.0

    @property
    def gen_tokens_per_s(self):
        return self.n_gen / self.t_gen_s if self.t_gen_s > 0 else 0.0


@contextlib.contextmanager
def _timed(stats, field):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        setattr(stats, field, getattr(stats, field) + time.perf_counter() - t0)


def _check_max_tokens(max_tokens):
    if max_tokens is None:
        return -1
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral) or max_tokens < -1:
        raise ValueError(f"max_tokens must be an integer >= 0, or -1/None for no limit, got {max_tokens!r}")
    return int(max_tokens)


class Generation:
    """An iterator of generated token ids over one model; .stats fills in as it runs and is final once it ends.

    Validates up front (the constructor raises, not the first next()). Stops after max_tokens ids (-1/None: no
    limit), before yielding the tokenizer's EOS id, or once the context is full (the last token yielded is then
    the one whose logits filled it: at most n_ctx - n_prompt + 1 tokens). close() stops decoding at once.
    """

    def __init__(self, model, prompt_ids, sampler, max_tokens=128):
        self.model = model
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.sampler = sampler
        self.max_tokens = _check_max_tokens(max_tokens)
        n, n_ctx = len(self.prompt_ids), int(model.n_ctx)
        if n == 0:
            raise ValueError("prompt is empty (0 tokens); give at least one token")
        if n > n_ctx:
            raise ValueError(f"prompt is {n} tokens but the context is {n_ctx}; shorten the prompt or load the "
                             f"model with a larger context (-c/--ctx-size), up to the model's maximum")
        eos = getattr(model.tokenizer, "eos_id", None)
        self.eos_id = None if eos is None else int(eos)
        self.stats = GenerationStats()
        self._it = self._run()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self):
        self._it.close()
        if self.stats.stop_reason is None:  # closed before it started
            self.stats.stop_reason = "closed"

    def _run(self):
        st, model = self.stats, self.model
        try:
            if self.max_tokens == 0:
                st.stop_reason = "length"
                return
            model.reset()
            with _timed(st, "t_prompt_s"):
                logits = model.eval(self.prompt_ids)  # [n_vocab] at the last prompt position
            st.n_prompt = len(self.prompt_ids)
            while True:
                with _timed(st, "t_gen_s"):
                    t0 = time.perf_counter()
                    tok = int(self.sampler.sample(logits))
                    st.t_sample_s += time.perf_counter() - t0
                if tok == self.eos_id:
                    st.stop_reason = "eos"
                    return
                self.sampler.accept(tok)
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
            st.stop_reason = "closed"
            raise
        except KeyboardInterrupt:
            st.stop_reason = "interrupted"
            raise
        except BaseException:
            st.stop_reason = "error"
            raise


def generate_tokens(model, prompt_ids, sampler, max_tokens=128):
    """Token ids generated after prompt_ids (the KV cache is reset first). Returns a Generation: iterate it for
    the ids, read .stats afterwards. Raises ValueError now if the prompt does not fit the context."""
    return Generation(model, prompt_ids, sampler, max_tokens)


def stream_text(generation, tokenizer):
    """Text pieces of a Generation's tokens: never a partial UTF-8 character, never an empty piece; the pieces
    concatenate to tokenizer.decode(all ids). Closing this iterator closes the generation (no more decoding)."""
    dec = IncrementalDecoder(tokenizer)
    try:
        for tok in generation:
            piece = dec.add(tok)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail
    finally:
        generation.close()


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


def generate(model, prompt, max_tokens=128, temperature=0.8, top_k=40, top_p=0.95, seed=None, stream=False):
    """The text generated after prompt (a str, or a list of token ids), without the prompt.

    stream=False: one str. stream=True: an iterator of str pieces whose concatenation equals the stream=False
    result for the same seed; closing it early stops decoding. Bad arguments or a prompt longer than the context
    raise ValueError here, at the call, in both modes.
    """
    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    gen = generate_tokens(model, prompt_to_ids(model, prompt), sampler, max_tokens)
    if stream:
        return stream_text(gen, model.tokenizer)
    return model.tokenizer.decode(list(gen))
