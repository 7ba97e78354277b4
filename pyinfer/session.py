"""A Session: one sequence's KV cache over a model's weights (its own root context; the weights are shared, not
copied), with the token ids it holds, save()/load() to bytes or a file, fork(), and generate()/eval() that reuse
the cached prefix. A session also keeps the sampler's RNG state, so a seeded run can be resumed exactly.
Does not do: several sequences in one batch, or states portable between models of different shape.

State format (little-endian): b"PYINFSES" | u32 header length | header (UTF-8 JSON: format, fingerprint {arch,
n_vocab, n_layer, n_embd}, tokens, n_cached, rng_state) | the C++ context state (Context.get_state()).
"""
from __future__ import annotations

import json
import os
import struct

MAGIC = b"PYINFSES"
FORMAT = 1


class Session:
    """Model.session() / pyinfer.Session(model): a sequence with its own KV cache.

    .tokens: the sequence so far (prompt + generated; an ending EOS excluded). All of them but possibly the last are
    in the cache (a run stopped by max_tokens has not evaluated its last token); generate() and eval() catch up.
    generate(prompt, ...): like Model.generate; prompt=None continues .tokens, and then (with seed=None) the RNG
    continues where the previous generate() left it, so generate(p, n, seed=s) then generate(None, m) gives the same
    tokens as generate(p, n + m, seed=s) -- also across save()/load().
    """

    def __init__(self, model, n_ctx: int | None = None, n_threads: int | None = None):
        self.model = model  # the weights and tokenizer
        self._m = model._spawn(n_ctx, n_threads)  # a Model with this session's own root context
        self._tokens = []
        self._rng_state = None

    # --- what it holds ------------------------------------------------------------------------------------
    @property
    def tokens(self) -> list:
        return list(self._tokens)

    @property
    def text(self) -> str:
        return self._m.detokenize(self._tokens)

    @property
    def n_past(self) -> int:
        """Tokens held in the KV cache."""
        return self._m.n_past

    @property
    def n_ctx(self) -> int:
        return self._m.n_ctx

    @property
    def n_threads(self) -> int:
        return self._m.n_threads

    @n_threads.setter
    def n_threads(self, n: int) -> None:
        """Threads for this session's compute; results do not depend on it (the kernels split work the same way)."""
        self._m.n_threads = n

    @property
    def tokenizer(self):
        return self._m.tokenizer

    def tokenize(self, text: str, special: bool = False) -> list:
        return self._m.tokenize(text, special=special)

    def detokenize(self, ids) -> str:
        return self._m.detokenize(ids)

    def reset(self) -> None:
        self._m.reset()
        self._tokens = []
        self._rng_state = None

    # --- running ------------------------------------------------------------------------------------------
    def eval(self, ids):
        """Append ids to the sequence; float32 logits [n_vocab] after its last token."""
        ids = [int(t) for t in ids]
        if not ids:
            raise ValueError("eval needs at least one token")
        seq = self._tokens + ids
        n_keep = self._m.trim_cache(seq)
        logits = self._m.eval(seq[n_keep:])
        self._tokens = seq
        return logits

    def forward(self, ids):
        """float32 logits [len(ids), n_vocab] at every position of a fresh sequence; the session then holds ids (a
        generate() on the same ids reuses all of them but the last)."""
        ids = [int(t) for t in ids]
        logits = self._m.forward(ids)
        self._tokens = ids
        self._rng_state = None
        return logits

    def generate(self, prompt=None, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, seed: int | None = None, stream: bool = False, **kwargs):
        """Model.generate on this session's cache (cache_prompt always on). prompt=None continues .tokens."""
        from .generate import generate, prompt_to_ids

        if kwargs.get("cache_prompt") is False:
            raise ValueError("a Session always reuses its cache; use session.reset() for a cold start")
        kwargs.pop("cache_prompt", None)
        if prompt is None:
            if not self._tokens:
                raise ValueError("the session is empty: give a prompt")
            ids = list(self._tokens)
            rng_state = self._rng_state if seed is None else None
        else:
            ids = prompt_to_ids(self._m, prompt)
            rng_state = None

        def on_finish(gen, _stream):
            if gen is None:  # beam search: the cache holds the prompt only
                self._tokens = list(ids)
                return
            self._tokens = list(gen.prompt_ids) + list(gen.tokens)
            state = getattr(gen.sampler, "get_rng_state", None)
            self._rng_state = state() if state is not None else None

        return generate(self._m, ids, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stream=stream, _rng_state=rng_state, _on_finish=on_finish, **kwargs)

    # --- state --------------------------------------------------------------------------------------------
    def save(self, path=None) -> bytes:
        """The session as bytes (also written to `path` when given): tokens, RNG state, KV cache."""
        header = json.dumps({"format": FORMAT, "fingerprint": self._m.fingerprint(), "tokens": self._tokens,
                             "n_cached": self._m.n_past, "rng_state": self._rng_state}).encode("utf-8")
        data = MAGIC + struct.pack("<I", len(header)) + header + self._m._ctx.get_state()
        if path is not None:
            with open(os.fspath(path), "wb") as f:
                f.write(data)
        return data

    def load(self, src) -> "Session":
        """Restore a save(): src is the bytes or a file path. Refuses a state saved from a model of another shape."""
        if isinstance(src, (bytes, bytearray, memoryview)):
            data, what = bytes(src), "session state"
        else:
            with open(os.fspath(src), "rb") as f:
                data = f.read()
            what = os.fspath(src)
        if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
            raise ValueError(f"{what}: not a pyinfer session state (bad magic)")
        (n,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(data[start:start + n].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{what}: corrupt session header") from None
        if not isinstance(header, dict):
            raise ValueError(f"{what}: corrupt session header (not a JSON object)")
        if header.get("format") != FORMAT:
            raise ValueError(f"{what}: session format {header.get('format')!r}, this pyinfer reads {FORMAT}")
        mine, theirs = self._m.fingerprint(), header.get("fingerprint")
        if theirs != mine:
            raise ValueError(f"{what}: the state was saved from a different model ({_describe(theirs)}); this "
                             f"model is {_describe(mine)}; load it into the model it was saved from")
        tokens, n_cached, n_vocab = header.get("tokens"), header.get("n_cached"), self._m.n_vocab
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens) or type(n_cached) is not int:
            raise ValueError(f"{what}: corrupt session header (tokens should be a list of ints, n_cached an int)")
        if not all(0 <= t < n_vocab for t in tokens):
            raise ValueError(f"{what}: corrupt session header (a token id outside the vocabulary 0..{n_vocab - 1})")
        if not 0 <= n_cached <= len(tokens) or len(tokens) - n_cached > 1:
            raise ValueError(f"{what}: corrupt session header (n_cached {n_cached}, {len(tokens)} tokens)")
        self._m.reset()  # a refused state leaves the session empty, not holding half of an old one
        self._tokens, self._rng_state = [], None
        self._m._ctx.set_state(data[start + n:])  # ValueError from C++ on a shape or size mismatch
        if self._m._ctx.n_past != n_cached:
            held = self._m._ctx.n_past
            self._m.reset()
            raise ValueError(f"{what}: the cache holds {held} positions, the header says {n_cached}")
        self._m._cached_ids = tokens[:n_cached]
        self._tokens = tokens
        self._rng_state = header.get("rng_state")
        return self

    def fork(self) -> "Session":
        """An independent copy: a new root context (same weights) with this session's cache, tokens and RNG state."""
        other = Session(self.model, n_ctx=self.n_ctx, n_threads=self._m.n_threads)
        other._m._ctx.set_state(self._m._ctx.get_state())
        other._m._cached_ids = list(self._m._cached_ids)
        other._tokens = list(self._tokens)
        other._rng_state = None if self._rng_state is None else json.loads(json.dumps(self._rng_state))
        return other

    def __repr__(self) -> str:
        return f"Session(n_tokens={len(self._tokens)}, n_past={self.n_past}, n_ctx={self.n_ctx})"


def _describe(fp) -> str:
    if not isinstance(fp, dict):
        return "unknown"
    return ", ".join(f"{k}={fp.get(k)}" for k in ("arch", "n_vocab", "n_layer", "n_embd"))
