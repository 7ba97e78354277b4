"""A loaded model: weights bound to the C++ forward pass (one KV cache), plus its tokenizer.
Owns the cache's lifetime and the thread count; each eval() is one GIL-free C++ call over all layers.
Sampling and the decode loop live in sampling.py / generate.py, not here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _ext
from .tokenizer import BPETokenizer


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Model:
    """A causal LM ready to run: `tokenize`, `forward`, `eval`, `generate`."""

    def __init__(self, arch: str, hparams: dict, tensors: dict, tokenizer: BPETokenizer, *,
                 n_ctx: int | None = None, n_threads: int | None = None, path=None):
        self.arch = arch
        self.hparams = dict(hparams)
        self.tokenizer = tokenizer
        self.path = path
        self.n_vocab = int(hparams["n_vocab"])
        n_ctx = int(n_ctx or hparams["n_ctx_train"])
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        if n_threads is not None and int(n_threads) <= 0:
            raise ValueError(f"n_threads must be positive, got {n_threads}")
        self._tensors = tensors  # keep the arrays (and their memory maps) alive
        self._ctx = _ext.Context(arch, self.hparams, tensors, n_ctx, int(n_threads or default_threads()))

    # --- shape and settings -------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._ctx.n_ctx

    @property
    def n_threads(self) -> int:
        return self._ctx.n_threads

    @n_threads.setter
    def n_threads(self, n: int) -> None:
        if int(n) <= 0:
            raise ValueError(f"n_threads must be positive, got {n}")
        self._ctx.n_threads = int(n)

    @property
    def n_past(self) -> int:
        """Tokens held in the KV cache."""
        return self._ctx.n_past

    # --- text <-> ids -------------------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text` (BOS first when the model's tokenizer asks for it)."""
        ids = self.tokenizer.encode(text, special=special)
        if self.tokenizer.add_bos and self.tokenizer.bos_id is not None:
            ids = [self.tokenizer.bos_id] + ids
        return ids

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    # --- the forward pass ---------------------------------------------------------------------------------
    def _ids_array(self, ids) -> np.ndarray:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if arr.ndim != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must be integers, got {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def reset(self) -> None:
        """Forget the cached sequence."""
        self._ctx.reset()

    def eval(self, ids) -> np.ndarray:
        """Run `ids` after the cached tokens; float32 logits [n_vocab] at the last position."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            raise ValueError("eval needs at least one token")
        return self._ctx.eval(arr, False)[0]

    def forward(self, ids) -> np.ndarray:
        """float32 logits [len(ids), n_vocab] at every position of a fresh sequence (resets the cache)."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            return np.zeros((0, self.n_vocab), np.float32)
        self._ctx.reset()
        return self._ctx.eval(arr, True)

    # --- generation ---------------------------------------------------------------------------------------
    def generate(self, prompt, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, seed: int | None = None, stream: bool = False):
        """New text after `prompt` (a str or token ids); with stream=True an iterator of text pieces."""
        from .generate import generate
        return generate(self, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stream=stream)

    def __repr__(self) -> str:
        return (f"Model(arch={self.arch!r}, n_layer={self.hparams.get('n_layer')}, n_embd={self.hparams.get('n_embd')}, "
                f"n_vocab={self.n_vocab}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, path={str(self.path)!r})")


def load(path=None, n_threads: int | None = None, dtype: str | None = None, n_ctx: int | None = None) -> Model:
    """Load a model: a Hugging Face folder (config.json + safetensors + tokenizer files).

    dtype: None keeps weights as stored; "f16" converts matrices to float16 at load; "f32" to float32.
    """
    from . import hf_checkpoint

    if dtype not in (None, "auto", "f32", "f16"):
        raise ValueError(f"dtype must be one of None, 'f32', 'f16', got {dtype!r}")
    dtype = None if dtype == "auto" else dtype
    if path is None:
        raise ValueError("no model given: pass the path of a Hugging Face model folder")
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model not found: {p}")
    if p.is_dir():
        if not hf_checkpoint.is_hf_folder(p):
            raise FileNotFoundError(f"{p}: no config.json; expected a Hugging Face model folder")
        hp, tensors = hf_checkpoint.load_gpt2(p, dtype=dtype)
        tok = BPETokenizer.from_dir(p)
        return Model("gpt2", hp, tensors, tok, n_ctx=n_ctx, n_threads=n_threads, path=p)
    raise ValueError(f"{p}: unsupported model file; pass a Hugging Face model folder")
