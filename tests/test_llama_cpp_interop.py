"""GGUF files exchanged with llama.cpp, both ways, on the random GPT-2 fixture (gpt2_small):
1. what `pyinfer quantize` writes (f32, q8_0) loads in llama.cpp (llama-cpp-python, an optional test dependency that
   CI installs) and gives pyinfer's logits and pyinfer's token ids;
2. what llama.cpp's own convert_hf_to_gguf.py writes (f32, q8_0; the script and its gguf-py taken from the
   llama-cpp-python sdist of the pinned version, see assets.llama_cpp_converter_dir) loads in pyinfer and gives
   HF transformers' logits. The converter needs torch, transformers, numpy, safetensors, tqdm, pyyaml and requests
   (all test dependencies already); sentencepiece/protobuf/mistral_common only for other models.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import pyinfer
from pyinfer import quantize as pq

from tolerances import (CONVERTED_Q8_0_TOP1_VS_HF, CONVERTED_Q8_0_VS_HF, LLAMA_CPP_GPT2_F32, LLAMA_CPP_GPT2_Q8_0,
                        LLAMA_CPP_GPT2_Q8_0_TOP1, MODEL_F32_VS_HF, assert_close, rel_error,
                        top1_agreement)

TEXT = ("The quick brown fox jumps over the lazy dog. GGUF files hold tensors, metadata and a tokenizer; "
        "this text is long enough to give some sixty positions to compare, with numbers (3.14, 2024), "
        "punctuation -- and a few rarer words: quantization, dequantized, oracle.")
# (text, special): byte fallback, contractions, runs of spaces and newlines, digits, and GPT-2's one special token
TOKENIZER_CASES = [(TEXT, False), (" hello world", False), ("Hello, World!  \n\n  ok\n", False),
                   ("naïve café 日本語 🎉", False), ("it's we're 123456 x=1;y=22", False),
                   ("a<|endoftext|>b", False), ("a<|endoftext|>b", True)]
N_CTX = 128  # the fixture's n_positions


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is an optional "
                               "test dependency: `pip install llama-cpp-python==0.3.36` (CI installs it)")


# ---------------------------------------------------------------------------------------------------------------
# 1. pyinfer quantize -> llama.cpp
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
def test_our_gguf_runs_in_llama_cpp(gpt2_small, tmp_path, qtype):
    llama_cpp = _llama_cpp()
    path = tmp_path / f"gpt2-{qtype}.gguf"
    pq.quantize_model(gpt2_small, path, qtype, progress=False)
    ours = pyinfer.load(path, n_threads=2)
    ids = ours.tokenize(TEXT)
    assert len(ids) >= 50
    # f32 KV cache (ggml type 0) instead of llama.cpp's default f16: only the engines' arithmetic differs
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_batch=N_CTX, logits_all=True, verbose=False,
                          n_threads=2, type_k=0, type_v=0)
    with contextlib.closing(llm):
        assert llm.n_vocab() == 50257 and llm.token_eos() == 50256
        for text, special in TOKENIZER_CASES:
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=special) == \
                ours.tokenize(text, special=special), (text, special)
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids)], dtype=np.float32)
    mine = ours.forward(ids)
    if qtype == "f32":
        assert_close(theirs, mine, LLAMA_CPP_GPT2_F32, "llama.cpp vs pyinfer on pyinfer's f32 GGUF")
    else:
        err, agree = rel_error(theirs, mine), top1_agreement(theirs, mine)
        assert err <= LLAMA_CPP_GPT2_Q8_0 and agree >= LLAMA_CPP_GPT2_Q8_0_TOP1, \
            f"llama.cpp vs pyinfer on pyinfer's q8_0 GGUF: relative error {err:.3e}, top-1 agreement {agree:.3f}"


# ---------------------------------------------------------------------------------------------------------------
# 2. llama.cpp's convert_hf_to_gguf.py -> pyinfer
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(gpt2_small, tmp_path_factory):
    """{outtype: GGUF path}: gpt2_small converted by llama.cpp's convert_hf_to_gguf.py at f32 and q8_0 (the two
    conversions run side by side; each is mostly the converter importing torch and transformers)."""
    from assets import llama_cpp_converter_dir

    conv = llama_cpp_converter_dir()
    root = tmp_path_factory.mktemp("llama-cpp-converted")
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, not the installed gguf package
    env["PYTHONPATH"] = os.pathsep.join([str(conv / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                   else []))
    out, procs = {}, {}
    for outtype in ("f32", "q8_0"):
        out[outtype] = root / f"gpt2-{outtype}.gguf"
        cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(gpt2_small), "--outtype", outtype,
               "--outfile", str(out[outtype])]
        procs[outtype] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        for outtype, p in procs.items():
            log = p.communicate(timeout=300)[0].decode("utf-8", "replace")
            if p.returncode != 0 or not out[outtype].is_file():
                raise RuntimeError(f"convert_hf_to_gguf.py --outtype {outtype} failed ({p.returncode}):\n{log[-3000:]}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.fixture(scope="module")
def hf_logits(gpt2_small):
    """ids of TEXT and HF transformers' f32 logits for them [n, n_vocab]."""
    import torch
    import transformers

    ids = pyinfer.load(gpt2_small).tokenize(TEXT)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_small), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].numpy()
    return ids, logits


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_llama_cpp_converted_gguf_runs_in_pyinfer(gpt2_small, converted, hf_logits, outtype):
    ids, ref = hf_logits
    folder = pyinfer.load(gpt2_small)
    m = pyinfer.load(converted[outtype], n_threads=2)
    assert m.arch == "gpt2"
    for k in ("n_vocab", "n_ctx_train", "n_embd", "n_head", "n_layer", "n_ff"):
        assert m.hparams[k] == folder.hparams[k], k
    for text, special in TOKENIZER_CASES:
        assert m.tokenize(text, special=special) == folder.tokenize(text, special=special), (text, special)
    got = m.forward(ids)
    if outtype == "f32":
        assert_close(got, ref, MODEL_F32_VS_HF, "pyinfer on llama.cpp's f32 conversion vs HF transformers")
    else:
        err, agree = rel_error(got, ref), top1_agreement(got, ref)
        assert err <= CONVERTED_Q8_0_VS_HF and agree >= CONVERTED_Q8_0_TOP1_VS_HF, \
            f"pyinfer on llama.cpp's q8_0 conversion vs HF: relative error {err:.3e}, top-1 agreement {agree:.3f}"
