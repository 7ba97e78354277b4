"""The real Gemma 3 270M Q4_K_M file (Q5_0 / Q4_K / Q6_K / Q8_0 / F32 tensors, 262k SentencePiece-style vocab,
sliding-window layers) against llama.cpp (llama-cpp-python) on the same file: teacher-forced logits over a text
longer than the 512-position window, greedy continuations, and `pyinfer run` answering a simple question. The model
is weak, so it is judged by its agreement with llama.cpp, not by its answers (beyond one easy question).
"""
import contextlib

import numpy as np
import pytest

import pyinfer
from pyinfer.models import named_model_path
from subproc import run_cli
from tolerances import GEMMA3_LLAMA_CPP_REL, GEMMA3_LLAMA_CPP_TOP1, rel_error, top1_agreement

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is not installed; "
                                "`pip install llama-cpp-python==0.3.36` (CI installs it)")

N_CTX = 768
TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, Berlin of Germany and Madrid "
        "of Spain. def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
        "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen; 3.14159 is close to pi. ")


@pytest.fixture(scope="module")
def path():
    return str(named_model_path("gemma3-270m"))


@pytest.fixture(scope="module")
def ours(path):
    return pyinfer.load(path, n_ctx=N_CTX, n_threads=2)


@pytest.fixture(scope="module")
def ref(path):
    llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, n_threads=2, logits_all=True, verbose=False,
                          type_k=0, type_v=0)  # an f32 KV cache, as pyinfer's
    with contextlib.closing(llm):
        yield llm


def test_loads_as_gemma3(ours):
    hp = ours.hparams
    assert ours.arch == "gemma3" and ours.n_vocab == 262144
    assert (hp["n_layer"], hp["n_embd"], hp["n_head"], hp["n_head_kv"], hp["head_dim"]) == (18, 640, 4, 1, 256)
    assert hp["n_swa"] == 512 and hp["swa_layers"] == [l % 6 < 5 for l in range(18)]
    assert hp["rope_base"] == 1e6 and hp["rope_base_swa"] == 1e4
    types = {t[1] for t in ours._tensors.values() if isinstance(t, tuple)}
    assert types == {6, 8, 12, 14}, types  # Q5_0, Q8_0, Q4_K, Q6_K: the real file's block types, run as stored


def test_teacher_forced_logits_agree_with_llama_cpp(ours, ref):
    """Positions 0..63 (one prefill) and 500..559 (decoded one by one, where the local layers see only their
    512-position window): pyinfer's logits against llama.cpp's at the same positions."""
    ids = ours.tokenize(TEXT * 7)
    assert len(ids) >= 560
    ids = ids[:560]
    assert ids == ref.tokenize((TEXT * 7).encode(), add_bos=True, special=False)[:560]
    ref.reset()
    ref.eval(ids)
    theirs = np.array(ref.scores[:len(ids)], dtype=np.float32)
    head = ours.forward(ids[:64])  # [64, n_vocab]
    ours.reset()
    ours.eval(ids[:500])
    tail = np.stack([ours.eval([t]) for t in ids[500:]])  # positions 500..559
    for mine, want, what in ((head, theirs[:64], "positions 0..63"), (tail, theirs[500:], "positions 500..559")):
        agree, err = top1_agreement(mine, want), rel_error(mine, want)
        assert agree >= GEMMA3_LLAMA_CPP_TOP1 and err <= GEMMA3_LLAMA_CPP_REL, \
            f"{what}: top-1 agreement {agree:.3f}, max relative difference {err:.3e}"


def test_cli_answers_a_simple_question():
    rc, out, err = run_cli("run", "-m", "gemma3-270m", "-p", "Question: What is the capital of France?\nAnswer:",
                           "-n", "6", "--temp", "0", "-t", "2")
    assert rc == 0, err
    assert "Paris" in out, out
