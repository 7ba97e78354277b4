"""Hugging Face checkpoint folders -> (hyperparameters, named tensors) for the C++ forward pass.
Reads config.json and safetensors files memory-mapped (a tensor is a view of the file unless its layout must
change: HF's GPT-2 Conv1D stores [in, out] and the kernels want [out, in]); names follow GGUF's convention
(`blk.N.attn_qkv.weight`) so every loader feeds the model the same way. Tokenizers are loaded elsewhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .gguf_file import advise_huge_pages

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path) -> dict:
    """{name: numpy array} viewing a memory map of `path` (read-only). BF16 becomes float32 (a copy)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = int.from_bytes(head, "little")
        if n <= 0 or 8 + n > size:
            raise ValueError(f"{path}: corrupt safetensors header length {n} (file is {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path}: corrupt safetensors header: {e}") from None
    data_start = 8 + n
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header: the header is not a JSON object")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    advise_huge_pages(mm)
    out, ranges = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise ValueError(f"{path}: tensor '{name}': header entry is not an object")
        dt = _ST_DTYPES.get(info.get("dtype")) if isinstance(info.get("dtype"), str) else None
        if dt is None:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"{path}: tensor '{name}' has a bad shape {shape!r:.80} (a list of sizes >= 0)")
        if (not isinstance(offsets, list) or len(offsets) != 2 or
                not all(type(x) is int for x in offsets)):
            raise ValueError(f"{path}: tensor '{name}' has bad data_offsets {offsets!r:.80} (a [begin, end] pair)")
        shape, (begin, end) = tuple(shape), offsets
        nbytes = np.dtype(dt).itemsize
        for d in shape:  # Python ints: a product past int64 cannot wrap to a small size
            nbytes *= d
        if begin < 0 or end - begin != nbytes or data_start + end > size:
            raise ValueError(f"{path}: tensor '{name}' data [{begin}, {end}) does not fit its shape {shape} "
                             f"or the file ({size} bytes): the file is truncated or corrupt")
        ranges.append((begin, end, name))
        arr = mm[data_start + begin:data_start + end].view(dt).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    ranges.sort()
    for (_, end_a, a), (begin_b, end_b, b) in zip(ranges, ranges[1:]):
        if begin_b < end_a and end_b > begin_b:
            raise ValueError(f"{path}: tensor '{b}' data at [{begin_b}, {end_b}) overlaps tensor '{a}': the file is "
                             "corrupt")
    return out


def read_checkpoint_tensors(folder: Path) -> dict:
    """All tensors of a HF folder: model.safetensors or the shards listed in model.safetensors.index.json."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.exists():
        return read_safetensors(single)
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out = {}
        for s in shards:
            out.update(read_safetensors(folder / s))
        return out
    if (folder / "pytorch_model.bin").exists():
        raise ValueError(f"{folder}: only pytorch_model.bin found; pyinfer reads safetensors. Convert with "
                         "transformers: model.save_pretrained(folder, safe_serialization=True)")
    raise FileNotFoundError(f"{folder}: no model.safetensors (or model.safetensors.index.json) in the folder")


def read_config(folder: Path) -> dict:
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    try:
        return json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ValueError(f"{cfg_path}: not valid JSON: {e}") from None


def _convert(arr: np.ndarray, dtype: str | None, matrix: bool) -> np.ndarray:
    """Vectors are float32 always; matrices keep their stored float type unless dtype asks for f32/f16."""
    want = np.float32 if (not matrix or dtype == "f32") else np.float16 if dtype == "f16" else None
    if want is None:
        want = arr.dtype if arr.dtype in (np.float32, np.float16) else np.float32
    return np.ascontiguousarray(arr, dtype=want)


def load_gpt2(folder, dtype: str | None = None):
    """(hparams, tensors) of a HF GPT-2 folder. Raises ValueError listing every missing/misshapen tensor."""
    folder = Path(folder)
    cfg = read_config(folder)
    if cfg.get("model_type") != "gpt2":
        raise ValueError(f"{folder}/config.json: model_type {cfg.get('model_type')!r} is not supported "
                         "(supported: gpt2)")
    act = cfg.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{folder}/config.json: activation_function {act!r} is not supported (GPT-2 uses gelu_new)")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("scale_attn_weights") is False:
        raise ValueError(f"{folder}/config.json: non-default attention scaling is not supported")
    C = int(cfg["n_embd"])
    hp = dict(n_vocab=int(cfg["vocab_size"]), n_ctx_train=int(cfg.get("n_positions", cfg.get("n_ctx", 1024))),
              n_embd=C, n_head=int(cfg["n_head"]), n_layer=int(cfg["n_layer"]),
              n_ff=int(cfg.get("n_inner") or 4 * C), norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)))
    V, F, P = hp["n_vocab"], hp["n_ff"], hp["n_ctx_train"]

    raw = read_checkpoint_tensors(folder)
    raw = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in raw.items()}
    problems, tensors = [], {}

    def take(src, dst, shape, transpose=False, matrix=True):
        a = raw.get(src)
        if a is None:
            problems.append(f"missing tensor '{src}'")
            return
        want = shape[::-1] if transpose else shape
        if tuple(a.shape) != tuple(want):
            problems.append(f"tensor '{src}': expected shape {tuple(want)}, got {tuple(a.shape)}")
            return
        tensors[dst] = _convert(a.T if transpose else a, dtype, matrix)

    take("wte.weight", "token_embd.weight", (V, C))
    take("wpe.weight", "position_embd.weight", (P, C))
    for i in range(hp["n_layer"]):
        h, b = f"h.{i}.", f"blk.{i}."
        for src, dst, n in (("ln_1", "attn_norm", C), ("ln_2", "ffn_norm", C)):
            take(h + src + ".weight", b + dst + ".weight", (n,), matrix=False)
            take(h + src + ".bias", b + dst + ".bias", (n,), matrix=False)
        # Conv1D weights are [in, out]; the kernels take [out, in]
        for src, dst, n_out, n_in in (("attn.c_attn", "attn_qkv", 3 * C, C), ("attn.c_proj", "attn_output", C, C),
                                      ("mlp.c_fc", "ffn_up", F, C), ("mlp.c_proj", "ffn_down", C, F)):
            take(h + src + ".weight", b + dst + ".weight", (n_out, n_in), transpose=True)
            take(h + src + ".bias", b + dst + ".bias", (n_out,), matrix=False)
    take("ln_f.weight", "output_norm.weight", (C,), matrix=False)
    take("ln_f.bias", "output_norm.bias", (C,), matrix=False)
    if "lm_head.weight" in raw and not cfg.get("tie_word_embeddings", True):
        take("lm_head.weight", "output.weight", (V, C))
    if problems:
        where = folder / "model.safetensors"
        raise ValueError(f"{where}: {len(problems)} problem(s) with the checkpoint's tensors "
                         f"(config says n_layer={hp['n_layer']}, n_embd={C}, n_vocab={V}):\n  - "
                         + "\n  - ".join(problems))
    return hp, tensors


def _rope_theta(cfg: dict, where) -> float:
    """rope_theta from config.json (transformers 5 nests it in rope_parameters); scaled RoPE is refused."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind not in (None, "default"):
        raise ValueError(f"{where}: rope scaling {kind!r} is not supported")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _rope_thetas(cfg: dict, where) -> tuple:
    """(global, sliding-window) rope_theta of a Gemma 3 config: transformers 5 nests them per layer type in
    rope_parameters; older configs have rope_theta and rope_local_base_freq."""
    params = cfg.get("rope_parameters") or {}
    full, local = params.get("full_attention"), params.get("sliding_attention")
    for p in (full, local):
        if p and p.get("rope_type", "default") != "default":
            raise ValueError(f"{where}: rope scaling {p.get('rope_type')!r} is not supported")
    g = float((full or {}).get("rope_theta", cfg.get("rope_theta", 1000000.0)))
    s = float((local or {}).get("rope_theta", cfg.get("rope_local_base_freq", 10000.0)))
    return g, s


def load_llama(folder, dtype: str | None = None, arch: str = "llama"):
    """(hparams, tensors) of a HF LlamaForCausalLM folder, or of the same family: Qwen2ForCausalLM (q/k/v biases),
    Qwen3ForCausalLM (per-head q/k RMSNorm), Gemma3ForCausalLM (arch "gemma3": q/k norms, norms after each block,
    GeGLU, embeddings scaled by sqrt(n_embd), sliding-window layers). nn.Linear weights are [out, in]: no
    transposes. Gemma's RMSNorm multiplies by (1 + w): its gains get the 1 added here, as llama.cpp's converter
    does, so that every RMSNorm of the forward pass is x * w."""
    folder = Path(folder)
    cfg = read_config(folder)
    where = folder / "config.json"
    gemma = arch == "gemma3"
    act_key, want_act = ("hidden_activation", "gelu_pytorch_tanh") if gemma else ("hidden_act", "silu")
    act = cfg.get(act_key) or (cfg.get("hidden_act") if gemma else None) or want_act
    if act != want_act:
        raise ValueError(f"{where}: {act_key} {act!r} is not supported ({arch} uses {want_act})")
    if cfg.get("mlp_bias"):
        raise ValueError(f"{where}: mlp_bias is not supported")
    if cfg.get("use_sliding_window") and not gemma:
        raise ValueError(f"{where}: use_sliding_window is not supported for {arch}")
    if cfg.get("attn_logit_softcapping"):
        raise ValueError(f"{where}: attn_logit_softcapping is not supported")
    C, H = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    Hkv = int(cfg.get("num_key_value_heads") or H)
    hd = int(cfg.get("head_dim") or C // H)
    hp = dict(n_vocab=int(cfg["vocab_size"]), n_ctx_train=int(cfg.get("max_position_embeddings", 2048)), n_embd=C,
              n_head=H, n_head_kv=Hkv, head_dim=hd, n_layer=int(cfg["num_hidden_layers"]),
              n_ff=int(cfg["intermediate_size"]), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
              rope_base=_rope_theta(cfg, where) if not gemma else _rope_thetas(cfg, where)[0], n_rot=hd,
              rope_neox=True)
    if gemma:
        n_layer = hp["n_layer"]
        types = cfg.get("layer_types")
        if types is None:
            pattern = int(cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6)))
            types = ["full_attention" if (l + 1) % pattern == 0 else "sliding_attention" for l in range(n_layer)]
        if len(types) != n_layer or any(t not in ("full_attention", "sliding_attention") for t in types):
            raise ValueError(f"{where}: layer_types should list {n_layer} of full_attention/sliding_attention")
        if cfg.get("sliding_window") and "sliding_attention" in types:
            hp.update(n_swa=int(cfg["sliding_window"]), swa_layers=[t == "sliding_attention" for t in types],
                      rope_base_swa=_rope_thetas(cfg, where)[1])
        hp["attn_scale"] = float(cfg.get("query_pre_attn_scalar", hd)) ** -0.5
        if cfg.get("final_logit_softcapping"):
            hp["logit_softcap"] = float(cfg["final_logit_softcapping"])
    V, F = hp["n_vocab"], hp["n_ff"]
    raw = read_checkpoint_tensors(folder)
    problems, tensors = [], {}
    qkv_bias = arch == "qwen2" or bool(cfg.get("attention_bias"))

    def take(src, dst, shape, matrix=True, required=True, shift=0.0):
        a = raw.get(src)
        if a is None:
            if required:
                problems.append(f"missing tensor '{src}'")
            return
        if tuple(a.shape) != tuple(shape):
            problems.append(f"tensor '{src}': expected shape {tuple(shape)}, got {tuple(a.shape)}")
            return
        t = _convert(a, dtype, matrix)
        tensors[dst] = t + np.float32(shift) if shift else t

    norm_shift = 1.0 if gemma else 0.0
    # (HF name, GGUF name) of each layer's RMSNorm gains
    norms = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")]
    if gemma:
        norms = [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "post_attention_norm"),
                 ("pre_feedforward_layernorm", "ffn_norm"), ("post_feedforward_layernorm", "post_ffw_norm")]
    take("model.embed_tokens.weight", "token_embd.weight", (V, C))
    for i in range(hp["n_layer"]):
        h, b = f"model.layers.{i}.", f"blk.{i}."
        for src, dst in norms:
            take(h + src + ".weight", b + dst + ".weight", (C,), matrix=False, shift=norm_shift)
        if arch in ("qwen3", "gemma3"):
            take(h + "self_attn.q_norm.weight", b + "attn_q_norm.weight", (hd,), matrix=False, shift=norm_shift)
            take(h + "self_attn.k_norm.weight", b + "attn_k_norm.weight", (hd,), matrix=False, shift=norm_shift)
        for src, dst, n_out, n_in in (("self_attn.q_proj", "attn_q", H * hd, C), ("self_attn.k_proj", "attn_k", Hkv * hd, C),
                                      ("self_attn.v_proj", "attn_v", Hkv * hd, C), ("self_attn.o_proj", "attn_output", C, H * hd),
                                      ("mlp.gate_proj", "ffn_gate", F, C), ("mlp.up_proj", "ffn_up", F, C),
                                      ("mlp.down_proj", "ffn_down", C, F)):
            take(h + src + ".weight", b + dst + ".weight", (n_out, n_in))
            if src.startswith("self_attn") and not gemma:
                take(h + src + ".bias", b + dst + ".bias", (n_out,), matrix=False,
                     required=qkv_bias and src != "self_attn.o_proj")
    take("model.norm.weight", "output_norm.weight", (C,), matrix=False, shift=norm_shift)
    if not cfg.get("tie_word_embeddings", gemma):
        take("lm_head.weight", "output.weight", (V, C))
    if problems:
        raise ValueError(f"{folder}: {len(problems)} problem(s) with the checkpoint's tensors (config says "
                         f"n_layer={hp['n_layer']}, hidden_size={C}, vocab_size={V}):\n  - " + "\n  - ".join(problems))
    return hp, tensors


# model_type in config.json -> (our architecture name, loader)
LOADERS = {
    "gpt2": ("gpt2", load_gpt2),
    "llama": ("llama", load_llama),
    "qwen2": ("qwen2", lambda folder, dtype=None: load_llama(folder, dtype, "qwen2")),
    "qwen3": ("qwen3", lambda folder, dtype=None: load_llama(folder, dtype, "qwen3")),
    "gemma3_text": ("gemma3", lambda folder, dtype=None: load_llama(folder, dtype, "gemma3")),
}


def load_hf(folder, dtype: str | None = None):
    """(arch, hparams, tensors) of a supported HF folder; an unsupported model_type is named in the error."""
    cfg = read_config(Path(folder))
    mt = cfg.get("model_type")
    if mt not in LOADERS:
        raise ValueError(f"{folder}/config.json: model_type {mt!r} is not supported (supported: {', '.join(LOADERS)})")
    arch, loader = LOADERS[mt]
    hp, tensors = loader(folder, dtype=dtype)
    return arch, hp, tensors


def read_chat_template(folder) -> str | None:
    """The chat template of a HF folder: chat_template.jinja, else tokenizer_config.json's chat_template."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").exists():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.exists():
        try:
            t = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        except ValueError as e:
            raise ValueError(f"{cfg}: not valid JSON: {e}") from None
        if isinstance(t, list):  # named templates: take the default one
            t = next((x.get("template") for x in t if x.get("name") == "default"), None)
        return t if isinstance(t, str) else None
    return None


def is_hf_folder(path) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))
