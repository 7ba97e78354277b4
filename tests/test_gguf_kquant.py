"""A GGUF holding the types llama.cpp's Q4_K_M files mix (Q5_0, Q4_K, Q6_K, Q8_0) and the rest pyinfer runs
(Q5_1, Q2_K, Q3_K, Q5_K), one type per matrix, written with gguf's GGUFWriter from a random Llama: they load with the quantized tensors as the file's bytes, get_row equals gguf's dequantize,
the quantized forward pass agrees with the same file loaded with dtype="f32" (weights dequantized by gguf), and
with llama.cpp running the same file (same activation rounding: the logits agree to f32 rounding).
K-quant tensors hold random valid blocks (the gguf package has no K-quant quantizer) scaled to the fixture's
weight spread; Q5_0, Q5_1 and Q8_0 tensors are the gguf package's quantization of the fixture's weights.
"""
import contextlib

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize
from gguf.quants import quantize as gguf_quantize

import pyinfer
from kquant_bytes import random_blocks
from pyinfer import _ext, gguf_file, hf_checkpoint
from test_gguf import TEXT, _permute, to_gguf  # noqa: F401  (to_gguf is a fixture)
from tolerances import (KQUANT_MODEL_POS0_VS_F32, KQUANT_MODEL_TOP1_VS_F32, LLAMA_CPP_KQUANT_KLD_RATIO,
                        LLAMA_CPP_KQUANT_POS0, assert_close, mean_kld, top1_agreement)

# the type of each matrix, by name suffix: every type pyinfer runs beyond Q4_x, one per matrix of a layer
TYPES = {"attn_q.weight": QT.Q5_0, "attn_k.weight": QT.Q5_1, "attn_v.weight": QT.Q3_K,
         "attn_output.weight": QT.Q4_K, "ffn_gate.weight": QT.Q2_K, "ffn_up.weight": QT.Q5_K,
         "ffn_down.weight": QT.Q6_K, "token_embd.weight": QT.Q8_0}


def kquant_weight(arr, qtype, rng):
    """Random valid blocks of qtype with the spread (std) of arr: uint8 [n_rows, row_bytes]."""
    state = rng.bit_generator.state
    unit = random_blocks(qtype, arr.shape[0], arr.shape[1], rng, scale=1.0)
    rng.bit_generator.state = state  # the same bytes again, fp16 scales rescaled
    return random_blocks(qtype, arr.shape[0], arr.shape[1], rng, scale=float(arr.std() / dequantize(unit, qtype).std()))


def mixed_llama_gguf(folder, tokenizer_gguf, dst, seed=0):
    hp, tensors = hf_checkpoint.load_llama(folder)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(dst, "llama")
    w.add_block_count(hp["n_layer"])
    w.add_context_length(hp["n_ctx_train"])
    w.add_embedding_length(hp["n_embd"])
    w.add_feed_forward_length(hp["n_ff"])
    w.add_head_count(hp["n_head"])
    w.add_head_count_kv(hp["n_head_kv"])
    w.add_rope_freq_base(hp["rope_base"])
    w.add_layer_norm_rms_eps(hp["norm_eps"])
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_vocab_size(hp["n_vocab"])
    w.add_rope_dimension_count(hp["head_dim"])
    r = gguf_file.read_gguf(tokenizer_gguf)
    values = gguf_file.read_metadata(r)
    for key, f in r.fields.items():
        if key.startswith("tokenizer."):
            w.add_key_value(key, values[key], f.types[0], sub_type=f.types[-1] if len(f.types) > 1 else None)
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if name.endswith("attn_q.weight"):
            arr = _permute(arr, hp["n_head"])
        elif name.endswith("attn_k.weight"):
            arr = _permute(arr, hp["n_head_kv"])
        qtype = next((t for suffix, t in TYPES.items() if name.endswith(suffix)), None)
        if qtype is None:
            w.add_tensor(name, arr)
        elif qtype in (QT.Q5_0, QT.Q5_1, QT.Q8_0):
            w.add_tensor(name, gguf_quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, kquant_weight(arr, qtype, rng), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def mixed_gguf(make_llama, gpt2_small, to_gguf, tmp_path_factory):  # noqa: F811
    folder = make_llama(n_embd=256, n_head=4, n_head_kv=2, n_ff=512)
    return mixed_llama_gguf(folder, to_gguf(gpt2_small, "f32"), tmp_path_factory.mktemp("kq") / "llama-mixed.gguf")


def test_loads_as_the_files_bytes_and_get_row_dequantizes(mixed_gguf):
    _, hp, tensors, _ = gguf_file.load_gguf(mixed_gguf)
    stored = {t.name: t for t in gguf_file.read_gguf(mixed_gguf).tensors}
    seen = set()
    for name, value in tensors.items():
        qtype = next((t for suffix, t in TYPES.items() if name.endswith(suffix)), None)
        if qtype is None:
            continue
        raw, type_id, n_cols = value
        assert type_id == int(qtype) and np.array_equal(raw, gguf_file.tensor_raw(stored[name])), name
        want = dequantize(raw[:8], qtype)
        for isa in pyinfer.build_info()["isa_available"]:
            for r in range(8):
                assert np.array_equal(_ext.kernels.get_row(isa, value, r), want[r]), f"{isa} {name} row {r}"
        seen.add(qtype)
    assert seen == set(TYPES.values())


def test_quantized_forward_vs_dequantized_f32(mixed_gguf):
    q, f = pyinfer.load(mixed_gguf), pyinfer.load(mixed_gguf, dtype="f32")
    ids = q.tokenize(TEXT)
    got, want = q.forward(ids), f.forward(ids)  # [n_seq, n_vocab]
    assert_close(got[0], want[0], KQUANT_MODEL_POS0_VS_F32, "mixed-type llama vs the file at f32, pos 0")
    assert top1_agreement(got, want) >= KQUANT_MODEL_TOP1_VS_F32, top1_agreement(got, want)


def test_same_file_as_llama_cpp_and_closer_to_the_exact_model(mixed_gguf):
    """pyinfer and llama.cpp read the mixed file alike (position 0 close, both near the file's exact model), and
    pyinfer's default path (one activation scale per 16 values) is closer to the exact model than llama.cpp's (per 32,
    and per 256 for the K-quants): mean KL divergence over the text's positions."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is an optional "
                                    "test dependency")
    ours = pyinfer.load(mixed_gguf, n_threads=2)
    exact = pyinfer.load(mixed_gguf, n_threads=2, activations="f32")
    ids = ours.tokenize(TEXT)
    # f32 KV cache (ggml type 0) instead of llama.cpp's default f16: only the engines' arithmetic differs
    llm = llama_cpp.Llama(model_path=str(mixed_gguf), n_ctx=256, n_batch=256, logits_all=True, verbose=False,
                          n_threads=2, type_k=0, type_v=0)
    with contextlib.closing(llm):
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids)], dtype=np.float32)  # [n_seq, n_vocab]
    mine, truth = ours.forward(ids), exact.forward(ids)
    assert_close(mine[0], theirs[0], LLAMA_CPP_KQUANT_POS0, "pyinfer vs llama.cpp on the mixed GGUF, pos 0")
    for name, got in (("pyinfer", mine), ("llama.cpp", theirs)):
        assert top1_agreement(got, truth) >= KQUANT_MODEL_TOP1_VS_F32, (name, top1_agreement(got, truth))
    kld_mine, kld_theirs = mean_kld(truth, mine), mean_kld(truth, theirs)
    assert kld_mine <= LLAMA_CPP_KQUANT_KLD_RATIO * kld_theirs, (kld_mine, kld_theirs)
