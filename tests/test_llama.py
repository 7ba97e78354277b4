"""The Llama forward pass (RMSNorm, rotate-half RoPE on HF weights, GQA, SwiGLU, tied or untied head) on random-weight
HF LlamaForCausalLM folders made by the tests, against transformers in f32; KV cache and thread invariance.
"""
import numpy as np
import pytest
import torch
import transformers

import pyinfer
from tolerances import KV_CACHE_VS_RECOMPUTE, MODEL_F16_VS_F32, MODEL_F32_VS_HF, assert_close


def hf_logits(folder, ids):
    model = transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("kwargs", [dict(), dict(tie=False, seed=1), dict(n_head=4, n_head_kv=4, n_embd=64, seed=2),
                                    dict(n_head=8, n_head_kv=1, n_embd=128, rope_theta=100000.0, seed=3)])
def test_llama_logits_match_transformers(make_llama, kwargs):
    folder = make_llama(**kwargs)
    m = pyinfer.load(folder, n_threads=2)
    assert m.arch == "llama"
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 50257, 100)]
    assert_close(m.forward(ids), hf_logits(folder, ids), MODEL_F32_VS_HF, f"llama {kwargs} vs transformers")


def test_llama_kv_cache_threads_and_f16(make_llama):
    folder = make_llama()
    ids = list(range(1000, 1070))
    m1 = pyinfer.load(folder, n_threads=1)
    full = m1.forward(ids)
    m1.reset()
    steps = [m1.eval(ids[:10])] + [m1.eval([t]) for t in ids[10:]]
    assert_close(np.stack(steps), full[9:], KV_CACHE_VS_RECOMPUTE, "llama KV cache vs recompute")
    assert np.array_equal(full, pyinfer.load(folder, n_threads=2).forward(ids)), "1 vs 2 threads"
    assert_close(pyinfer.load(folder, dtype="f16").forward(ids), full, MODEL_F16_VS_F32, "f16 weights")


def test_llama_greedy_equals_transformers(make_llama):
    folder = make_llama()
    m = pyinfer.load(folder)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = m.tokenize("Hello there, general")
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, len(ids):].tolist()
    if 50256 in ref:
        ref = ref[:ref.index(50256)]
    assert m.generate(ids, max_tokens=20, temperature=0) == m.detokenize(ref)


def test_llama_missing_tensor_is_named(make_llama, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(make_llama(), bad)
    t = load_file(str(bad / "model.safetensors"))
    t.pop("model.layers.1.mlp.gate_proj.weight")
    save_file(t, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match="model.layers.1.mlp.gate_proj.weight"):
        pyinfer.load(bad)
