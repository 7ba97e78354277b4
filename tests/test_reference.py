"""Validates the numpy GPT-2 oracle (tests/reference/gpt2_numpy.py) against HF transformers in f32, so that later
tests may trust it: logits on several id sequences, 20-token greedy text, and that the tolerance catches small bugs.
Does not touch pyinfer.
"""
import functools
import math
import shutil

import numpy as np
import pytest

from reference.gpt2_numpy import Gpt2Oracle, gpt2_forward
from tolerances import MIN_TOP2_GAP, MODEL_F16_VS_F32, ORACLE_VS_HF, assert_close, rel_error

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N_VOCAB = 50257


@functools.lru_cache(maxsize=None)
def hf_model(folder):
    """GPT2LMHeadModel from a folder, in f32 (an f16 checkpoint is cast up), eval mode, no early EOS stop."""
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens, like the oracle's loop
    model.generation_config.pad_token_id = 50256
    return model


@functools.lru_cache(maxsize=None)
def oracle(folder):
    return Gpt2Oracle(folder)


def hf_logits(folder, ids):
    with torch.inference_mode():
        out = hf_model(folder)(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].double().numpy()  # [n_seq, n_vocab]


def id_sequences(n_ctx):
    """Named id sequences: one token, the edges of the vocab, repeats, random, and the full context."""
    rng = np.random.default_rng(1234)
    return {
        "single": [50256],
        "vocab_edges": [0, 1, 50255, 50256, 0],
        "repeat": [464] * 9,
        "random_17": rng.integers(0, N_VOCAB, 17).tolist(),
        "full_ctx": rng.integers(0, N_VOCAB, n_ctx).tolist(),
    }


PROMPT = [464, 2068, 7586, 21831]  # "The quick brown fox" in GPT-2's vocab
SEQ_NAMES = ["single", "vocab_edges", "repeat", "random_17", "full_ctx"]


@pytest.fixture(scope="module", params=["small", "f16", "untied", "deeper"])
def checkpoint(request, make_gpt2):
    """(name, folder): the default fixture, its f16 copy, an untied head, and a 3-layer, 2-head model."""
    kwargs = {"small": {}, "f16": {"dtype": "float16"}, "untied": {"tie": False},
              "deeper": {"n_layer": 3, "n_embd": 32, "n_head": 2, "n_positions": 64, "seed": 7}}[request.param]
    return request.param, make_gpt2(**kwargs)


@pytest.mark.parametrize("seq", SEQ_NAMES)
def test_oracle_logits_match_hf(checkpoint, seq):
    name, folder = checkpoint
    ids = id_sequences(oracle(folder).hparams["n_positions"])[seq]
    ref = oracle(folder).logits(ids)
    assert ref.shape == (len(ids), N_VOCAB) and ref.dtype == np.float64
    assert_close(hf_logits(folder, ids), ref, ORACLE_VS_HF, f"HF f32 vs oracle logits ({name}, {seq})")


def test_oracle_greedy_matches_hf_generate(gpt2_small):
    prompt = PROMPT
    ours = oracle(gpt2_small).greedy(prompt, 20)
    with torch.inference_mode():
        out = hf_model(gpt2_small).generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                            do_sample=False, max_new_tokens=20)
    theirs = out[0, len(prompt):].tolist()
    assert ours == theirs, f"oracle greedy {ours} != HF generate {theirs}"
    assert len(set(ours)) > 1, f"greedy text is one repeated token {ours}: the fixture's logits are too flat"


def test_fixture_logits_have_spread(gpt2_small):
    """The fixture must not be near-uniform: along the greedy path of PROMPT the top-2 logit gap must dwarf f32 error
    (MIN_TOP2_GAP = 10 x MODEL_F32_VS_HF), so greedy-text tests of pyinfer compare decisions, not noise."""
    o = oracle(gpt2_small)
    ids = PROMPT + o.greedy(PROMPT, 20)
    logits = o.logits(ids)[len(PROMPT) - 1:-1]  # [20, n_vocab]: the logits each greedy choice was made from
    top2 = np.sort(logits, axis=-1)[:, -2:]  # [20, n_vocab] -> [20, 2]
    gap = (top2[:, 1] - top2[:, 0]) / np.max(np.abs(logits))  # [20]
    assert logits.std(axis=-1).min() > 1.0, f"logit std per position {logits.std(axis=-1)}"
    assert gap.min() > MIN_TOP2_GAP, f"relative top-2 gaps on the greedy path {gap}"


def test_key_prefix_is_optional(gpt2_small, tmp_path):
    """A checkpoint saved from GPT2Model (keys "h.0...." without "transformer.") loads to the same logits."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(gpt2_small / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    shutil.copy(gpt2_small / "config.json", tmp_path / "config.json")
    ids = id_sequences(128)["random_17"]
    np.testing.assert_array_equal(Gpt2Oracle(tmp_path).logits(ids), oracle(gpt2_small).logits(ids))


@pytest.mark.parametrize("bug", ["zero_one_bias", "ln_eps_1e-3", "erf_gelu", "no_causal_mask"])
def test_tolerance_catches_small_bugs(gpt2_small, bug, monkeypatch):
    """Each plausible implementation slip must exceed ORACLE_VS_HF, or the logits test could not fail."""
    import reference.gpt2_numpy as ref_mod

    o = oracle(gpt2_small)
    ids = id_sequences(128)["random_17"]
    params, eps = o.params, o.eps
    if bug == "zero_one_bias":  # the last MLP's output bias forgotten
        last = params["blocks"][-1]
        c_proj = {**last["mlp"]["c_proj"], "b": np.zeros_like(last["mlp"]["c_proj"]["b"])}
        params = {**params, "blocks": params["blocks"][:-1] + [{**last, "mlp": {**last["mlp"], "c_proj": c_proj}}]}
    elif bug == "ln_eps_1e-3":  # a hard-coded eps instead of layer_norm_epsilon
        eps = 1e-3
    elif bug == "erf_gelu":  # exact gelu instead of GPT-2's tanh form
        erf = np.vectorize(math.erf)
        monkeypatch.setattr(ref_mod, "gelu", lambda x: 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))))
    elif bug == "no_causal_mask":
        attention = ref_mod.attention
        monkeypatch.setattr(ref_mod, "attention", lambda q, k, v, mask: attention(q, k, v, np.zeros_like(mask)))
    buggy = gpt2_forward(ids, params, o.n_head, eps)
    with pytest.raises(AssertionError, match="exceeds"):
        assert_close(buggy, hf_logits(gpt2_small, ids), ORACLE_VS_HF, f"oracle with {bug}")


def test_f16_copy_error_fits_table(gpt2_small, gpt2_f16):
    """Rounding the weights to f16 moves the logits by well under MODEL_F16_VS_F32, and measurably above f32 noise."""
    ids = id_sequences(128)["random_17"]
    err = rel_error(oracle(gpt2_f16).logits(ids), oracle(gpt2_small).logits(ids))
    assert 10 * ORACLE_VS_HF < err < MODEL_F16_VS_F32 / 3, f"f16 vs f32 weights: relative logit error {err:.3e}"
