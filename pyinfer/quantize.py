"""A model -> a GGUF file at f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1 or a K-quant recipe (q2_k, q3_k_s/m/l, q4_k_s/m,
q5_k_s/m, q6_k), with a per-tensor error report (`pyinfer quantize`). Input is a Hugging Face GPT-2 folder (written
as llama.cpp's convert_hf_to_gguf.py writes it: the same metadata, tokenizer and tensor names) or a GGUF
(requantized, its metadata copied). Which tensor gets which type follows llama-quantize: f32..q4_1 in its "pure"
mode (one type for every matrix), q5_x and the K-quant recipes with its per-tensor mixture (llama_tensor_get_type:
more bits for attn_v / ffn_down in some layers, Q6_K output, fallbacks for row lengths). The blocks are the
`gguf` package's numpy quantizers (f16, q8_0, q4_x) or pyinfer's C++ ones (q5_x, K-quants), all bit-identical to
ggml's reference quantizers. No importance matrices, IQ types or MoE expert tensors.
"""
from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import gguf_file

# GGML type ids (ggml.h), by the names --token-embedding-type takes
GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7,
              "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14}
_TYPE_NAMES = {v: k.upper() for k, v in GGML_TYPES.items()}
F32, F16, Q8_0 = GGML_TYPES["f32"], GGML_TYPES["f16"], GGML_TYPES["q8_0"]
Q4_0, Q5_0, Q5_1 = GGML_TYPES["q4_0"], GGML_TYPES["q5_0"], GGML_TYPES["q5_1"]
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = (GGML_TYPES[f"q{i}_k"] for i in range(2, 7))
# The recipes --type takes: name -> (llama_ftype, written as general.file_type; the default type of the matrices;
# whether llama-quantize's per-tensor mixture applies by default, rather than its "pure" mode)
RECIPES = {
    "f32": (0, F32, False), "f16": (1, F16, False), "q8_0": (7, Q8_0, False),
    "q4_0": (2, Q4_0, False), "q4_1": (3, GGML_TYPES["q4_1"], False),
    "q5_0": (8, Q5_0, True), "q5_1": (9, Q5_1, True),
    "q2_k": (10, Q2_K, True), "q3_k_s": (11, Q3_K, True), "q3_k_m": (12, Q3_K, True), "q3_k_l": (13, Q3_K, True),
    "q4_k_s": (14, Q4_K, True), "q4_k_m": (15, Q4_K, True), "q5_k_s": (16, Q5_K, True), "q5_k_m": (17, Q5_K, True),
    "q6_k": (18, Q6_K, True),
}
FILE_TYPES = {F32: 0, F16: 1, GGML_TYPES["q4_0"]: 2, GGML_TYPES["q4_1"]: 3, Q8_0: 7}  # of the pure recipes
# types quantized by pyinfer's C++ quantizers (bit-identical to ggml's; gguf's numpy ones lack the K-quants and
# give Q5_x blocks of zeros a +0 where ggml writes -0)
_CPP_TYPES = {Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K}
# metadata the writer sets itself, or that must not be copied from a source GGUF
_NOT_COPIED = {"general.architecture", "general.file_type", "general.alignment", "general.quantization_version"}
_NON_FLOAT = {"I8", "I16", "I32", "I64", "F64"}  # tensor types copied as they are
# tokenizer.py pre-tokenizer name -> llama.cpp's `tokenizer.ggml.pre` (the others already are llama.cpp names)
_LLAMA_CPP_PRE = {"gpt2": "gpt-2"}


def _type_name(t: int) -> str:
    return _TYPE_NAMES.get(t) or gguf_file.type_name(t)


def _block(t: int) -> tuple:
    """(elements per block, bytes per block) of a GGML type."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    return GGML_QUANT_SIZES[GGMLQuantizationType(t)]


def _nbytes(shape, t: int) -> int:
    block, size = _block(t)
    return int(np.prod(shape, dtype=np.int64)) // block * size


# ---------------------------------------------------------------------------------------------------------------
# Rules and the quantizer
# ---------------------------------------------------------------------------------------------------------------

def choose_type(name: str, shape: tuple, src_type: int, target: int, *, tied: bool, leave_output: bool = False,
                token_embedding_type: int | None = None, mixture: "Mixture | None" = None) -> tuple:
    """(GGML type, note) for one tensor; shape in numpy order (n_rows, n_cols).

    As convert_hf_to_gguf.py and llama-quantize do: vectors, norms and anything not named `*.weight` are F32;
    position embeddings stay F32; the output matrix (token_embd when the head is tied) keeps its source type with
    leave_output; token_embedding_type overrides the token embedding. Otherwise `target`, or with a mixture
    (llama-quantize's per-tensor rules for a recipe; called once per tensor in llama.cpp's order, see
    Mixture.order) the type it picks. A row length that is not a multiple of the type's block size falls back as
    llama.cpp does (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0), and to F16 when still not.
    """
    if gguf_file.type_name(src_type) in _NON_FLOAT:
        return src_type, "not a float tensor: copied"
    if len(shape) < 2 or not name.endswith(".weight") or name.endswith("_norm.weight"):
        return F32, ""
    if name == "position_embd.weight":
        return F32, "position embeddings stay F32"
    is_output = name == "output.weight" or (tied and name == "token_embd.weight")
    if name == "token_embd.weight" and token_embedding_type is not None:
        t, note = token_embedding_type, "--token-embedding-type"
    elif is_output and leave_output:
        return src_type, "output tensor left as is (--leave-output-tensor)"
    else:
        t, note = target, ""
        if mixture is not None:
            t = mixture.type_for(name, shape[-1], target)
            note = f"{mixture.recipe} mixture" if t != target else ""
    return _fallback(t, shape[-1], note)


_FALLBACK = {Q2_K: Q4_0, Q3_K: Q4_0, Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}  # llama.cpp's tensor_type_fallback


def _fallback(t: int, n_cols: int, note: str = "") -> tuple:
    """(type, note): t, or a type whose block divides rows of n_cols."""
    block = _block(t)[0]
    if n_cols % block == 0:
        return t, note
    f = _FALLBACK.get(t, t)
    if n_cols % _block(f)[0]:
        f = F16
    return f, f"row length {n_cols} is not a multiple of {block}: {_type_name(f)} instead of {_type_name(t)}"


_ATTN_V = ("attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight")  # llama.cpp's category_is_attn_v


def _category(name: str) -> str:
    """llama.cpp's tensor_get_category (first match wins, as there)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    if any(k in name for k in _ATTN_V):
        return "attn_v"
    for key, cat in (("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


class Mixture:
    """llama-quantize's per-tensor type rules for one recipe (llama_tensor_get_type_impl in llama-quant.cpp, for
    the recipes here; no importance matrix, no experts). It counts attn_v and ffn_down tensors as it goes, so
    type_for must be called once per quantized matrix in llama.cpp's order: sorted by layer, then name (order())."""

    def __init__(self, recipe: str, names, *, arch: str, n_layer: int, n_head: int, n_head_kv: int):
        self.recipe, self.arch, self.n_layer = recipe, arch, n_layer
        self.n_gqa = n_head // n_head_kv if n_head_kv else 0
        self.tied = "output.weight" not in set(names)
        self.n_attention_wv = sum(_category(n) == "attn_v" for n in names)
        # the 70B shapes (8 heads per KV head) get more bits for attn_v
        self.is_70b = n_layer == 80 and (arch == "qwen2" or (arch == "llama" and n_head != n_head_kv))
        self.i_attention_wv = self.i_ffn_down = 0

    @staticmethod
    def order(names) -> list:
        """Indices of names in llama.cpp's processing order (its weights_map: layer number, then name)."""
        def key(i):
            m = re.match(r"blk\.(-?\d+)\.", names[i])
            return (int(m.group(1)) if m else -1, names[i].encode())
        return sorted(range(len(names)), key=key)

    def type_for(self, name: str, n_cols: int, t: int) -> int:
        r, cat, falcon = self.recipe, _category(name), self.arch == "falcon"

        def more_bits(i, n):  # the first and last eighth of the layers, and every third one between
            return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2

        if cat == "output" or (self.tied and cat == "token_embd"):
            if falcon or n_cols % _block(t)[0]:
                return Q8_0
            return t if t == Q8_0 else Q6_K
        if cat == "token_embd":
            return t
        if cat == "attn_v":
            i, n = self.i_attention_wv, self.n_attention_wv
            self.i_attention_wv += 1
            if r == "q2_k":
                t = Q4_K if self.n_gqa >= 4 else Q3_K
            elif r == "q3_k_m":
                t = Q5_K if i < 2 else Q4_K
            elif r == "q3_k_l":
                t = Q5_K
            elif r in ("q4_k_m", "q5_k_m") and more_bits(i, n):
                t = Q6_K
            elif r == "q4_k_s" and i < 4:
                t = Q5_K
            if self.is_70b and t in (Q3_K, Q4_K):
                t = Q5_K
            return t
        if cat == "ffn_down":
            i, n = self.i_ffn_down, self.n_layer
            self.i_ffn_down += 1
            if r == "q2_k":
                t = Q3_K
            elif r == "q3_k_m":
                t = Q5_K if i < n // 16 else Q4_K if not falcon or more_bits(i, n) else Q3_K
            elif r == "q3_k_l":
                t = Q4_K if falcon else Q5_K
            elif r == "q4_k_m":
                if falcon:
                    t = Q6_K if i < n // 16 else Q5_K if more_bits(i, n) else Q4_K
                elif more_bits(i, n):
                    t = Q6_K
            elif r == "q5_k_m" and more_bits(i, n):
                t = Q6_K
            elif r == "q4_k_s" and not falcon and i < n // 8:
                t = Q5_K
            return t
        if cat == "attn_output":
            if not falcon:
                t = {"q2_k": Q3_K, "q3_k_m": Q4_K, "q3_k_l": Q5_K}.get(r, t)
            elif r == "q3_k_l":
                t = Q4_K
            return t
        return t  # attn_q, attn_k, ffn_up, ffn_gate, other: no rule for these recipes (attn_qkv is attn_v above)


def plan_types(tensors, recipe: str, *, arch: str, hparams: dict, leave_output: bool = False,
               token_embedding_type: int | None = None, pure: bool | None = None) -> list:
    """[(type, note)] for tensors [(name, shape, src_type)] (in their order) at `recipe`; hparams holds n_layer,
    n_head, n_head_kv (for the mixture). pure=None: the recipe's default (see RECIPES)."""
    file_type, target, mixed = RECIPES[recipe]
    names = [t[0] for t in tensors]
    tied = "output.weight" not in names and "token_embd.weight" in names
    mixture = None
    if (mixed if pure is None else not pure) and target not in (F32, F16):
        if hparams.get("n_expert"):
            raise ValueError(f"{recipe}: the per-tensor mixture for mixture-of-experts models is not implemented; "
                             f"pass --pure (pure=True) for one type everywhere")
        mixture = Mixture(recipe, names, arch=arch, n_layer=int(hparams["n_layer"]), n_head=int(hparams["n_head"]),
                          n_head_kv=int(hparams["n_head_kv"]))
    plan = [None] * len(tensors)
    for i in Mixture.order(names):
        name, shape, src = tensors[i]
        plan[i] = choose_type(name, shape, src, target, tied=tied, leave_output=leave_output,
                              token_embedding_type=token_embedding_type, mixture=mixture)
    return plan


def quantize_tensor(values: np.ndarray, ggml_type: int) -> np.ndarray:
    """float32 [..., n_cols] -> the bytes of ggml_type as GGUF stores them: float32/float16 arrays of the same
    shape, or uint8 [..., row_bytes] for a block type. The gguf package's numpy reference quantizers, or for Q5_x
    and the K-quants pyinfer's C++ ones (rows in parallel); all give ggml's bytes."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if ggml_type in _CPP_TYPES:
        from . import _ext
        rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
        raw = _ext.kernels.quantize("ref", rows, ggml_type)  # the same generic code on every ISA
        return raw.reshape(values.shape[:-1] + (raw.shape[-1],))
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    return quantize(values, GGMLQuantizationType(ggml_type))


def dequantize_tensor(data: np.ndarray, ggml_type: int) -> np.ndarray:
    """Inverse of quantize_tensor: float32 [..., n_cols]."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    return np.asarray(dequantize(data, GGMLQuantizationType(ggml_type)), dtype=np.float32)


def error_stats(ref: np.ndarray, approx: np.ndarray) -> tuple:
    """(max |approx - ref|, SQNR in dB = 10 log10(sum ref^2 / sum (approx - ref)^2); inf when exact)."""
    ref, approx = np.asarray(ref).ravel(), np.asarray(approx).ravel()
    max_abs = noise = signal = 0.0
    # in float64, 64K values at a time (cache-sized: several times faster than whole-array temporaries), summed by
    # numpy itself: BLAS dot is slower still, its threads fighting the quantizer's OpenMP ones
    for i in range(0, ref.size, 1 << 16):
        r = ref[i:i + (1 << 16)].astype(np.float64)
        e = approx[i:i + (1 << 16)] - r
        max_abs = max(max_abs, float(np.max(np.abs(e))))
        noise += float(np.sum(e * e))
        signal += float(np.sum(r * r))
    sqnr = math.inf if noise == 0.0 else (10.0 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return max_abs, sqnr


# ---------------------------------------------------------------------------------------------------------------
# Sources: name, shape, type and values of every tensor, plus the metadata to write
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class _SourceTensor:
    name: str
    shape: tuple  # numpy order: (n_rows, n_cols)
    type: int  # GGML type id as stored in the source
    values: object  # () -> float32 array of `shape`
    raw: object  # () -> the stored bytes, for a copy without requantizing


class _HFSource:
    """A HF GPT-2 folder, presented as convert_hf_to_gguf.py would write it."""

    def __init__(self, folder: Path):
        from . import hf_checkpoint
        self.folder = folder
        self.arch = "gpt2"
        self.hp, tensors = hf_checkpoint.load_gpt2(folder)
        self.tensors = []
        for name, arr in tensors.items():
            t = F16 if arr.dtype == np.float16 else F32
            self.tensors.append(_SourceTensor(name, tuple(arr.shape), t,
                                              lambda a=arr: np.asarray(a, dtype=np.float32), lambda a=arr: a))

    def mixture_hparams(self) -> dict:
        return {"n_layer": self.hp["n_layer"], "n_head": self.hp["n_head"], "n_head_kv": self.hp["n_head"]}

    def write_metadata(self, w, file_type: int) -> None:
        import gguf
        hp = self.hp
        n_params = sum(int(np.prod(t.shape)) for t in self.tensors)
        w.add_type("model")
        w.add_name(self.folder.resolve().name)
        w.add_size_label(gguf.size_label(n_params, 0, 0, 0))
        w.add_block_count(hp["n_layer"])
        w.add_context_length(hp["n_ctx_train"])
        w.add_embedding_length(hp["n_embd"])
        w.add_feed_forward_length(hp["n_ff"])
        w.add_head_count(hp["n_head"])
        w.add_layer_norm_eps(hp["norm_eps"])
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        tokens, types = self._vocab()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        # merges, bos/eos/... ids and add_*_token flags exactly as convert_hf_to_gguf.py reads them
        special = gguf.SpecialVocab(self.folder, load_merges=True, n_vocab=len(tokens))
        if not special.merges:
            raise ValueError(f"{self.folder}: no BPE merges found (merges.txt or tokenizer.json)")
        special.add_to_gguf(w, quiet=True)

    def _vocab(self) -> tuple:
        """(tokens, token types) for ids 0..n_vocab-1 as convert_hf_to_gguf.py lists them: byte-level strings,
        special tokens as their text (CONTROL; non-special added tokens USER_DEFINED), ids without a token as
        "[PAD<id>]" (UNUSED)."""
        import gguf
        from .tokenizer import BPETokenizer, bytes_to_unicode

        tok = BPETokenizer.from_dir(self.folder)
        self.pre = _LLAMA_CPP_PRE.get(tok.pre, tok.pre)
        n_vocab = self.hp["n_vocab"]
        if tok.n_vocab > n_vocab:
            raise ValueError(f"{self.folder}: the tokenizer has {tok.n_vocab} tokens, more than the model's "
                             f"vocab_size {n_vocab}")
        byte_char = bytes_to_unicode()
        literal = {i: gguf.TokenType.CONTROL for i in tok.special_tokens.values()}
        literal.update({i: gguf.TokenType.USER_DEFINED for i in getattr(tok, "user_defined_tokens", {}).values()})
        tokens, types = [], []
        for i in range(n_vocab):
            if i in literal:  # stored as their text, not byte-encoded
                tokens.append(tok.token_bytes(i).decode("utf-8"))
                types.append(int(literal[i]))
                continue
            try:
                b = tok.token_bytes(i) if i < tok.n_vocab else None
            except ValueError:  # an id with no token
                b = None
            if b is None:
                tokens.append(f"[PAD{i}]")
                types.append(int(gguf.TokenType.UNUSED))
            else:
                tokens.append("".join(byte_char[x] for x in b))
                types.append(int(gguf.TokenType.NORMAL))
        return tokens, types


class _GGUFSource:
    """A GGUF file: its tensors (dequantized on demand) and its metadata, copied."""

    def __init__(self, path: Path):
        self.path = path
        self.reader = gguf_file.read_gguf(path)
        if self.reader.byte_order != "I":
            raise ValueError(f"{path}: big-endian GGUF files are not supported")
        self.meta = gguf_file.read_metadata(self.reader, path)
        self.arch = self.meta.get("general.architecture")
        if not isinstance(self.arch, str):
            raise ValueError(f"{path}: metadata 'general.architecture' is missing")
        self.tensors = [
            _SourceTensor(t.name, gguf_file.tensor_shape(t), int(t.tensor_type),
                          lambda t=t: gguf_file.tensor_to_float(t, np.float32), lambda t=t: gguf_file.tensor_raw(t))
            for t in self.reader.tensors]

    def mixture_hparams(self) -> dict:
        """n_layer, n_head, n_head_kv as llama.cpp reads them (the first layer's head counts when per layer);
        only the K-quant / q5 mixtures use them."""
        def first(key, default=None):
            v = self.meta.get(f"{self.arch}.{key}", default)
            return v[0] if isinstance(v, (list, tuple)) and v else v
        n_head = first("attention.head_count", 0) or 0
        hp = {"n_layer": first("block_count", 0) or 0, "n_head": n_head,
              "n_head_kv": first("attention.head_count_kv", n_head)}
        if (first("expert_count", 0) or 0) > 1:
            hp["n_expert"] = first("expert_count")
        return hp

    def write_metadata(self, w, file_type: int) -> None:
        import gguf
        from gguf import GGUFValueType
        for key, f in self.reader.fields.items():
            if key.startswith("GGUF.") or key in _NOT_COPIED:
                continue
            vtype = GGUFValueType(f.types[0])
            value = self.meta[key]
            if vtype == GGUFValueType.ARRAY:
                if len(f.types) > 2:
                    raise ValueError(f"{self.path}: metadata '{key}' is an array of arrays, which is not supported")
                if not value:
                    continue  # GGUFWriter cannot write an empty array
                w.add_key_value(key, value, vtype, sub_type=GGUFValueType(f.types[-1]))
            else:
                w.add_key_value(key, value, vtype)
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)


# ---------------------------------------------------------------------------------------------------------------
# Quantize
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class TensorReport:
    name: str
    shape: tuple  # numpy order (n_rows, n_cols)
    src_type: int
    type: int
    n_bytes: int  # as written
    max_abs_err: float  # vs the source values
    sqnr_db: float  # inf when exact
    note: str = ""


@dataclass
class QuantizeReport:
    input: str
    output: str
    type: str
    tensors: list = field(default_factory=list)
    src_bytes: int = 0  # tensor data of the source as stored
    file_bytes: int = 0  # size of the written file

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self.tensors)


def _open_source(path: Path):
    if path.is_dir():
        return _HFSource(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    return _GGUFSource(path)


def quantize_model(src, dst, type: str = "q8_0", *, leave_output_tensor: bool = False,
                   token_embedding_type: str | None = None, pure: bool | None = None,
                   progress: bool = True) -> QuantizeReport:
    """Write the model at `src` (HF GPT-2 folder or GGUF file) to the GGUF file `dst` with 2-D weights at recipe
    `type` (a key of RECIPES: "f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m",
    "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"); see choose_type and Mixture for the per-tensor
    types. pure=True gives every matrix the recipe's type (llama-quantize --pure), pure=False applies the mixture
    to q4_0/q4_1 too; None: pure for f32..q4_1, the mixture for the others. Written to a temporary file beside dst
    and renamed at the end, so a failure leaves no partial file. Returns the per-tensor report."""
    import gguf

    recipe = _parse_recipe(type)
    file_type = RECIPES[recipe][0]
    tok_type = None if token_embedding_type is None else _parse_type(token_embedding_type, "token_embedding_type")
    src, dst = Path(os.fspath(src)).expanduser(), Path(os.fspath(dst)).expanduser()
    if dst.is_dir():
        raise ValueError(f"output {dst} is a directory; give a file name such as {dst / 'model.gguf'}")
    source = _open_source(src)
    types = plan_types([(t.name, t.shape, t.type) for t in source.tensors], recipe, arch=source.arch,
                       hparams=source.mixture_hparams(), leave_output=leave_output_tensor,
                       token_embedding_type=tok_type, pure=pure)
    plan = [(t, ty, note) for t, (ty, note) in zip(source.tensors, types)]
    report = QuantizeReport(str(src), str(dst), recipe,
                            src_bytes=sum(_nbytes(t.shape, t.type) for t in source.tensors))

    fd, tmp = tempfile.mkstemp(dir=dst.parent if str(dst.parent) else ".", prefix=dst.name + ".", suffix=".partial")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, source.arch)
        source.write_metadata(w, file_type)
        for t, ty, _ in plan:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t.shape, ty),
                              raw_dtype=gguf.GGMLQuantizationType(ty))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        bar = _progress_bar(sum(int(np.prod(t.shape)) for t in source.tensors), progress)
        for t, ty, note in plan:
            bar.set_postfix_str(t.name, refresh=False)
            if ty == t.type:  # same type: the bytes as they are (for F32/F16 quantize_tensor would copy them too)
                data, max_abs, sqnr = np.ascontiguousarray(t.raw()), 0.0, math.inf
            else:
                values = t.values()
                data = quantize_tensor(values, ty)
                max_abs, sqnr = error_stats(values, dequantize_tensor(data, ty))
            w.write_tensor_data(np.ascontiguousarray(data))
            report.tensors.append(TensorReport(t.name, t.shape, t.type, ty, int(data.nbytes), max_abs, sqnr, note))
            bar.update(int(np.prod(t.shape)))
        bar.close()
        w.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the output is an ordinary file
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    report.file_bytes = dst.stat().st_size
    return report


def _parse_type(name, what) -> int:
    t = GGML_TYPES.get(str(name).lower())
    if t is None:
        raise ValueError(f"{what} {name!r} is not supported (supported: {', '.join(GGML_TYPES)})")
    return t


def _parse_recipe(name) -> str:
    r = str(name).lower()
    if r not in RECIPES:
        raise ValueError(f"type {name!r} is not supported (supported: {', '.join(RECIPES)})")
    return r


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="quantizing", unit="w", unit_scale=True, disable=not enabled, file=sys.stderr,
                leave=False)


def format_report(report: QuantizeReport) -> str:
    """The per-tensor table (name, shape, type, max abs error, SQNR) and the totals, as printed by the CLI."""
    rows = []
    for t in report.tensors:
        shape = "x".join(map(str, t.shape))
        ty = _type_name(t.type) if t.type == t.src_type else f"{_type_name(t.src_type)}->{_type_name(t.type)}"
        sqnr = "exact" if math.isinf(t.sqnr_db) and t.sqnr_db > 0 else f"{t.sqnr_db:.2f}"
        rows.append((t.name, shape, ty, f"{t.max_abs_err:.3e}", sqnr, t.note))
    head = ("tensor", "shape", "type", "max|err|", "SQNR dB", "")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    fmt = lambda r: "  ".join(c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(r[:5], widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) + (f"  {r[5]}" if r[5] else "") for r in rows]
    mb = lambda n: n / 2 ** 20
    bpw = 8 * report.n_bytes / max(report.n_params, 1)
    lines.append(f"{len(report.tensors)} tensors, {report.n_params:,} parameters: {mb(report.src_bytes):.2f} MiB -> "
                 f"{mb(report.n_bytes):.2f} MiB of tensor data ({bpw:.2f} bits per weight); "
                 f"{report.output}: {mb(report.file_bytes):.2f} MiB, type {report.type}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line (`pyinfer quantize`, tools/quantize.py)
# ---------------------------------------------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("input", metavar="INPUT", help="Hugging Face GPT-2 folder or GGUF file")
    p.add_argument("output", metavar="OUTPUT", help="GGUF file to write")
    p.add_argument("--type", required=True, type=str.lower, choices=tuple(RECIPES),
                   help="type of the 2-D weights (norms, biases and position embeddings stay F32); q5_x and the "
                        "K-quant recipes mix types per tensor as llama-quantize does")
    p.add_argument("--pure", action="store_true",
                   help="no per-tensor mixture: every 2-D weight at --type's type (as llama-quantize --pure)")
    p.add_argument("--leave-output-tensor", action="store_true",
                   help="keep the output matrix (the token embedding when tied) as in the source")
    p.add_argument("--token-embedding-type", type=str.lower, choices=tuple(GGML_TYPES), default=None,
                   metavar="TYPE", help="type of token_embd.weight (default: --type)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args) -> int:
    """Handler for parsed arguments: quantize, then print the report to stdout."""
    report = quantize_model(args.input, args.output, args.type, leave_output_tensor=args.leave_output_tensor,
                            token_embedding_type=args.token_embedding_type, pure=True if args.pure else None,
                            progress=not args.no_progress)
    print(format_report(report), flush=True)
    return 0
