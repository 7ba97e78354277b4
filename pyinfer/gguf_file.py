"""GGUF files -> (arch, hyperparameters, named tensors, tokenizer fields), memory-mapped and zero-copy.
Parsing is the `gguf` package's GGUFReader, hardened: every read is bounds-checked and every tensor's header is
validated (dimensions, type, data range, alignment) before a byte of it can reach C++, so a malformed file is a
ValueError naming the file and the problem, never a crash. Writing GGUFs lives in quantize.py; tokenizing in
tokenizer.py (byte-level BPE) and tokenizer_spm.py (SentencePiece-style).
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads (v1 was dropped in 2023)
GGUF_MAX_DIMS = 4
_HEADER_BYTES = 24  # magic u32, version u32, n_tensors u64, n_kv u64
_MIN_KV_BYTES = 13  # key length u64, an empty key, value type u32, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 32  # name length u64, an empty name, n_dims u32, one dim u64, type u32, offset u64

# GGML type ids (ggml.h) of the tensor types pyinfer runs; others are refused with their name.
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0 = 0, 1, 2, 3, 6, 7, 8
GGML_Q2_K, GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K = 10, 11, 12, 13, 14  # K-quants: 256-weight super-blocks
SUPPORTED_TYPES = (GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1,
                   GGML_Q2_K, GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K)


def is_gguf(path) -> bool:
    """True if `path` is a file that starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def type_name(ggml_type: int) -> str:
    from gguf import GGMLQuantizationType
    try:
        return GGMLQuantizationType(int(ggml_type)).name
    except ValueError:
        return f"unknown type id {int(ggml_type)}"


# ---------------------------------------------------------------------------------------------------------------
# A bounds-checked GGUFReader
# ---------------------------------------------------------------------------------------------------------------

class _Corrupt(Exception):
    """A structural problem found while parsing; turned into ValueError(f"{path}: {msg}") by read_gguf."""


def _reader_class():
    """GGUFReader subclass, built on first use so that importing pyinfer does not import gguf."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType
    from gguf.gguf_reader import ReaderField

    class StringArrayField(ReaderField):
        """A metadata array of strings: parts [key length, key, value type, element type, count, the strings' bytes
        with their length prefixes]; contents() decodes the strings (UnicodeDecodeError on invalid UTF-8)."""

        def contents(self, index_or_slice=slice(None)):
            from . import _ext
            if isinstance(index_or_slice, int):
                i = range(len(self.starts))[index_or_slice]  # IndexError as a list's
                return _ext.gguf.decode_strings(self.buf, self.starts[i:i + 1], self.lens[i:i + 1])[0]
            return _ext.gguf.decode_strings(self.buf, np.ascontiguousarray(self.starts[index_or_slice]),
                                            np.ascontiguousarray(self.lens[index_or_slice]))

    class CheckedReader(GGUFReader):
        """GGUFReader whose reads never run past the file (the stock one silently returns short arrays, and a
        uint64 element count in np.prod can wrap), with header checks as tensors are listed, and a fast path for
        arrays (the stock reader makes several numpy views per element: ~6 s for GPT-2's 100k-string vocab)."""

        def _plain(self) -> np.ndarray:
            # a plain ndarray view of the memmap: slicing a np.memmap goes through Python-level hooks
            p = self.__dict__.get("_plain_data")
            if p is None:
                p = self.__dict__["_plain_data"] = self.data.view(np.ndarray)
            return p

        def _get(self, offset, dtype, count=1, override_order=None):
            count, offset = int(count), int(offset)
            itemsize = np.dtype(dtype).itemsize
            end = offset + itemsize * count
            size = self.data.nbytes
            if count < 0 or offset < 0 or end > size:
                raise _Corrupt(f"truncated or corrupt: reading {itemsize * count} bytes at offset {offset} runs "
                               f"past the end of the file ({size} bytes)")
            arr = self._plain()[offset:end].view(dtype=dtype)
            order = self.byte_order if override_order is None else override_order
            if order == "I":  # keep numpy's canonical native dtype: the C++ boundary checks dtype identity
                return arr
            return arr.view(arr.dtype.newbyteorder(order))

        def _get_field_parts(self, orig_offs, raw_type):
            try:
                GGUFValueType(int(raw_type))
            except ValueError:
                raise _Corrupt(f"metadata value at offset {orig_offs} has unknown value type {int(raw_type)}: "
                               "corrupt") from None
            if raw_type != GGUFValueType.ARRAY:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            n, offs, size = int(alen[0]), orig_offs + 12, self.data.nbytes
            try:
                itype = GGUFValueType(int(raw_itype[0]))
            except ValueError:
                raise _Corrupt(f"metadata array at offset {orig_offs} has unknown element type "
                               f"{int(raw_itype[0])}") from None
            if itype == GGUFValueType.STRING:  # offsets found (and checked) in C++; decoded on contents()
                from . import _ext
                try:
                    starts, lens, end = _ext.gguf.string_array_offsets(self._plain(), offs, n)
                except ValueError as e:
                    raise _Corrupt(str(e)) from None
                self._pending_strings = (starts, lens)  # for _push_field, called next with this field
                region = self._plain()[offs:end]  # the strings with their length prefixes, as one part
                return end - orig_offs, [raw_itype, alen, region], [2], [GGUFValueType.ARRAY, itype]
            nptype = self.gguf_scalar_to_np.get(itype)
            if nptype is not None:  # one part holding every element; ReaderField.contents() flattens it
                values = self._get(offs, nptype, n)
                return 12 + int(values.nbytes), [raw_itype, alen, values], [2], [GGUFValueType.ARRAY, itype]
            if n > size - offs:  # arrays of arrays: every element takes at least 12 bytes
                raise _Corrupt(f"metadata array at offset {orig_offs} claims {n} elements: truncated or corrupt")
            return super()._get_field_parts(orig_offs, raw_type)

        def _push_field(self, field, skip_sum=False):
            # the string array _get_field_parts has just parsed becomes a StringArrayField (contents() in C++)
            pending = self.__dict__.pop("_pending_strings", None)
            if pending is not None and field.types == [GGUFValueType.ARRAY, GGUFValueType.STRING]:
                field = StringArrayField(*field)
                field.buf, (field.starts, field.lens) = self._plain(), pending
            return super()._push_field(field, skip_sum)

        def _get_tensor_info_field(self, orig_offs):
            name_len, name_data = self._get_str(orig_offs)
            name = bytes(name_data).decode("utf-8", errors="replace")
            n_dims = int(self._get(orig_offs + 8 + int(name_len[0]), np.uint32)[0])
            if not 1 <= n_dims <= GGUF_MAX_DIMS:
                raise _Corrupt(f"tensor '{name}' has {n_dims} dimensions (GGUF allows 1 to {GGUF_MAX_DIMS})")
            return super()._get_tensor_info_field(orig_offs)

        def _build_tensors(self, start_offs, fields):
            size = self.data.nbytes
            ranges = []  # (begin, end, name) of every tensor's data
            for field in fields:
                _, name_data, _, dims, raw_dtype, offset_tensor = field.parts
                name = bytes(name_data).decode("utf-8", errors="replace")
                try:
                    ggml_type = GGMLQuantizationType(int(raw_dtype[0]))
                except ValueError:
                    raise _Corrupt(f"tensor '{name}' has unknown tensor type id {int(raw_dtype[0])}") from None
                if ggml_type not in GGML_QUANT_SIZES:
                    raise _Corrupt(f"tensor '{name}' has type {ggml_type.name}, which has no known block size")
                shape = [int(d) for d in dims]  # GGUF order: ne0 (the row length) first
                if any(d <= 0 for d in shape):
                    raise _Corrupt(f"tensor '{name}' has a non-positive dimension: {shape}")
                block_size, type_size = GGML_QUANT_SIZES[ggml_type]
                if shape[0] % block_size:
                    raise _Corrupt(f"tensor '{name}' of type {ggml_type.name}: row length {shape[0]} is not a "
                                   f"multiple of its block size {block_size}")
                n_elements = 1
                for d in shape:  # Python ints: no wrap-around
                    n_elements *= d
                n_bytes = n_elements // block_size * type_size
                rel = int(offset_tensor[0])
                if rel % self.alignment:
                    raise _Corrupt(f"tensor '{name}' data offset {rel} is not a multiple of the file's alignment "
                                   f"{self.alignment}")
                begin = int(start_offs) + rel
                if begin + n_bytes > size:
                    raise _Corrupt(f"tensor '{name}' (type {ggml_type.name}, shape {shape}) has data at bytes "
                                   f"[{begin}, {begin + n_bytes}), outside the file ({size} bytes): "
                                   "truncated or corrupt")
                ranges.append((begin, begin + n_bytes, name))
            ranges.sort()
            for (_, end_a, a), (begin_b, _, b) in zip(ranges, ranges[1:]):
                if begin_b < end_a:
                    raise _Corrupt(f"tensor '{b}' data at offset {begin_b} overlaps tensor '{a}' (which ends at "
                                   f"{end_a}): corrupt tensor offsets or types")
            super()._build_tensors(start_offs, fields)

    return CheckedReader


_READER_CLASS = None


def advise_huge_pages(mm: np.memmap):
    """Asks the kernel to back a weight file's mapping with 2 MiB pages (Linux MADV_HUGEPAGE; elsewhere, or if
    refused, nothing).  Decode reads every weight once a token: with 4 KiB pages the TLB misses took ~10 % of a step
    (SmolLM2 at 1 thread, 9.3 -> 8.2 ms a token).  It counts when the file's pages come into the page cache through
    this mapping; pages already cached keep the size they were read with (a read() of the whole file, as `cp` or
    the downloader do, already gives large ones)."""
    advice, m = getattr(mmap, "MADV_HUGEPAGE", None), getattr(mm, "_mmap", None)
    if advice is not None and m is not None:
        try:
            m.madvise(advice)
        except (OSError, ValueError):
            pass


def read_gguf(path):
    """A gguf.GGUFReader over `path` (memory-mapped) whose header and tensor table are known to be sound.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and the problem, for anything
    that is not a well-formed GGUF v2/v3 file.
    """
    global _READER_CLASS
    path = Path(os.fspath(path))
    with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError pass through
        head = f.read(_HEADER_BYTES)
    if len(head) < 4 and GGUF_MAGIC.startswith(head):
        raise ValueError(f"{path}: truncated GGUF file: {len(head)} bytes")
    if head[:4] != GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})")
    if len(head) < _HEADER_BYTES:
        raise ValueError(f"{path}: truncated GGUF file: {len(head)} bytes, shorter than its {_HEADER_BYTES}-byte "
                         "header")
    version = int.from_bytes(head[4:8], "little")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        version = int.from_bytes(head[4:8], "big")
    if version not in GGUF_VERSIONS:
        raise ValueError(f"{path}: GGUF version {version} is not supported (supported: "
                         f"{', '.join(map(str, GGUF_VERSIONS))})")
    order = "little" if int.from_bytes(head[4:8], "little") == version else "big"
    n_tensors, n_kv = int.from_bytes(head[8:16], order), int.from_bytes(head[16:24], order)
    room = os.path.getsize(path) - _HEADER_BYTES
    if n_kv * _MIN_KV_BYTES > room:  # before the reader loops over them
        raise ValueError(f"{path}: the header claims {n_kv} metadata entries, more than the file "
                         f"({room + _HEADER_BYTES} bytes) can hold: truncated or corrupt")
    if n_tensors * _MIN_TENSOR_INFO_BYTES + n_kv * _MIN_KV_BYTES > room:
        raise ValueError(f"{path}: the header claims {n_tensors} tensors, more than the file "
                         f"({room + _HEADER_BYTES} bytes) can hold: truncated or corrupt")
    if _READER_CLASS is None:
        _READER_CLASS = _reader_class()
    try:
        reader = _READER_CLASS(path, "r")
        advise_huge_pages(reader.data)  # before a tensor is read
        return reader
    except _Corrupt as e:
        raise ValueError(f"{path}: {e}") from None
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        raise ValueError(f"{path}: corrupt GGUF file ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------------

def read_metadata(reader, path=None) -> dict:
    """{key: Python value} of every metadata field (strings decoded, arrays as lists), GGUF.* header fields
    excluded."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            out[key] = field.contents()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: metadata '{key}' is not valid UTF-8 ({e})") from None
    return out


def _get(meta: dict, key: str, kind, path, default=None, required=True):
    """meta[key] checked to be of `kind` (int, float, str, bool or list); ValueError naming the key if not."""
    if key not in meta:
        if required:
            raise ValueError(f"{path}: metadata key '{key}' is missing")
        return default
    v = meta[key]
    ok = (isinstance(v, bool) if kind is bool else
          isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
          isinstance(v, int) and not isinstance(v, bool) if kind is int else isinstance(v, kind))
    if not ok:
        raise ValueError(f"{path}: metadata '{key}' should be {kind.__name__}, got {type(v).__name__} {v!r:.80}")
    return float(v) if kind is float else v


def _n_vocab(meta: dict, prefix: str, path) -> int:
    """`{arch}.vocab_size`, else the length of the token list (as llama.cpp takes it)."""
    n_vocab = _get(meta, prefix + "vocab_size", int, path, required=False)
    if n_vocab is None:
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list):
            raise ValueError(f"{path}: neither tokenizer.ggml.tokens nor {prefix}vocab_size gives the vocabulary size")
        n_vocab = len(tokens)
    return n_vocab


def gpt2_hparams(meta: dict, path) -> dict:
    """Hyperparameters under pyinfer's names (as hf_checkpoint.load_gpt2 gives them) from `gpt2.*` metadata."""
    hp = dict(n_ctx_train=_get(meta, "gpt2.context_length", int, path),
              n_embd=_get(meta, "gpt2.embedding_length", int, path),
              n_head=_get(meta, "gpt2.attention.head_count", int, path),
              n_layer=_get(meta, "gpt2.block_count", int, path),
              n_ff=_get(meta, "gpt2.feed_forward_length", int, path),
              norm_eps=_get(meta, "gpt2.attention.layer_norm_epsilon", float, path))
    hp["n_vocab"] = _n_vocab(meta, "gpt2.", path)
    bad = {k: v for k, v in hp.items() if not v > 0}
    if bad:
        raise ValueError(f"{path}: hyperparameters must be positive: {bad}")
    if hp["n_embd"] % hp["n_head"]:
        raise ValueError(f"{path}: embedding_length {hp['n_embd']} is not a multiple of head_count {hp['n_head']}")
    return hp


def _gpt2_tensor_shapes(hp: dict) -> dict:
    """{name: (shape in pyinfer's (n_rows, n_cols) order, required)} of a GPT-2 model."""
    C, V, F, P = hp["n_embd"], hp["n_vocab"], hp["n_ff"], hp["n_ctx_train"]
    shapes = {"token_embd.weight": ((V, C), True), "position_embd.weight": ((P, C), True)}
    for i in range(hp["n_layer"]):
        b = f"blk.{i}."
        for name, shape in (("attn_norm.weight", (C,)), ("attn_norm.bias", (C,)),
                            ("attn_qkv.weight", (3 * C, C)), ("attn_qkv.bias", (3 * C,)),
                            ("attn_output.weight", (C, C)), ("attn_output.bias", (C,)),
                            ("ffn_norm.weight", (C,)), ("ffn_norm.bias", (C,)),
                            ("ffn_up.weight", (F, C)), ("ffn_up.bias", (F,)),
                            ("ffn_down.weight", (C, F)), ("ffn_down.bias", (C,))):
            shapes[b + name] = (shape, True)
    shapes["output_norm.weight"] = ((C,), True)
    shapes["output_norm.bias"] = ((C,), True)
    shapes["output.weight"] = ((V, C), False)  # absent: tied to token_embd
    return shapes


def llama_hparams(meta: dict, path, arch: str = "llama") -> dict:
    """Hyperparameters under pyinfer's names (as hf_checkpoint.load_llama gives them) from `{arch}.*` metadata, for
    the Llama family: llama, qwen2, qwen3, and gemma3's common part.

    llama.cpp's converter permutes the rows of Llama's attn_q/attn_k so that RoPE rotates adjacent pairs (2i, 2i+1)
    (llama.cpp's "normal" RoPE) instead of HF's halves: hence rope_neox=False for a llama GGUF. Qwen and Gemma are
    converted unpermuted and rotated as halves (llama.cpp's NEOX RoPE): rope_neox=True.
    """
    a = arch + "."
    n_embd = _get(meta, a + "embedding_length", int, path)
    n_head = _get(meta, a + "attention.head_count", int, path)
    if n_head <= 0:
        raise ValueError(f"{path}: {a}attention.head_count must be positive, got {n_head}")
    head_dim = _get(meta, a + "attention.key_length", int, path, default=n_embd // n_head, required=False)
    v_dim = _get(meta, a + "attention.value_length", int, path, default=head_dim, required=False)
    if v_dim != head_dim:
        raise ValueError(f"{path}: attention.key_length {head_dim} != value_length {v_dim} is not supported")
    scaling = _get(meta, a + "rope.scaling.type", str, path, default="none", required=False)
    if scaling != "none":
        raise ValueError(f"{path}: rope scaling '{scaling}' is not supported")
    hp = dict(n_ctx_train=_get(meta, a + "context_length", int, path), n_embd=n_embd, n_head=n_head,
              n_head_kv=_get(meta, a + "attention.head_count_kv", int, path, default=n_head, required=False),
              head_dim=head_dim, n_layer=_get(meta, a + "block_count", int, path),
              n_ff=_get(meta, a + "feed_forward_length", int, path),
              norm_eps=_get(meta, a + "attention.layer_norm_rms_epsilon", float, path),
              rope_base=_get(meta, a + "rope.freq_base", float, path, default=10000.0, required=False),
              n_rot=_get(meta, a + "rope.dimension_count", int, path, default=head_dim, required=False),
              rope_neox=arch != "llama")
    hp["n_vocab"] = _n_vocab(meta, a, path)
    bad = {k: v for k, v in hp.items() if k != "rope_neox" and not v > 0}
    if bad:
        raise ValueError(f"{path}: hyperparameters must be positive: {bad}")
    if hp["n_head"] % hp["n_head_kv"] or hp["n_rot"] > head_dim or hp["n_rot"] % 2:
        raise ValueError(f"{path}: head_count {n_head} / head_count_kv {hp['n_head_kv']} / rope.dimension_count "
                         f"{hp['n_rot']} (head size {head_dim}) are inconsistent")
    return hp


def gemma3_hparams(meta: dict, path) -> dict:
    """gemma3.* metadata as llama.cpp reads it: with attention.sliding_window, layer l is a sliding-window (local)
    layer unless l % pattern == pattern - 1 (pattern attention.sliding_window_pattern, default 6; an array there
    lists the layers), rotated with rope.freq_base_swa (default 10000); the q.k scale is 1/sqrt(head_dim) (27B,
    62 layers: 1/sqrt(n_embd/n_head)); final_logit_softcapping where set."""
    a = "gemma3."
    hp = llama_hparams(meta, path, "gemma3")
    n_layer = hp["n_layer"]
    n_swa = _get(meta, a + "attention.sliding_window", int, path, default=0, required=False)
    if n_swa < 0:
        raise ValueError(f"{path}: {a}attention.sliding_window must be >= 0, got {n_swa}")
    if n_swa > 0:
        pattern = meta.get(a + "attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            if len(pattern) != n_layer or not all(isinstance(v, (bool, int)) for v in pattern):
                raise ValueError(f"{path}: {a}attention.sliding_window_pattern should list {n_layer} flags")
            swa = [bool(v) for v in pattern]
        elif isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 0:
            swa = [pattern == 0 or (l % pattern < pattern - 1) for l in range(n_layer)]
        else:
            raise ValueError(f"{path}: {a}attention.sliding_window_pattern should be a layer count or a list of "
                             f"flags, got {pattern!r:.80}")
        hp.update(n_swa=n_swa, swa_layers=swa,
                  rope_base_swa=_get(meta, a + "rope.freq_base_swa", float, path, default=10000.0, required=False))
    hd = hp["n_embd"] // hp["n_head"] if n_layer == 62 else hp["head_dim"]
    hp["attn_scale"] = 1.0 / float(hd) ** 0.5
    cap = _get(meta, a + "final_logit_softcapping", float, path, default=0.0, required=False)
    if cap < 0:
        raise ValueError(f"{path}: {a}final_logit_softcapping must be >= 0, got {cap}")
    if cap:
        hp["logit_softcap"] = cap
    return hp


def _llama_tensor_shapes(hp: dict, arch: str = "llama") -> dict:
    """{name: (shape, required)} of the Llama family: llama (optional q/k/v/o biases), qwen2 (q/k/v biases), qwen3
    (per-head q/k norms), gemma3 (q/k norms and post-attention/post-FFN norms, no biases)."""
    C, V, F, hd = hp["n_embd"], hp["n_vocab"], hp["n_ff"], hp["head_dim"]
    q, kv = hp["n_head"] * hd, hp["n_head_kv"] * hd
    gemma = arch == "gemma3"
    shapes = {"token_embd.weight": ((V, C), True)}
    for i in range(hp["n_layer"]):
        b = f"blk.{i}."
        layer = [("attn_norm.weight", (C,), True), ("attn_q.weight", (q, C), True),
                 ("attn_k.weight", (kv, C), True), ("attn_v.weight", (kv, C), True),
                 ("attn_output.weight", (C, q), True), ("ffn_norm.weight", (C,), True),
                 ("ffn_gate.weight", (F, C), True), ("ffn_up.weight", (F, C), True),
                 ("ffn_down.weight", (C, F), True)]
        if not gemma:
            layer += [("attn_q.bias", (q,), arch == "qwen2"), ("attn_k.bias", (kv,), arch == "qwen2"),
                      ("attn_v.bias", (kv,), arch == "qwen2"), ("attn_output.bias", (C,), False)]
        if arch in ("qwen3", "gemma3"):
            layer += [("attn_q_norm.weight", (hd,), True), ("attn_k_norm.weight", (hd,), True)]
        if gemma:
            layer += [("post_attention_norm.weight", (C,), True), ("post_ffw_norm.weight", (C,), True)]
        for name, shape, required in layer:
            shapes[b + name] = (shape, required)
    shapes["output_norm.weight"] = ((C,), True)
    shapes["output.weight"] = ((V, C), False)  # absent: tied to token_embd
    return shapes


_ARCH_HPARAMS = {
    "gpt2": (gpt2_hparams, _gpt2_tensor_shapes),
    "llama": (llama_hparams, _llama_tensor_shapes),
    "qwen2": (lambda meta, path: llama_hparams(meta, path, "qwen2"), lambda hp: _llama_tensor_shapes(hp, "qwen2")),
    "qwen3": (lambda meta, path: llama_hparams(meta, path, "qwen3"), lambda hp: _llama_tensor_shapes(hp, "qwen3")),
    "gemma3": (gemma3_hparams, lambda hp: _llama_tensor_shapes(hp, "gemma3")),
}


# ---------------------------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------------------------

def tensor_shape(t) -> tuple:
    """A ReaderTensor's shape in pyinfer's (numpy) order: (n_rows, n_cols) for a matrix; GGUF stores ne0 first."""
    return tuple(int(d) for d in reversed(list(t.shape)))


def tensor_raw(t) -> np.ndarray:
    """The tensor's bytes as stored: uint8 [n_rows, row_bytes] for a matrix (a view of the memory map)."""
    shape = tensor_shape(t)
    raw = t.data.view(np.uint8) if t.data.dtype != np.uint8 else t.data
    return raw.reshape(shape[:-1] + (-1,))


def tensor_to_float(t, dtype=np.float32) -> np.ndarray:
    """The tensor's values as float32 (or float16), dequantizing block formats (a copy unless already dtype)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    shape = tensor_shape(t)
    if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        arr = t.data.reshape(shape)
    else:
        try:
            arr = dequantize(tensor_raw(t), t.tensor_type).reshape(shape)
        except NotImplementedError:
            raise ValueError(f"tensor '{t.name}': type {t.tensor_type.name} cannot be dequantized") from None
    return np.ascontiguousarray(arr, dtype=dtype)


def load_gguf(path, dtype: str | None = None):
    """(arch, hparams, tensors, tokenizer_fields) of a GGUF model file (architecture gpt2, llama, qwen2, qwen3 or
    gemma3, as llama.cpp's converter writes them), tensors memory-mapped without copies.

    tensors uses GGUF names (`blk.N.attn_qkv.weight`). A vector is a float32 array (F16 vectors are converted,
    quantized ones dequantized). A matrix is, with dtype=None, a float32/float16 array (n_rows, n_cols) viewing
    the file, or for a block-quantized type the tuple (raw, ggml_type, n_cols): raw the uint8 (n_rows, row_bytes)
    bytes of the file, ggml_type the GGML type id (one of SUPPORTED_TYPES: Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7,
    Q8_0=8, Q2_K=10 .. Q6_K=14). dtype="f32"/"f16" converts every
    matrix to that float type, dequantizing block formats (a copy). tokenizer_fields holds every `tokenizer.*`
    metadata key with its value, for tokenizer_from_gguf().

    Raises ValueError naming the file and the problem for malformed files, an unsupported architecture or tensor
    type, and missing/misshapen tensors; FileNotFoundError if there is no such file.
    """
    if dtype not in (None, "auto", "f32", "f16"):
        raise ValueError(f"dtype must be one of None, 'f32', 'f16', got {dtype!r}")
    want = {"f32": np.float32, "f16": np.float16}.get(dtype)
    path = Path(os.fspath(path))
    reader = read_gguf(path)
    if reader.byte_order != "I":
        raise ValueError(f"{path}: the file was written for the other byte order (big-endian GGUF); "
                         "convert it on a little-endian machine")
    meta = read_metadata(reader, path)
    arch = _get(meta, "general.architecture", str, path)
    if arch not in _ARCH_HPARAMS:
        raise ValueError(f"{path}: architecture '{arch}' is not supported (supported: {', '.join(_ARCH_HPARAMS)})")
    hparams_fn, shapes_fn = _ARCH_HPARAMS[arch]
    hp = hparams_fn(meta, path)
    if hp["n_layer"] > len(reader.tensors):  # before listing the expected tensors of an absurd block count
        raise ValueError(f"{path}: {arch}.block_count {hp['n_layer']} but the file holds only {len(reader.tensors)} "
                         "tensors")
    expected = shapes_fn(hp)
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and len(tokens) != hp["n_vocab"]:
        raise ValueError(f"{path}: the tokenizer has {len(tokens)} tokens but the model's n_vocab ({arch}.vocab_size, "
                         f"the rows of token_embd.weight) is {hp['n_vocab']}: the file is inconsistent")

    problems, tensors, seen = [], {}, set()
    supported = ", ".join(type_name(t) for t in SUPPORTED_TYPES)
    for t in reader.tensors:
        seen.add(t.name)
        if t.name not in expected:
            problems.append(f"unexpected tensor '{t.name}' (not part of a {arch} model)")
            continue
        shape, _ = expected[t.name]
        got = tensor_shape(t)
        if got != shape:
            problems.append(f"tensor '{t.name}': expected shape {shape}, got {got}")
            continue
        ggml_type = int(t.tensor_type)
        if ggml_type not in SUPPORTED_TYPES:
            problems.append(f"tensor '{t.name}' has type {t.tensor_type.name}, which pyinfer does not run "
                            f"(supported: {supported}); requantize the file to one of those, e.g. with "
                            "`pyinfer quantize`")
            continue
        if len(shape) == 1:
            tensors[t.name] = tensor_to_float(t, np.float32)  # [n]
        elif want is not None:
            tensors[t.name] = tensor_to_float(t, want)  # [n_rows, n_cols]
        elif ggml_type in (GGML_F32, GGML_F16):
            tensors[t.name] = t.data.reshape(shape)  # [n_rows, n_cols] view of the file
        else:
            tensors[t.name] = (tensor_raw(t), ggml_type, shape[-1])  # raw [n_rows, row_bytes]
    for name, (shape, required) in expected.items():
        if required and name not in seen:
            problems.append(f"missing tensor '{name}' (shape {shape})")
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s) with the file's tensors ({arch}, "
                         f"n_layer={hp['n_layer']}, n_embd={hp['n_embd']}, n_vocab={hp['n_vocab']}):\n  - "
                         + "\n  - ".join(problems))
    tokenizer_fields = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
    return arch, hp, tensors, tokenizer_fields


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------

def tokenizer_from_gguf(fields: dict, source="GGUF file"):
    """The tokenizer of a GGUF's `tokenizer.ggml.*` metadata (tokenizer_fields of load_gguf), by
    `tokenizer.ggml.model`: "gpt2" -> BPETokenizer, "llama" -> tokenizer_spm.SPMTokenizer (spm_tokenizer_from_gguf);
    any other model is a ValueError naming it.

    BPE, with llama.cpp's semantics: the pre-tokenizer named by `tokenizer.ggml.pre` (llama.cpp's names are
    tokenizer.py's registry keys: "gpt-2" is GPT-2's regex on llama.cpp's Unicode 15.1 classes), CONTROL/UNKNOWN
    tokens matched only with special=True and USER_DEFINED ones always (tokenizer.gguf_special_tokens), bytes
    without a token dropped, BOS/EOS from `tokenizer.ggml.bos_token_id`/`eos_token_id`, add_bos from
    `tokenizer.ggml.add_bos_token` (default as llama.cpp's: true for the Llama 3 pre-tokenizers, false otherwise,
    e.g. GPT-2). An unknown pre-tokenizer is a ValueError naming it.
    """
    model = _get(fields, "tokenizer.ggml.model", str, source, required=False)
    if model is None:
        raise ValueError(f"{source}: no tokenizer in the file (metadata 'tokenizer.ggml.model' is missing)")
    if model == "llama":
        return spm_tokenizer_from_gguf(fields, source)
    if model != "gpt2":
        raise ValueError(f"{source}: tokenizer model '{model}' is not supported (supported: 'gpt2', byte-level BPE; "
                         "'llama', SentencePiece-style)")
    from .tokenizer import PRETOKENIZER_ADD_BOS, PRETOKENIZER_PATTERNS, BPETokenizer, gguf_special_tokens

    pre = _get(fields, "tokenizer.ggml.pre", str, source, required=False)
    if pre is None:
        raise ValueError(f"{source}: metadata 'tokenizer.ggml.pre' is missing, so the pre-tokenizer is unknown "
                         "(llama.cpp would fall back to 'default'; regenerate the file with a current converter)")
    if pre not in PRETOKENIZER_PATTERNS:
        raise ValueError(f"{source}: pre-tokenizer '{pre}' is not supported (supported: "
                         f"{', '.join(sorted(PRETOKENIZER_PATTERNS))})")
    tokens = _get(fields, "tokenizer.ggml.tokens", list, source)
    merges = _get(fields, "tokenizer.ggml.merges", list, source)
    types = _get(fields, "tokenizer.ggml.token_type", list, source, required=False)
    ids = {}
    for key in ("bos", "eos"):
        v = _get(fields, f"tokenizer.ggml.{key}_token_id", int, source, required=False)
        if v is not None and not 0 <= v < len(tokens):
            raise ValueError(f"{source}: tokenizer.ggml.{key}_token_id {v} is outside the vocabulary "
                             f"(0..{len(tokens) - 1})")
        ids[key] = v
    add_bos = _get(fields, "tokenizer.ggml.add_bos_token", bool, source, default=pre in PRETOKENIZER_ADD_BOS,
                   required=False)
    try:
        special, user = gguf_special_tokens(tokens, types)
        return BPETokenizer(tokens, merges, special, pre=pre, bos_id=ids["bos"], eos_id=ids["eos"], add_bos=add_bos,
                            user_defined_tokens=user, skip_missing_bytes=True)
    except ValueError as e:
        raise ValueError(f"{source}: bad tokenizer metadata: {e}") from None


# llama.cpp's defaults for an SPM vocabulary whose GGUF names no id for the role.
_SPM_DEFAULT_IDS = {"bos": 1, "eos": 2, "unknown": 0}


def spm_tokenizer_from_gguf(fields: dict, source="GGUF file"):
    """SPMTokenizer of a `tokenizer.ggml.model` "llama" vocabulary, set up as llama.cpp's llama_vocab::load does:
    tokens, scores and token types; BOS/EOS/UNK ids from the file (defaults 1/2/0), EOT/EOM and the
    end-of-generation set from the file or by token text (tokenizer.llama_cpp_eog_ids: Gemma's <end_of_turn>),
    add_bos (default true) and add_space_prefix (default true). `tokenizer.ggml.pre` plays no part (llama.cpp
    ignores it for SPM); add_eos_token is not applied (prompts are built by the caller).
    """
    from .tokenizer import llama_cpp_eog_ids
    from .tokenizer_spm import SPMTokenizer

    tokens = _get(fields, "tokenizer.ggml.tokens", list, source)
    n = len(tokens)
    scores = _get(fields, "tokenizer.ggml.scores", list, source, required=False)
    types = _get(fields, "tokenizer.ggml.token_type", list, source, required=False)
    for key, arr in (("scores", scores), ("token_type", types)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{source}: tokenizer.ggml.{key} has {len(arr)} entries for {n} tokens")
    if scores is not None and np.asarray(scores).dtype.kind not in "fiu":  # a GGUF array holds one type
        raise ValueError(f"{source}: tokenizer.ggml.scores should hold numbers (one score per token)")
    t = np.asarray(types) if types is not None else None
    if t is not None and (t.dtype.kind not in "iu" or (t.size and not 0 <= t.min() <= t.max() <= 6)):
        bad = next((i for i, v in enumerate(types) if not (isinstance(v, int) and 0 <= v <= 6)), None)
        if bad is not None:
            raise ValueError(f"{source}: tokenizer.ggml.token_type[{bad}] is {types[bad]!r}; token types are 0..6 "
                             "(llama.cpp's llama_token_type)")
    ids = {}
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"), ("eot", "eot"),
                      ("eom", "eom"), ("fim_pad", "fim_pad"), ("fim_rep", "fim_rep"), ("fim_sep", "fim_sep")):
        v = _get(fields, f"tokenizer.ggml.{key}_token_id", int, source, required=False)
        if v is None:
            v = _SPM_DEFAULT_IDS.get(key)
            v = v if v is not None and v < n else None          # llama.cpp disables a default outside the vocab
        elif not 0 <= v < n:
            raise ValueError(f"{source}: tokenizer.ggml.{key}_token_id {v} is outside the vocabulary (0..{n - 1})")
        ids[role] = v
    roles, eog = llama_cpp_eog_ids(tokens, ids)
    add_bos = _get(fields, "tokenizer.ggml.add_bos_token", bool, source, default=True, required=False)
    add_space = _get(fields, "tokenizer.ggml.add_space_prefix", bool, source, default=True, required=False)
    try:
        return SPMTokenizer(tokens, scores, types,
                            bos_id=roles["bos"], eos_id=roles["eos"], unk_id=roles["unk"], eot_id=roles["eot"],
                            eom_id=roles["eom"], pad_id=roles["pad"], eog_ids=eog, add_bos=add_bos,
                            add_space_prefix=add_space)
    except ValueError as e:
        raise ValueError(f"{source}: bad tokenizer metadata: {e}") from None
