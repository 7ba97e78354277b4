"""A loaded model: weights bound to the C++ forward pass (one KV cache), plus its tokenizer.
Owns the cache's lifetime and the thread count; each eval() is one GIL-free C++ call over all layers.
Sampling and the decode loop live in sampling.py / generate.py, not here.
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from . import _ext
from .tokenizer import BPETokenizer


# The default context is the model's trained length, capped here (llama.cpp's default is 4096) and by memory
DEFAULT_MAX_CTX = 8192
KV_TYPES = ("f16", "f32")
# Prompts are evaluated in chunks of this many tokens: each chunk is one GIL-free C++ call, and Ctrl-C (or another
# Python signal) is seen between chunks. Every token's logits are the same whatever the chunking (the kernels give
# each output element one accumulation order), so this changes nothing but latency of an interrupt.
EVAL_CHUNK = 256


def _mem_available() -> int | None:
    """Bytes of memory the kernel says are available (MemAvailable), or None where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def kv_cache_bytes(hparams: dict, n_ctx: int, kv_type: str = "f16") -> int:
    """Bytes of a KV cache of n_ctx positions: K and V, n_layer x n_ctx x n_head_kv * head_dim values each, 2 bytes
    (f16) or 4 (f32) a value."""
    n_head = int(hparams["n_head"])
    hd = int(hparams.get("head_dim") or int(hparams["n_embd"]) // n_head)
    elt = 2 if kv_type == "f16" else 4
    return 2 * int(hparams["n_layer"]) * int(n_ctx) * int(hparams.get("n_head_kv", n_head)) * hd * elt


def check_kv_type(kv_type):
    """kv_type or the default (PYINFER_KV_TYPE from the environment, else "f16"); a ValueError naming the choices
    for anything else."""
    if kv_type is None:
        kv_type = os.environ.get("PYINFER_KV_TYPE") or "f16"
        if kv_type not in KV_TYPES:
            raise ValueError(f"PYINFER_KV_TYPE must be 'f16' or 'f32', got {kv_type!r}")
    if kv_type not in KV_TYPES:
        raise ValueError(f"kv_type must be 'f16' (the default: half the memory, as llama.cpp) or 'f32', "
                         f"got {kv_type!r}")
    return kv_type


def target_logprobs(logits: np.ndarray, targets: np.ndarray, row_block: int = 64) -> np.ndarray:
    """log p(targets[i] | row i) in float64 (log-softmax with the row max subtracted): logits [n, n_vocab] float32,
    targets [n] -> [n]. Works through `row_block` rows at a time ([64, n_vocab] float64 ~ 26 MB at 50k)."""
    n = logits.shape[0]
    out = np.empty(n, np.float64)
    for b in range(0, n, row_block):
        x = logits[b:b + row_block].astype(np.float64)  # [blk, n_vocab]
        m = np.max(x, axis=1)  # [blk]
        lse = m + np.log(np.sum(np.exp(x - m[:, None]), axis=1))  # [blk]
        t = targets[b:b + row_block]
        out[b:b + row_block] = x[np.arange(len(t)), t] - lse
    return out


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Model:
    """A causal LM ready to run: `tokenize`, `forward`, `eval`, `generate`."""

    def __init__(self, arch: str, hparams: dict, tensors: dict, tokenizer: BPETokenizer, *,
                 n_ctx: int | None = None, n_threads: int | None = None, path=None, chat_template: str | None = None,
                 activations: str | None = None, kv_type: str | None = None,
                 chat_template_builtin: bool = False):
        if activations not in (None, "int8", "f32"):
            raise ValueError(f"activations must be 'int8' (the default: quantized weights meet activations rounded "
                             f"to 8 bits) or 'f32' (exact), got {activations!r}")
        self.activations = activations or "int8"
        self.kv_type = check_kv_type(kv_type)  # the KV cache's element type: "f16" (default) or "f32"
        self.arch = arch
        self.hparams = dict(hparams)
        self.tokenizer = tokenizer
        self.path = path
        self.n_vocab = int(hparams["n_vocab"])
        if n_threads is not None and int(n_threads) <= 0:
            raise ValueError(f"n_threads must be positive, got {n_threads}")
        avail = _mem_available()
        if not n_ctx:  # the trained length, capped at DEFAULT_MAX_CTX and at a quarter of the available memory
            n_ctx = min(int(hparams["n_ctx_train"]), DEFAULT_MAX_CTX)
            while avail is not None and n_ctx > 512 and kv_cache_bytes(hparams, n_ctx, self.kv_type) > avail // 4:
                n_ctx //= 2
        n_ctx = int(n_ctx)
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        need = kv_cache_bytes(hparams, n_ctx, self.kv_type)
        if avail is not None and need > avail:
            raise ValueError(f"n_ctx {n_ctx} needs a {need / 2**20:.1f} MiB KV cache but only {avail / 2**20:.1f} MiB "
                             f"of memory is available; pass a smaller n_ctx (-c), e.g. "
                             f"{max(1, int(n_ctx * avail / need) // 2)}")
        self._tensors = tensors  # keep the arrays (and their memory maps) alive
        self._chat_template_src = chat_template  # Jinja source; compiled on first use
        # True when the file carries no template and pyinfer supplied its architecture's official one (Gemma 3):
        # chat and the server use it; `pyinfer run` completes the prompt as it is (the file may be a base model)
        self.chat_template_builtin = bool(chat_template and chat_template_builtin)
        self._chat_template = None
        self._ctx = _ext.Context(arch, dict(self.hparams, exact=self.activations == "f32"), tensors, n_ctx,
                                 int(n_threads or default_threads()), self.kv_type)
        self._cached_ids = []  # the token ids whose KV entries the cache holds, in order (len == n_past)
        # one user at a time: _busy is held while a call changes the cache; _generation names the generation that
        # owns the cache between its steps (a weak reference: an abandoned stream does not hold the model forever)
        self._busy = threading.Lock()
        self._generation = None

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

    @property
    def cached_ids(self) -> list:
        """The token ids the KV cache holds, in order (a copy)."""
        return list(self._cached_ids)

    def fingerprint(self) -> dict:
        """What a saved KV-cache state must match: arch, n_vocab, n_layer, n_embd."""
        return {"arch": self.arch, "n_vocab": self.n_vocab, "n_layer": int(self.hparams["n_layer"]),
                "n_embd": int(self.hparams["n_embd"])}

    # --- text <-> ids -------------------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text` (BOS first when the model's tokenizer asks for it)."""
        ids = self.tokenizer.encode(text, special=special)
        if self.tokenizer.add_bos and self.tokenizer.bos_id is not None:
            ids = [self.tokenizer.bos_id] + ids
        return ids

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    # --- one user at a time -------------------------------------------------------------------------------
    _IN_USE = ("is in use by another thread (or by a generation still running on it); give each thread its own "
               "Session (model.session()), or finish or close the running generation first")

    @contextlib.contextmanager
    def _exclusive(self, what: str):
        """Held around a call that changes the cache: a second, simultaneous caller gets a RuntimeError instead of
        corrupting it (the C++ step would be serialised, but the cached ids would no longer say what it holds)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{what}: this model/session {self._IN_USE}")
        try:
            yield
        finally:
            self._busy.release()

    def _claim(self, generation) -> None:
        """Make `generation` the owner of the cache until _release(); RuntimeError if another live one owns it."""
        with self._exclusive("generate"):
            cur = self._generation() if self._generation is not None else None
            if cur is not None and cur is not generation:
                raise RuntimeError(f"generate: this model/session {self._IN_USE}")
            self._generation = weakref.ref(generation)

    def _release(self, generation) -> None:
        cur = self._generation() if self._generation is not None else None
        if cur is None or cur is generation:
            self._generation = None

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
        with self._exclusive("reset"):
            self._reset()

    def _reset(self) -> None:
        self._ctx.reset()
        self._cached_ids = []

    def _eval_tracked(self, arr: np.ndarray, all_logits: bool) -> np.ndarray:
        """Run arr after the cache in chunks of EVAL_CHUNK (interruptible between chunks); the cache and
        _cached_ids always agree, also after an error or KeyboardInterrupt (the chunks done so far stay cached)."""
        if arr.size > self.n_ctx - self._ctx.n_past:  # before any chunk runs
            raise ValueError(f"context overflow: {self._ctx.n_past} cached + {arr.size} new tokens exceed n_ctx = "
                             f"{self.n_ctx}; use a shorter prompt or a larger context (n_ctx)")
        outs = []
        with self._exclusive("eval"):
            for b in range(0, arr.size, EVAL_CHUNK):
                chunk = arr[b:b + EVAL_CHUNK]
                last = b + EVAL_CHUNK >= arr.size
                try:
                    out = self._ctx.eval(chunk, all_logits)
                except BaseException:
                    if self._ctx.n_past != len(self._cached_ids):  # cannot tell what the cache holds now
                        self._reset()
                    raise
                self._cached_ids.extend(chunk.tolist())
                if all_logits or last:
                    outs.append(out)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def eval(self, ids) -> np.ndarray:
        """Run `ids` after the cached tokens; float32 logits [n_vocab] at the last position."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            raise ValueError("eval needs at least one token")
        return self._eval_tracked(arr, False)[0]

    def forward(self, ids) -> np.ndarray:
        """float32 logits [len(ids), n_vocab] at every position of a fresh sequence (resets the cache; afterwards
        the cache holds ids, so a generate() whose prompt starts with them reuses it)."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            return np.zeros((0, self.n_vocab), np.float32)
        self.reset()
        return self._eval_tracked(arr, True)

    def trim_cache(self, ids) -> int:
        """Prepare the cache for a sequence starting with `ids`: keep the longest common prefix of the cached ids and
        `ids`, but at most len(ids) - 1 tokens (the last one must be evaluated for its logits); drop the rest.
        Returns the number kept; the caller evaluates ids[kept:]. This is how generate() reuses a shared prefix."""
        with self._exclusive("trim_cache"):
            return self._trim_cache(self._ids_array(ids))

    def _trim_cache(self, ids: np.ndarray) -> int:
        cached = self._cached_ids
        if len(cached) != self._ctx.n_past:  # the context was driven behind our back: trust nothing
            self._reset()
            return 0
        limit = min(len(cached), ids.size - 1)
        if limit <= 0:
            n = 0
        else:
            diff = np.flatnonzero(np.asarray(cached[:limit], dtype=np.int64) != ids[:limit])
            n = int(diff[0]) if diff.size else limit
        self._ctx.truncate(n)
        del self._cached_ids[n:]
        return n

    # --- scoring ------------------------------------------------------------------------------------------
    def score(self, text_or_ids) -> np.ndarray:
        """Per-token log-likelihoods: float64 [n - 1] with entry i = log p(ids[i + 1] | ids[: i + 1]), from the
        log-softmax (float64, max subtracted) of one fresh forward() over the n ids. A str is tokenized first
        (BOS added when the model adds one). The sequence must fit the context; fewer than 2 ids give []."""
        ids = self.tokenize(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
        arr = self._ids_array(ids)
        if arr.size < 2:
            return np.zeros(0, np.float64)
        if arr.size > self.n_ctx:
            raise ValueError(f"score: {arr.size} tokens exceed the context of {self.n_ctx}; score shorter pieces")
        logits = self.forward(arr)  # [n, n_vocab] float32
        return target_logprobs(logits[:-1], arr[1:].astype(np.int64))

    # --- sessions -----------------------------------------------------------------------------------------
    def _spawn(self, n_ctx: int | None = None, n_threads: int | None = None) -> "Model":
        """A Model over the same weights and tokenizer (no copy) with its own, empty KV cache."""
        return Model(self.arch, self.hparams, self._tensors, self.tokenizer, n_ctx=n_ctx or self.n_ctx,
                     n_threads=n_threads or self.n_threads, path=self.path, chat_template=self._chat_template_src,
                     activations=self.activations, kv_type=self.kv_type,
                     chat_template_builtin=self.chat_template_builtin)

    # --- chat ---------------------------------------------------------------------------------------------
    @property
    def chat_template(self):
        """The model's chat template (pyinfer.chat.ChatTemplate) or None if the model has none."""
        if self._chat_template is None and self._chat_template_src:
            from .chat import ChatTemplate
            tok = self.tokenizer
            name = lambda i: tok.token_bytes(i).decode("utf-8", "replace") if i is not None else ""
            self._chat_template = ChatTemplate(self._chat_template_src, name(tok.bos_id), name(tok.eos_id))
        return self._chat_template

    def chat_ids(self, messages, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `messages` rendered with the model's chat template (special tokens parsed)."""
        if self.chat_template is None:
            raise ValueError(f"{self.path}: the model has no chat template; use generate() for plain completion")
        text = self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)
        ids = self.tokenizer.encode(text, special=True)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids

    def chat(self, messages, max_tokens: int = 512, stream: bool = False, **kwargs):
        """The assistant's reply to `messages` ([{"role": "user", "content": ...}, ...]) as str, or with stream=True
        an iterator of text pieces. Generation stops at the end-of-turn token; sampling kwargs as in generate().
        The KV cache keeps the conversation: a follow-up call that repeats the history only computes what is new."""
        return self.generate(self.chat_ids(messages), max_tokens=max_tokens, stream=stream, **kwargs)

    def session(self, n_ctx: int | None = None, n_threads: int | None = None):
        """A Session: its own KV cache over this model's weights, with save/load/fork (see pyinfer.session)."""
        from .session import Session
        return Session(self, n_ctx=n_ctx, n_threads=n_threads)

    # --- generation ---------------------------------------------------------------------------------------
    def generate(self, prompt, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, seed: int | None = None, stream: bool = False, **kwargs):
        """New text after `prompt` (a str or token ids); with stream=True an iterator of text pieces.

        kwargs (see pyinfer.generate.generate): min_p (0.05), typical_p, repeat_penalty, repeat_last_n (64),
        frequency_penalty, presence_penalty, logit_bias, stop, ignore_eos, logprobs, details, num_beams,
        length_penalty, early_stopping, num_return_sequences, cache_prompt (True: reuse the cached common prefix).
        """
        from .generate import generate
        return generate(self, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stream=stream, **kwargs)

    def __repr__(self) -> str:
        return (f"Model(arch={self.arch!r}, n_layer={self.hparams.get('n_layer')}, n_embd={self.hparams.get('n_embd')}, "
                f"n_vocab={self.n_vocab}, n_ctx={self.n_ctx}, kv_type={self.kv_type!r}, n_threads={self.n_threads}, path={str(self.path)!r})")


def load(path=None, n_threads: int | None = None, dtype: str | None = None, n_ctx: int | None = None,
         activations: str | None = None, kv_type: str | None = None) -> Model:
    """Load a model: a GGUF file, a Hugging Face folder (config.json + safetensors + tokenizer files), a named model
    ("smollm2-135m", "gemma3-270m": fetched into ~/.cache/pyinfer on first use), or with no path the default model
    (SmolLM2-135M-Instruct Q4_1).

    dtype: None keeps weights as stored (GGUF block-quantized matrices stay quantized); "f16" converts matrices
    to float16 at load; "f32" to float32 (both dequantize block formats).
    activations: "int8" (default) rounds activations to 8 bits (one f32 scale per 16 values; llama.cpp uses one per
    32, or 256 for K-quant weights) for the integer dot products; "f32" keeps them in float32 and dequantizes each
    weight row on the fly: the exact model of the file (slower, the weights stay as stored).
    kv_type: the KV cache's element type, "f16" (default, half the memory, as llama.cpp) or "f32".
    """
    from . import gguf_file, hf_checkpoint

    if dtype not in (None, "auto", "f32", "f16"):
        raise ValueError(f"dtype must be one of None, 'f32', 'f16', got {dtype!r}")
    dtype = None if dtype == "auto" else dtype
    check_kv_type(kv_type)
    if path is None:  # the default model, SmolLM2-135M-Instruct, fetched into the cache on first use
        from .models import default_model_path
        path = default_model_path()
    from .models import NAMED_MODELS, named_model_path
    if isinstance(path, str) and path in NAMED_MODELS and not os.path.exists(path):  # e.g. "gemma3-270m"
        path = named_model_path(path)
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model not found: {p}")
    if p.is_dir():
        if not hf_checkpoint.is_hf_folder(p):
            raise FileNotFoundError(f"{p}: no config.json; expected a Hugging Face model folder")
        arch, hp, tensors = hf_checkpoint.load_hf(p, dtype=dtype)
        tok = BPETokenizer.from_dir(p)
        return Model(arch, hp, tensors, tok, n_ctx=n_ctx, n_threads=n_threads, path=p,
                     chat_template=hf_checkpoint.read_chat_template(p), activations=activations, kv_type=kv_type)
    if p.suffix.lower() == ".gguf" or gguf_file.is_gguf(p):
        arch, hp, tensors, tok_fields = gguf_file.load_gguf(p, dtype=dtype)
        tok = gguf_file.tokenizer_from_gguf(tok_fields, source=p)
        template = tok_fields.get("tokenizer.chat_template")
        if not template:  # Gemma 3 files often carry no template: its official one (jinja is imported only then)
            from .chat import default_chat_template
            template = default_chat_template(arch)
        return Model(arch, hp, tensors, tok, n_ctx=n_ctx, n_threads=n_threads, path=p, chat_template=template,
                     activations=activations, kv_type=kv_type,
                     chat_template_builtin="tokenizer.chat_template" not in tok_fields)
    raise ValueError(f"{p}: unsupported model file; pass a GGUF file or a Hugging Face model folder")
