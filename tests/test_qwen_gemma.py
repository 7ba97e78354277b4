"""The Llama family beyond Llama: Qwen 2 (q/k/v biases), Qwen 3 (per-head q/k RMSNorm) and Gemma 3 (scaled
embeddings, (1 + w) norms before and after each block, q/k norms, GeGLU, sliding-window local layers with their own
RoPE base, optional logit soft-cap) on random-weight HF checkpoints made by the tests, against HF transformers in
f32; the KV cache (across the sliding window) against recompute; threads; and llama.cpp's converter -> GGUF ->
pyinfer and llama.cpp (llama-cpp-python) on the same file.
"""
import contextlib

import numpy as np
import pytest
import torch
import transformers

import pyinfer
from tolerances import KV_CACHE_VS_RECOMPUTE, LLAMA_CPP_GPT2_F32, MODEL_F32_VS_HF, assert_close

HF_CLASSES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
CASES = [
    ("qwen2", dict()),
    ("qwen2", dict(tie=False, n_head=4, n_head_kv=4, n_embd=64, seed=1)),
    ("qwen3", dict()),
    ("qwen3", dict(tie=False, head_dim=32, n_head=4, n_head_kv=1, seed=2)),
    # Gemma 3: 6 layers, the default pattern (layer 5 global), a window shorter than the sequence; the q.k scale as
    # llama.cpp takes it for every Gemma 3 but the 27B (query_pre_attn_scalar = head_dim, which GGUF does not store)
    ("gemma3", dict(n_layer=6, head_dim=32, sliding_window=16, query_pre_attn_scalar=32, seed=3)),
    ("gemma3", dict(n_layer=3, head_dim=24, sliding_window=8, layer_types=["sliding_attention", "full_attention",
                    "sliding_attention"], query_pre_attn_scalar=20, final_logit_softcapping=5.0, tie=False, seed=4,
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 100000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 500.0}})),
]


def hf_logits(arch, folder, ids):
    model = getattr(transformers, HF_CLASSES[arch]).from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def ids_for(n=60, seed=0):
    return [int(i) for i in np.random.default_rng(seed).integers(0, 50257, n)]


@pytest.mark.parametrize("arch,kwargs", CASES)
def test_logits_match_transformers(make_llama_family, arch, kwargs):
    folder = make_llama_family(arch, **kwargs)
    m = pyinfer.load(folder, n_threads=2)
    assert m.arch == arch
    ids = ids_for()
    assert_close(m.forward(ids), hf_logits(arch, folder, ids), MODEL_F32_VS_HF, f"{arch} {kwargs} vs transformers")


@pytest.mark.parametrize("arch,kwargs", [CASES[2], CASES[4], CASES[5]])
def test_kv_cache_and_threads(make_llama_family, arch, kwargs):
    """Decoding token by token (past the sliding window) gives the logits of one full forward pass; 1 and 2 threads
    agree bit for bit."""
    folder = make_llama_family(arch, **kwargs)
    ids = ids_for(50, seed=1)
    m1 = pyinfer.load(folder, n_threads=1)
    full = m1.forward(ids)
    m1.reset()
    steps = [m1.eval(ids[:5])] + [m1.eval([t]) for t in ids[5:]]
    assert_close(np.stack(steps), full[4:], KV_CACHE_VS_RECOMPUTE, f"{arch} KV cache vs recompute")
    assert np.array_equal(full, pyinfer.load(folder, n_threads=2).forward(ids)), "1 vs 2 threads"


def test_missing_qk_norm_is_named(make_llama_family, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(make_llama_family("qwen3"), bad)
    t = load_file(str(bad / "model.safetensors"))
    t.pop("model.layers.1.self_attn.k_norm.weight")
    save_file(t, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_norm\.weight"):
        pyinfer.load(bad)


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp's convert_hf_to_gguf.py -> GGUF -> pyinfer and llama.cpp
# ---------------------------------------------------------------------------------------------------------------

def convert(folder, out):
    from assets import llama_cpp_convert

    return llama_cpp_convert(folder, out, "f32")


@pytest.mark.parametrize("arch,kwargs", [CASES[0], CASES[3], CASES[4]])
def test_llama_cpp_converted_gguf(make_llama_family, tmp_path, arch, kwargs):
    llama_cpp = pytest.importorskip("llama_cpp")
    folder = make_llama_family(arch, **kwargs)
    path = convert(folder, tmp_path / f"{arch}.gguf")
    m = pyinfer.load(path, n_threads=2)
    assert m.arch == arch
    ref = pyinfer.load(folder)
    for k in ("n_vocab", "n_embd", "n_head", "n_head_kv", "n_layer", "n_ff", "head_dim", "n_swa", "swa_layers"):
        assert m.hparams.get(k) == ref.hparams.get(k), k
    ids = ids_for(40, seed=2)
    ours = m.forward(ids)
    assert_close(ours, hf_logits(arch, folder, ids), MODEL_F32_VS_HF, f"pyinfer on llama.cpp's {arch} GGUF vs HF")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, logits_all=True, verbose=False, n_threads=2,
                          type_k=0, type_v=0)
    with contextlib.closing(llm):
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids)], dtype=np.float32)
    assert_close(ours, theirs, LLAMA_CPP_GPT2_F32, f"pyinfer vs llama.cpp on llama.cpp's {arch} f32 GGUF")
