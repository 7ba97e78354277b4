"""The Llama family in numpy, float64 throughout: the exact model of a GGUF file (llama, qwen2, qwen3, gemma3).
Reads the file with the `gguf` package (its own metadata reading, not pyinfer's), dequantizes every tensor with
gguf's numpy dequantizers to float64 and computes full-sequence logits without a KV cache, one function per block
in picoGPT's style. Deliberately slow and simple: no cache, no batching, no tokenizer.
"""
import numpy as np


def rms_norm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g  # [n, d] -> [n, d]


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, pos, base, n_rot, neox):
    """x [n_seq, n_heads, hd] rotated by pos * base^(-2i/n_rot) in its first n_rot dims: pairs (i, i + n_rot/2)
    (neox, HF's rotate_half) or (2i, 2i+1) (llama's permuted GGUF weights)."""
    half = n_rot // 2
    theta = pos[:, None] * base ** (-2.0 * np.arange(half) / n_rot)  # [n_seq, half]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]  # [n_seq, 1, half]
    x = x.copy()
    a, b = (x[..., :half], x[..., half:n_rot]) if neox else (x[..., 0:n_rot:2], x[..., 1:n_rot:2])
    a2, b2 = a * c - b * s, a * s + b * c
    if neox:
        x[..., :half], x[..., half:n_rot] = a2, b2
    else:
        x[..., 0:n_rot:2], x[..., 1:n_rot:2] = a2, b2
    return x


def attention(q, k, v, scale, window):
    """q [n, H, hd], k/v [n, Hkv, hd] -> [n, H * hd]: causal, grouped-query, keys within `window` if window > 0."""
    n, H, hd = q.shape
    group = H // k.shape[1]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    masked = (j > i) | ((i - j >= window) if window else False)  # [n, n]
    out = np.empty((n, H, hd))
    for h in range(H):
        s = q[:, h] @ k[:, h // group].T * scale  # [n, hd] @ [hd, n] -> [n, n]
        s[masked] = -np.inf
        out[:, h] = softmax(s) @ v[:, h // group]  # [n, n] @ [n, hd] -> [n, hd]
    return out.reshape(n, H * hd)


class LlamaFamilyOracle:
    """oracle = LlamaFamilyOracle("model.gguf"); oracle.logits(ids) -> float64 [len(ids), n_vocab]."""

    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(str(path))
        meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
        self.arch = a = meta["general.architecture"]
        if a not in ("llama", "qwen2", "qwen3", "gemma3"):
            raise ValueError(f"the oracle runs llama, qwen2, qwen3 and gemma3, not {a}")
        self.n_embd = meta[f"{a}.embedding_length"]
        self.n_layer = meta[f"{a}.block_count"]
        self.n_head = meta[f"{a}.attention.head_count"]
        self.n_head_kv = meta.get(f"{a}.attention.head_count_kv", self.n_head)
        self.head_dim = meta.get(f"{a}.attention.key_length", self.n_embd // self.n_head)
        self.n_rot = meta.get(f"{a}.rope.dimension_count", self.head_dim)
        self.eps = float(meta[f"{a}.attention.layer_norm_rms_epsilon"])
        self.base = float(meta.get(f"{a}.rope.freq_base", 10000.0))
        self.neox = a != "llama"  # llama.cpp's converter permutes llama's q/k rows only
        self.window, self.local = 0, [False] * self.n_layer
        self.scale = 1.0 / np.sqrt(self.head_dim)
        self.softcap = 0.0
        if a == "gemma3":
            self.window = meta.get("gemma3.attention.sliding_window", 0)
            pattern = meta.get("gemma3.attention.sliding_window_pattern", 6)
            if self.window:
                self.local = ([bool(p) for p in pattern] if isinstance(pattern, list) else
                              [l % pattern < pattern - 1 for l in range(self.n_layer)])
            self.base_local = float(meta.get("gemma3.rope.freq_base_swa", 10000.0))
            self.softcap = float(meta.get("gemma3.final_logit_softcapping", 0.0))
        self.w = {}
        for t in r.tensors:  # numpy order: (n_rows, n_cols) for a matrix
            shape = tuple(int(d) for d in reversed(list(t.shape)))
            raw = np.asarray(t.data)
            vals = raw if t.tensor_type.name in ("F32", "F16") else dequantize(raw, t.tensor_type)
            self.w[t.name] = np.asarray(vals, dtype=np.float64).reshape(shape)
        self.w.setdefault("output.weight", self.w["token_embd.weight"])  # tied head

    def _get(self, name):
        return self.w.get(name)

    def block(self, x, l, pos):
        w, p = self.w, f"blk.{l}."
        n, H, Hkv, hd = x.shape[0], self.n_head, self.n_head_kv, self.head_dim
        gemma = self.arch == "gemma3"
        h = rms_norm(x, w[p + "attn_norm.weight"], self.eps)  # [n, C]

        def proj(name):
            b = self._get(p + name + ".bias")
            y = h @ w[p + name + ".weight"].T  # [n, C] -> [n, out]
            return y + b if b is not None else y

        q = proj("attn_q").reshape(n, H, hd)
        k = proj("attn_k").reshape(n, Hkv, hd)
        v = proj("attn_v").reshape(n, Hkv, hd)
        if p + "attn_q_norm.weight" in w:  # qwen3, gemma3: per head
            q = rms_norm(q, w[p + "attn_q_norm.weight"], self.eps)
            k = rms_norm(k, w[p + "attn_k_norm.weight"], self.eps)
        base = self.base_local if self.local[l] else self.base
        q, k = rope(q, pos, base, self.n_rot, self.neox), rope(k, pos, base, self.n_rot, self.neox)
        att = attention(q, k, v, self.scale, self.window if self.local[l] else 0) @ w[p + "attn_output.weight"].T
        if self._get(p + "attn_output.bias") is not None:
            att = att + w[p + "attn_output.bias"]
        if gemma:
            att = rms_norm(att, w[p + "post_attention_norm.weight"], self.eps)
        x = x + att  # [n, C]
        h = rms_norm(x, w[p + "ffn_norm.weight"], self.eps)
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T  # [n, C] -> [n, F]
        f = ((gelu_tanh(g) if gemma else silu(g)) * u) @ w[p + "ffn_down.weight"].T  # [n, F] -> [n, C]
        if gemma:
            f = rms_norm(f, w[p + "post_ffw_norm.weight"], self.eps)
        return x + f

    def logits(self, ids):
        ids = np.asarray(ids)
        x = self.w["token_embd.weight"][ids]  # [n, C]
        if self.arch == "gemma3":
            x = x * np.sqrt(self.n_embd)
        pos = np.arange(len(ids), dtype=np.float64)
        for l in range(self.n_layer):
            x = self.block(x, l, pos)
        logits = rms_norm(x, self.w["output_norm.weight"], self.eps) @ self.w["output.weight"].T  # [n, V]
        if self.softcap:
            logits = self.softcap * np.tanh(logits / self.softcap)
        return logits
