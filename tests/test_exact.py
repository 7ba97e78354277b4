"""The exact model of a quantized file, and how close the default path is to it.
tests/reference/llama_numpy.py runs a GGUF's weights dequantized to float64 with float64 activations (checked
against HF transformers on f32 files); pyinfer's activations="f32" mode (weights dequantized per row on the fly,
activations never rounded to 8 bits) must equal it within EXACT_VS_ORACLE for every weight type; the default path
(8-bit activations, one f32 scale per 16 values) must stay within DEFAULT_VS_EXACT_KLD of it. Random Gemma 3 and Qwen 3
checkpoints (n_embd 256, so the K-quants apply) go through llama.cpp's converter and `pyinfer quantize`.
"""
import numpy as np
import pytest
import torch
import transformers

import pyinfer
from pyinfer import quantize as pq
from reference.llama_numpy import LlamaFamilyOracle
from tolerances import DEFAULT_VS_EXACT_KLD, EXACT_VS_ORACLE, MODEL_F32_VS_HF, assert_close, mean_kld

MODELS = {
    # six layers: Gemma 3's pattern (the last one global; GGUF keeps only the window, llama.cpp assumes the pattern)
    "gemma3": dict(n_layer=6, n_embd=256, n_ff=512, n_head=4, n_head_kv=1, head_dim=64, sliding_window=12,
                   query_pre_attn_scalar=64, seed=5),
    "qwen3": dict(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, head_dim=64, tie=False, seed=6),
}
# recipes that between them put every block type pyinfer runs into a file (the _m mixtures add Q6_K / Q5_K)
RECIPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k"]
IDS = [int(i) for i in np.random.default_rng(11).integers(0, 50257, 32)]  # past gemma3's window of 12


@pytest.fixture(scope="module")
def f32_files(make_llama_family, tmp_path_factory):
    from assets import llama_cpp_convert

    root = tmp_path_factory.mktemp("exact")
    return {arch: (make_llama_family(arch, **kw), llama_cpp_convert(make_llama_family(arch, **kw),
                                                                    root / f"{arch}-f32.gguf"))
            for arch, kw in MODELS.items()}


@pytest.fixture(scope="module")
def quantized(f32_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("exact-q")
    out = {}
    for arch, (_, f32) in f32_files.items():
        for recipe in (RECIPES if arch == "qwen3" else ("q8_0", "q5_0", "q4_k_m", "q6_k")):
            out[arch, recipe] = root / f"{arch}-{recipe}.gguf"
            pq.quantize_model(f32, out[arch, recipe], recipe, progress=False)
    return out


def types_in(path):
    from gguf import GGUFReader
    return {t.tensor_type.name for t in GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("arch", MODELS)
def test_oracle_equals_transformers(f32_files, arch):
    """The oracle is the model: on an f32 file it gives HF transformers' logits."""
    folder, f32 = f32_files[arch]
    cls = {"gemma3": transformers.Gemma3ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM}[arch]
    hf = cls.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([IDS])).logits[0].numpy()
    assert_close(LlamaFamilyOracle(f32).logits(IDS), ref, MODEL_F32_VS_HF, f"{arch} oracle vs transformers")


def test_recipes_cover_every_block_type(quantized):
    seen = set().union(*(types_in(p) for (arch, _), p in quantized.items() if arch == "qwen3"))
    assert {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} <= seen, seen


@pytest.mark.parametrize("arch,recipe", [("qwen3", r) for r in RECIPES] +
                         [("gemma3", r) for r in ("q8_0", "q5_0", "q4_k_m", "q6_k")])
def test_exact_mode_equals_the_oracle(quantized, arch, recipe):
    path = quantized[arch, recipe]
    exact = pyinfer.load(path, activations="f32", n_threads=2)
    oracle = LlamaFamilyOracle(path).logits(IDS)
    got = exact.forward(IDS)
    assert_close(got, oracle, EXACT_VS_ORACLE, f"{arch} {recipe} exact mode vs the float64 oracle")
    # the default path rounds activations: farther from the oracle, but within its stated KLD bound
    default = pyinfer.load(path, n_threads=2).forward(IDS)
    kld = mean_kld(oracle, default)
    assert kld <= DEFAULT_VS_EXACT_KLD[recipe], f"{arch} {recipe}: default path KLD {kld:.2e} to the exact model"
    assert not np.array_equal(default, got)  # the two paths really differ


def test_exact_mode_threads_decode_and_sessions(quantized):
    path = quantized["gemma3", "q4_k_m"]
    m1 = pyinfer.load(path, activations="f32", n_threads=1)
    full = m1.forward(IDS)
    assert np.array_equal(full, pyinfer.load(path, activations="f32", n_threads=2).forward(IDS)), "1 vs 2 threads"
    m1.reset()
    steps = np.stack([m1.eval(IDS[:3])] + [m1.eval([t]) for t in IDS[3:]])
    assert np.array_equal(steps, full[2:]), "decode == prefill, bit for bit"
    s = m1.session()
    assert s._m.activations == "f32" and np.array_equal(s.forward(IDS), full)
    with pytest.raises(ValueError, match="activations must be"):
        pyinfer.load(path, activations="f16")
