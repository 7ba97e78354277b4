"""Tiny valid model files for the bad-file corpus and the fuzz harness: a 1-layer GPT-2 GGUF (byte-level BPE vocab of
260 tokens, f32 + one q8_0 matrix, ~70 KB), a 1-layer Llama GGUF with an SPM vocabulary, and a small safetensors file.
Each is small so that a parse takes milliseconds and a mutation is likely to land in a header field.
Not a model of anything: the weights are seeded random numbers.
"""
import json
import struct

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.quants import quantize as gguf_quantize

from pyinfer.tokenizer import bytes_to_unicode

GPT2_HP = dict(n_vocab=260, n_embd=32, n_head=2, n_layer=1, n_ff=64, n_ctx_train=32)
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]


def gpt2_vocab():
    """(tokens, merges): the 256 byte tokens in GPT-2's byte order, then one token per merge."""
    tokens = list(bytes_to_unicode().values())
    tokens += ["Ġt", "he", "Ġthe", "in"]
    return tokens, list(MERGES)


def gpt2_tensors(hp=GPT2_HP, seed=0):
    """{GGUF name: float32 array in numpy (n_rows, n_cols) order} of a GPT-2 with hyperparameters hp."""
    rng = np.random.default_rng(seed)
    C, V, F, P = hp["n_embd"], hp["n_vocab"], hp["n_ff"], hp["n_ctx_train"]
    w = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float32)
    t = {"token_embd.weight": w(V, C), "position_embd.weight": w(P, C)}
    for i in range(hp["n_layer"]):
        b = f"blk.{i}."
        t.update({b + "attn_norm.weight": np.ones(C, np.float32), b + "attn_norm.bias": w(C),
                  b + "attn_qkv.weight": w(3 * C, C), b + "attn_qkv.bias": w(3 * C),
                  b + "attn_output.weight": w(C, C), b + "attn_output.bias": w(C),
                  b + "ffn_norm.weight": np.ones(C, np.float32), b + "ffn_norm.bias": w(C),
                  b + "ffn_up.weight": w(F, C), b + "ffn_up.bias": w(F),
                  b + "ffn_down.weight": w(C, F), b + "ffn_down.bias": w(C)})
    t["output_norm.weight"] = np.ones(C, np.float32)
    t["output_norm.bias"] = w(C)
    return t


def write_gpt2_gguf(path, hp=GPT2_HP, tokens=None, merges=None, tensors=None, meta=None, drop=(), q8_0=True):
    """A tiny GPT-2 GGUF at `path`; tokens/merges/tensors/meta override the defaults (meta values: (value, type)
    or a plain str/int), `drop` names tensors to leave out. blk.0.ffn_up.weight is Q8_0 unless q8_0=False."""
    t_default, m_default = gpt2_vocab()
    tokens = t_default if tokens is None else tokens
    merges = m_default if merges is None else merges
    tensors = gpt2_tensors(hp) if tensors is None else tensors
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_name("tiny")
    w.add_context_length(hp["n_ctx_train"])
    w.add_embedding_length(hp["n_embd"])
    w.add_feed_forward_length(hp["n_ff"])
    w.add_block_count(hp["n_layer"])
    w.add_head_count(hp["n_head"])
    w.add_layer_norm_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    for key, v in (meta or {}).items():
        if isinstance(v, tuple):
            w.add_key_value(key, v[0], v[1], sub_type=v[2] if len(v) > 2 else None)
        elif isinstance(v, str):
            w.add_string(key, v)
        else:
            w.add_uint32(key, v)
    for name, a in tensors.items():
        if name in drop:
            continue
        if q8_0 and name == "blk.0.ffn_up.weight":
            w.add_tensor(name, gguf_quantize(a, QT.Q8_0), raw_dtype=QT.Q8_0)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def spm_fields(n=8, scores=None, types=None):
    """tokenizer.* fields of a small SentencePiece ("llama") vocabulary, as load_gguf returns them."""
    tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab"][:n]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [-float(i) for i in range(n)] if scores is None else scores,
            "tokenizer.ggml.token_type": [2, 3, 3] + [1] * (n - 3) if types is None else types}


ST_TENSORS = {"a": ("F32", (4, 8)), "b": ("F16", (16,)), "c": ("I32", (2, 3))}


def safetensors_bytes(header=None, data=None, pad_header_to=None):
    """A safetensors file's bytes: header (dict, or raw bytes) and data; the defaults are three small tensors."""
    if header is None:
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, (dt, shape) in ST_TENSORS.items():
            n = int(np.prod(shape)) * {"F32": 4, "F16": 2, "I32": 4}[dt]
            header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
        data = bytes(range(256)) * (off // 256 + 1)
        data = data[:off]
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad_header_to:
        raw = raw + b" " * (pad_header_to - len(raw))
    return struct.pack("<Q", len(raw)) + raw + (data or b"")
