"""GPT-2 in numpy, float64 throughout: the test oracle for logits and greedy text (picoGPT's structure).
Reads a HF GPT-2 folder (config.json + model.safetensors), or a GGUF file dequantized to float64 (Gpt2GgufOracle),
and computes full-sequence logits without a KV cache.
Deliberately slow and simple: no cache, no batching, no sampling beyond argmax, no tokenizer.
"""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def gelu(x):
    # tanh approximation, as in HF's "gelu_new" used by GPT-2
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def layer_norm(x, g, b, eps):
    mean = np.mean(x, axis=-1, keepdims=True)  # [n_seq, n_embd] -> [n_seq, 1]
    var = np.var(x, axis=-1, keepdims=True)  # [n_seq, n_embd] -> [n_seq, 1]
    return g * (x - mean) / np.sqrt(var + eps) + b  # [n_seq, n_embd] -> [n_seq, n_embd]


def linear(x, w, b):
    # HF Conv1D stores w as [n_in, n_out]
    return x @ w + b  # [n_seq, n_in] @ [n_in, n_out] -> [n_seq, n_out]


def ffn(x, c_fc, c_proj):
    a = gelu(linear(x, **c_fc))  # [n_seq, n_embd] -> [n_seq, n_ff]
    return linear(a, **c_proj)  # [n_seq, n_ff] -> [n_seq, n_embd]


def attention(q, k, v, mask):
    # q, k, v: [n_seq, head_dim]; mask: [n_seq, n_seq]
    scores = q @ k.T / np.sqrt(q.shape[-1]) + mask  # [n_seq, head_dim] @ [head_dim, n_seq] -> [n_seq, n_seq]
    return softmax(scores) @ v  # [n_seq, n_seq] @ [n_seq, head_dim] -> [n_seq, head_dim]


def mha(x, c_attn, c_proj, n_head):
    x = linear(x, **c_attn)  # [n_seq, n_embd] -> [n_seq, 3*n_embd]
    qkv = np.split(x, 3, axis=-1)  # [n_seq, 3*n_embd] -> 3 x [n_seq, n_embd]
    qkv_heads = [np.split(t, n_head, axis=-1) for t in qkv]  # 3 x [n_seq, n_embd] -> 3 x n_head x [n_seq, head_dim]
    n_seq = x.shape[0]
    mask = np.triu(np.full((n_seq, n_seq), -np.inf), k=1)  # [n_seq, n_seq], -inf above the diagonal
    heads = [attention(q, k, v, mask) for q, k, v in zip(*qkv_heads)]  # n_head x [n_seq, head_dim]
    x = np.hstack(heads)  # n_head x [n_seq, head_dim] -> [n_seq, n_embd]
    return linear(x, **c_proj)  # [n_seq, n_embd] -> [n_seq, n_embd]


def transformer_block(x, mlp, attn, ln_1, ln_2, n_head, eps):
    x = x + mha(layer_norm(x, **ln_1, eps=eps), **attn, n_head=n_head)  # [n_seq, n_embd] -> [n_seq, n_embd]
    x = x + ffn(layer_norm(x, **ln_2, eps=eps), **mlp)  # [n_seq, n_embd] -> [n_seq, n_embd]
    return x


def gpt2_forward(ids, params, n_head, eps):
    """Logits [n_seq, n_vocab] for token ids (list of int), float64."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"ids must be a non-empty 1-D sequence, got shape {ids.shape}")
    if len(ids) > params["wpe"].shape[0]:
        raise ValueError(f"{len(ids)} ids exceed n_ctx={params['wpe'].shape[0]}")
    x = params["wte"][ids] + params["wpe"][np.arange(len(ids))]  # [n_seq] -> [n_seq, n_embd]
    for block in params["blocks"]:
        x = transformer_block(x, **block, n_head=n_head, eps=eps)  # [n_seq, n_embd] -> [n_seq, n_embd]
    x = layer_norm(x, **params["ln_f"], eps=eps)  # [n_seq, n_embd] -> [n_seq, n_embd]
    return x @ params["lm_head"].T  # [n_seq, n_embd] @ [n_embd, n_vocab] -> [n_seq, n_vocab]


def load_params(folder):
    """(params, hparams) from a HF GPT-2 folder; weights cast to float64, nested as gpt2_forward expects."""
    folder = Path(folder)
    hparams = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    # keys appear as "h.0.attn.c_attn.weight" or "transformer.h.0....". A tied checkpoint (GPT-2's default) has no
    # lm_head.weight and the head is wte; an untied one (tie_word_embeddings=false) stores its own lm_head.weight.
    named = {}
    for key, value in tensors.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # not ".c_attn.bias"
            continue  # causal-mask buffers, not weights
        named[key.removeprefix("transformer.")] = value.astype(np.float64)

    def ln(prefix):
        return {"g": named[f"{prefix}.weight"], "b": named[f"{prefix}.bias"]}

    def lin(prefix):
        return {"w": named[f"{prefix}.weight"], "b": named[f"{prefix}.bias"]}

    # what plain GPT-2 means: tanh gelu, 1/sqrt(head_dim) scaling, no per-layer scaling or upcast reordering
    plain = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
             "scale_attn_by_inverse_layer_idx": (False,), "reorder_and_upcast_attn": (False,)}
    unsupported = {k: hparams[k] for k, ok in plain.items() if k in hparams and hparams[k] not in ok}
    if unsupported:
        raise ValueError(f"{folder / 'config.json'}: the oracle implements plain GPT-2 only, not {unsupported}")
    tied = hparams.get("tie_word_embeddings", True)
    n_layer = hparams["n_layer"]
    params = {
        "wte": named["wte.weight"],  # [n_vocab, n_embd]
        "wpe": named["wpe.weight"],  # [n_ctx, n_embd]
        "lm_head": named["wte.weight"] if tied else named["lm_head.weight"],  # [n_vocab, n_embd]
        "ln_f": ln("ln_f"),
        "blocks": [{
            "ln_1": ln(f"h.{i}.ln_1"),
            "attn": {"c_attn": lin(f"h.{i}.attn.c_attn"),  # w: [n_embd, 3*n_embd]
                     "c_proj": lin(f"h.{i}.attn.c_proj")},  # w: [n_embd, n_embd]
            "ln_2": ln(f"h.{i}.ln_2"),
            "mlp": {"c_fc": lin(f"h.{i}.mlp.c_fc"),  # w: [n_embd, n_ff]
                    "c_proj": lin(f"h.{i}.mlp.c_proj")},  # w: [n_ff, n_embd]
        } for i in range(n_layer)],
    }
    return params, hparams


class Gpt2Oracle:
    """Loads a folder once; `logits(ids)` -> [n_seq, n_vocab] float64, `greedy(ids, n)` -> n new ids."""

    def __init__(self, folder):
        self.params, self.hparams = load_params(folder)
        self.n_head = self.hparams["n_head"]
        self.eps = self.hparams.get("layer_norm_epsilon", 1e-5)

    def logits(self, ids):
        return gpt2_forward(ids, self.params, self.n_head, self.eps)

    def greedy(self, ids, n_new):
        ids = list(ids)
        out = []
        for _ in range(n_new):  # full recompute each step: no cache, by design
            next_id = int(np.argmax(self.logits(ids + out)[-1]))
            out.append(next_id)
        return out


def load_gguf_params(path):
    """(params, n_head, eps) from a GPT-2 GGUF file: every tensor dequantized to float64 by gguf's numpy code (the
    exact model the file holds), in gpt2_forward's layout (GGUF matrices are [n_out, n_in]; Conv1D is [n_in, n_out])."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    if meta["general.architecture"] != "gpt2":
        raise ValueError(f"{path}: load_gguf_params reads gpt2 files, not {meta['general.architecture']}")
    w = {}
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(list(t.shape)))  # numpy order: (n_rows, n_cols)
        raw = np.asarray(t.data)
        vals = raw if t.tensor_type.name in ("F32", "F16") else dequantize(raw, t.tensor_type)
        w[t.name] = np.asarray(vals, dtype=np.float64).reshape(shape)

    def ln(p):
        return {"g": w[f"{p}.weight"], "b": w[f"{p}.bias"]}

    def lin(p):
        return {"w": w[f"{p}.weight"].T, "b": w[f"{p}.bias"]}  # [n_out, n_in] -> [n_in, n_out]

    params = {
        "wte": w["token_embd.weight"], "wpe": w["position_embd.weight"],
        "lm_head": w.get("output.weight", w["token_embd.weight"]), "ln_f": ln("output_norm"),
        "blocks": [{"ln_1": ln(f"blk.{i}.attn_norm"),
                    "attn": {"c_attn": lin(f"blk.{i}.attn_qkv"), "c_proj": lin(f"blk.{i}.attn_output")},
                    "ln_2": ln(f"blk.{i}.ffn_norm"),
                    "mlp": {"c_fc": lin(f"blk.{i}.ffn_up"), "c_proj": lin(f"blk.{i}.ffn_down")}}
                   for i in range(int(meta["gpt2.block_count"]))],
    }
    return params, int(meta["gpt2.attention.head_count"]), float(meta["gpt2.attention.layer_norm_epsilon"])


class Gpt2GgufOracle(Gpt2Oracle):
    """Gpt2Oracle over a GGUF file's weights dequantized to float64: Gpt2GgufOracle("gpt2-q8_0.gguf").logits(ids)."""

    def __init__(self, path):
        self.params, self.n_head, self.eps = load_gguf_params(path)
        self.hparams = {"n_head": self.n_head}
