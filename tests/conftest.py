"""Shared pytest fixtures: random-weight HF GPT-2 checkpoints (config.json + model.safetensors + GPT-2's real
tokenizer files), built once per session with transformers and cached by their parameters.
Imports neither pyinfer nor torch at module import time: tests that need them import them themselves.
"""
import json
import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # so tests can `import tolerances`, `import assets`, `from reference import ...`

# The tests that compare pyinfer with f32 oracles (HF, numpy, bit-for-bit decode vs recompute across engines) hold
# f32 tolerances, so they run the f32 KV cache; the default f16 cache is tested against it where it is chosen
# explicitly (kv_type="f16", tests/test_kv_f16.py) and the default itself in a subprocess without this variable.
os.environ.setdefault("PYINFER_KV_TYPE", "f32")


@pytest.fixture(scope="session", autouse=True)
def _run_outside_the_source_tree(tmp_path_factory):
    """Tests (and the `python -m pyinfer.cli` subprocesses they start) run from an empty folder, so `import pyinfer`
    finds the installed package, never the source checkout (which has no compiled extension in a fresh clone)."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


# Random init scale. HF's default (0.02) gives logits with std ~0.02*sqrt(n_embd) ~ 0.16 at n_embd=64: a near-uniform
# distribution where greedy argmax is decided by noise. 0.2 gives logit std ~1.5 and top-2 gaps far above f32 error.
INIT_RANGE = 0.2


def build_gpt2(folder, n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=0, dtype="float32", tie=True,
               init_range=INIT_RANGE):
    """Write a random-weight GPT-2 (n_vocab 50257) as a HF folder and return its path.

    Weights come from torch.manual_seed(seed) in f32, so the same arguments with a different dtype give the same
    weights rounded to that dtype. Layer-norm gains/biases and all linear biases are randomised too (HF's init
    makes them 1 and 0), so a loader that drops or swaps them is caught.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from assets import gpt2_tokenizer_files

    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    config = GPT2Config(vocab_size=50257, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        initializer_range=init_range, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith(".weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))  # gains around 1
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    model = model.to(torch_dtype)
    model.save_pretrained(folder)
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        raise RuntimeError(f"save_pretrained did not write {folder}/model.safetensors: {os.listdir(folder)}")
    # llama.cpp's convert_hf_to_gguf.py reads n_ctx for GPT-2; transformers 5 no longer writes it
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["n_ctx"] = n_positions
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    gpt2_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="session")
def make_gpt2(tmp_path_factory):
    """Factory: make_gpt2(n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=0, dtype="float32", tie=True) -> Path.

    Each distinct set of arguments is built once per session and then reused; treat the folder as read-only.
    """
    cache = {}

    def make(n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=0, dtype="float32", tie=True):
        key = (n_layer, n_embd, n_head, n_positions, seed, dtype, tie)
        if key not in cache:
            name = f"gpt2-l{n_layer}-e{n_embd}-h{n_head}-p{n_positions}-s{seed}-{dtype}-{'tied' if tie else 'untied'}"
            folder = tmp_path_factory.mktemp(name, numbered=True)
            cache[key] = build_gpt2(folder, n_layer, n_embd, n_head, n_positions, seed, dtype, tie)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def gpt2_small(make_gpt2):
    """Default random GPT-2: 2 layers, n_embd 64, 4 heads, n_ctx 128, n_vocab 50257, f32, tied head."""
    return make_gpt2()


@pytest.fixture(scope="session")
def gpt2_f16(make_gpt2):
    """gpt2_small's weights rounded to float16 and saved as such."""
    return make_gpt2(dtype="float16")


def build_llama(folder, n_layer=2, n_embd=96, n_head=6, n_head_kv=2, n_ff=160, n_positions=256, seed=0, tie=True,
                rope_theta=10000.0, init_range=INIT_RANGE):
    """Write a random-weight HF LlamaForCausalLM (GQA when n_head_kv < n_head) with GPT-2's tokenizer files
    (n_vocab 50257) and return its path. RMSNorm gains are randomised around 1."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from assets import gpt2_tokenizer_files

    config = LlamaConfig(vocab_size=50257, hidden_size=n_embd, intermediate_size=n_ff, num_hidden_layers=n_layer,
                         num_attention_heads=n_head, num_key_value_heads=n_head_kv, max_position_embeddings=n_positions,
                         rope_theta=rope_theta, tie_word_embeddings=tie, initializer_range=init_range,
                         bos_token_id=50256, eos_token_id=50256)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    gpt2_tokenizer_files(folder)
    return folder


@pytest.fixture(scope="session")
def make_llama(tmp_path_factory):
    """Factory like make_gpt2 for random HF Llama folders: make_llama(n_layer=2, ..., tie=True) -> Path."""
    cache = {}

    def make(**kwargs):
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            folder = tmp_path_factory.mktemp("llama", numbered=True)
            cache[key] = build_llama(folder, **kwargs)
        return cache[key]

    return make


def build_llama_family(folder, arch, n_layer=2, n_embd=96, n_head=6, n_head_kv=2, n_ff=160, n_positions=256,
                       seed=0, tie=True, head_dim=None, sliding_window=None, init_range=INIT_RANGE, **extra):
    """Write a random-weight HF Qwen2ForCausalLM / Qwen3ForCausalLM / Gemma3ForCausalLM (arch "qwen2", "qwen3",
    "gemma3") with GPT-2's tokenizer files (n_vocab 50257) and return its path. Every norm gain and bias is
    randomised (HF's init makes gains 1, Gemma's 0, and biases 0), so a loader that drops one is caught. Gemma 3:
    sliding_window (with extra layer_types / sliding_window_pattern) makes local layers, extra may set
    query_pre_attn_scalar, final_logit_softcapping, rope_parameters."""
    import torch
    import transformers

    from assets import gpt2_tokenizer_files

    common = dict(vocab_size=50257, hidden_size=n_embd, intermediate_size=n_ff, num_hidden_layers=n_layer,
                  num_attention_heads=n_head, num_key_value_heads=n_head_kv, max_position_embeddings=n_positions,
                  tie_word_embeddings=tie, initializer_range=init_range, bos_token_id=50256, eos_token_id=50256,
                  pad_token_id=0)
    if head_dim is not None:
        common["head_dim"] = head_dim
    if arch == "qwen2":
        config, cls = transformers.Qwen2Config(**common, **extra), transformers.Qwen2ForCausalLM
    elif arch == "qwen3":
        config, cls = transformers.Qwen3Config(**common, **extra), transformers.Qwen3ForCausalLM
    elif arch == "gemma3":
        if sliding_window is not None:
            extra["sliding_window"] = sliding_window
        config, cls = transformers.Gemma3TextConfig(**common, **extra), transformers.Gemma3ForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = cls(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # Gemma's gains are 1 + w: around 0 there, around 1 elsewhere
                p.copy_((0.0 if arch == "gemma3" else 1.0) + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    gpt2_tokenizer_files(folder)
    if arch == "gemma3":  # llama.cpp's Gemma 3 converter counts the vocabulary in tokenizer.json
        transformers.GPT2Tokenizer.from_pretrained(str(folder)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def make_llama_family(tmp_path_factory):
    """Factory: make_llama_family(arch, **kwargs) -> Path of a random HF Qwen2/Qwen3/Gemma3 folder (cached)."""
    cache = {}

    def make(arch, **kwargs):
        key = (arch, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            cache[key] = build_llama_family(tmp_path_factory.mktemp(arch, numbered=True), arch, **kwargs)
        return cache[key]

    return make
