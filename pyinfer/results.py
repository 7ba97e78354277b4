"""What a generation produces and when it ends: GenerationStats (counts and timings of one run), Sequence (one
beam), Completion (what generate(..., details=True) returns) and stop_token_ids (a tokenizer's end-of-generation
ids). Plain data below both the sampling loop (generate.py) and beam search (beam_search.py); runs no model.
"""
from dataclasses import dataclass
from typing import Optional


@dataclass
class GenerationStats:
    """Counts and wall-clock seconds of one run. t_gen_s covers sampling and the one-token decode steps, not the
    time a consumer holds the generator between tokens; t_sample_s is the sampling part of it."""
    n_prompt: int = 0  # prompt tokens, n_reused of them taken from the KV cache and the rest evaluated
    t_prompt_s: float = 0.0
    n_gen: int = 0  # tokens yielded (EOS is not counted)
    t_gen_s: float = 0.0
    t_sample_s: float = 0.0
    stop_reason: Optional[str] = None  # "length" | "eos" | "stop" | "context" | "closed" | "interrupted" | "error"
    n_reused: int = 0  # leading prompt tokens whose KV-cache entries were kept from the previous run

    @property
    def n_prompt_eval(self):
        """Prompt tokens actually evaluated in the prefill."""
        return self.n_prompt - self.n_reused

    @property
    def prompt_tokens_per_s(self):
        return self.n_prompt_eval / self.t_prompt_s if self.t_prompt_s > 0 else 0.0

    @property
    def gen_tokens_per_s(self):
        return self.n_gen / self.t_gen_s if self.t_gen_s > 0 else 0.0

    def timings(self):
        """A JSON-able dict of the timings (milliseconds and tokens per second)."""
        return {"prompt_n": self.n_prompt_eval, "prompt_ms": self.t_prompt_s * 1e3,
                "prompt_per_second": self.prompt_tokens_per_s, "predicted_n": self.n_gen,
                "predicted_ms": self.t_gen_s * 1e3, "predicted_per_second": self.gen_tokens_per_s,
                "sample_ms": self.t_sample_s * 1e3, "cache_n": self.n_reused}


def stop_token_ids(tokenizer):
    """The ids that end a generation: the tokenizer's eos_id plus, where it has them, eot_id / eom_id and the
    iterables eog_ids / stop_ids (llama.cpp's end-of-generation set). Missing attributes are skipped."""
    ids = set()
    for name in ("eos_id", "eot_id", "eom_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            ids.add(int(v))
    for name in ("eog_ids", "stop_ids"):
        for v in getattr(tokenizer, name, None) or ():
            ids.add(int(v))
    return frozenset(ids)


@dataclass
class Sequence:
    """One returned beam: its generated ids (an ending EOS excluded), text, HF-style score and why it ended."""
    tokens: list
    text: str
    score: float  # sum of the token log-probs / (generated length incl. an ending EOS) ** length_penalty
    sum_logprob: float
    finish_reason: str  # "eos" | "length"


@dataclass
class Completion:
    """What generate(..., details=True) returns.

    tokens are the ids sampled (an ending EOS excluded; with a stop string, every token up to the one that completed
    it), text is their text cut before the stop string. logprobs / top_logprobs (when logprobs=N was given) are
    per token, from the log-softmax of the raw model logits. n_reused of the n_prompt prompt tokens came from the KV
    cache. finish_reason: "length" (max_tokens), "eos" (an end-of-generation token), "stop" (a stop string),
    "context" (the context is full). Beam search fills sequences (best first; text/tokens are the best's).
    """
    text: str
    tokens: list
    finish_reason: Optional[str]
    n_prompt: int
    n_gen: int
    n_reused: int
    timings: dict
    logprobs: Optional[list] = None
    top_logprobs: Optional[list] = None
    seed: Optional[int] = None
    stop: Optional[str] = None  # the stop string that ended the text
    sequences: Optional[list] = None

    @property
    def prompt_tokens(self):
        return self.n_prompt

    @property
    def completion_tokens(self):
        return self.n_gen

    def to_dict(self, tokenizer=None):
        """A JSON-able dict; with a tokenizer, each token and alternative also carries its text."""
        def piece(i):
            return tokenizer.decode([i]) if tokenizer is not None else None
        d = {"text": self.text, "tokens": list(self.tokens), "finish_reason": self.finish_reason,
             "n_prompt": self.n_prompt, "n_gen": self.n_gen, "n_reused": self.n_reused, "timings": self.timings,
             "seed": self.seed}
        if tokenizer is not None:
            d["token_text"] = [piece(i) for i in self.tokens]
        if self.logprobs is not None:
            d["logprobs"] = list(self.logprobs)
            d["top_logprobs"] = [[{"id": i, "logprob": lp, **({"text": piece(i)} if tokenizer else {})}
                                  for i, lp in alts] for alts in self.top_logprobs]
        if self.stop is not None:
            d["stop"] = self.stop
        if self.sequences is not None:
            d["sequences"] = [{"text": s.text, "tokens": list(s.tokens), "score": s.score,
                               "sum_logprob": s.sum_logprob, "finish_reason": s.finish_reason}
                              for s in self.sequences]
        return d
