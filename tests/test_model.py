"""pyinfer's GPT-2 forward pass on random-weight HF checkpoints made by the tests: logits against HF transformers
and the float64 numpy oracle, greedy text against HF's generate, KV cache against recompute, thread-count and ISA
invariance, f16 weights, and the loader's errors for broken folders.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import pyinfer
from reference.gpt2_numpy import Gpt2Oracle
from tolerances import KV_CACHE_VS_RECOMPUTE, MODEL_F16_VS_F32, MODEL_F32_VS_HF, assert_close

TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé, 数字 12345 and emoji 🦊!"


def hf_logits(folder, ids):
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small, n_threads=2)


def test_logits_match_hf_and_oracle(gpt2_small, model):
    ids = model.tokenize(TEXT)
    assert len(ids) > 20
    out = model.forward(ids)
    assert out.shape == (len(ids), 50257) and out.dtype == np.float32
    assert_close(out, hf_logits(gpt2_small, ids), MODEL_F32_VS_HF, "pyinfer vs HF")
    assert_close(out, Gpt2Oracle(gpt2_small).logits(ids), MODEL_F32_VS_HF, "pyinfer vs numpy oracle")


@pytest.mark.parametrize("kwargs", [dict(n_layer=3, n_embd=96, n_head=6, seed=1, tie=False),
                                    dict(n_layer=1, n_embd=40, n_head=5, seed=2)])
def test_other_shapes_and_untied_head(make_gpt2, kwargs):
    folder = make_gpt2(**kwargs)
    m = pyinfer.load(folder, n_threads=1)
    ids = list(range(100, 160))
    assert_close(m.forward(ids), hf_logits(folder, ids), MODEL_F32_VS_HF, f"pyinfer vs HF {kwargs}")


def test_full_context(gpt2_small, model):
    ids = [int(i) for i in np.random.default_rng(0).integers(0, 50257, 128)]
    assert_close(model.forward(ids), hf_logits(gpt2_small, ids), MODEL_F32_VS_HF, "128 tokens")


def test_greedy_text_equals_hf_generate(gpt2_small, model):
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_small), dtype=torch.float32).eval()
    for prompt in ["Hello, my name is", "def main():\n    ", "1 2 3"]:
        ids = model.tokenize(prompt)
        with torch.no_grad():
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                              pad_token_id=50256)[0, len(ids):].tolist()
        text = model.generate(prompt, max_tokens=24, temperature=0)
        # the random model may emit <|endoftext|> and stop; compare up to that point
        if 50256 in ref:
            ref = ref[:ref.index(50256)]
        assert text == model.detokenize(ref)


def test_kv_cache_decode_equals_recompute(model):
    ids = model.tokenize(TEXT)
    full = model.forward(ids)
    model.reset()
    steps = [model.eval(ids[:7])]
    steps += [model.eval([t]) for t in ids[7:]]
    assert model.n_past == len(ids)
    assert_close(np.stack(steps), full[6:], KV_CACHE_VS_RECOMPUTE, "KV-cache decode vs recompute")
    # chunks of uneven sizes too
    model.reset()
    chunks = [ids[:3], ids[3:10], ids[10:11], ids[11:]]
    last = [model.eval(c) for c in chunks]
    for c, got in zip(np.cumsum([len(c) for c in chunks]), last):
        assert_close(got, full[c - 1], KV_CACHE_VS_RECOMPUTE, "chunked prefill")


def test_one_thread_equals_two_bit_for_bit(gpt2_small):
    ids = list(range(1000, 1090))
    a = pyinfer.load(gpt2_small, n_threads=1).forward(ids)
    m2 = pyinfer.load(gpt2_small, n_threads=2)
    assert np.array_equal(a, m2.forward(ids))
    m2.n_threads = 1
    assert np.array_equal(a, m2.forward(ids))


def test_f16_weights(gpt2_small, gpt2_f16):
    ids = list(range(500, 560))
    ref = Gpt2Oracle(gpt2_small).logits(ids)
    for m in (pyinfer.load(gpt2_small, dtype="f16"), pyinfer.load(gpt2_f16)):
        assert m._tensors["blk.0.ffn_up.weight"].dtype == np.float16
        assert m._tensors["blk.0.attn_norm.weight"].dtype == np.float32
        assert_close(m.forward(ids), ref, MODEL_F16_VS_F32, "f16 weights vs f32 oracle")
    # an f16 checkpoint loaded at f32 computes exactly on the f16 values
    m = pyinfer.load(gpt2_f16, dtype="f32")
    assert m._tensors["blk.0.ffn_up.weight"].dtype == np.float32
    assert_close(m.forward(ids), Gpt2Oracle(gpt2_f16).logits(ids), MODEL_F32_VS_HF, "f16 file at f32")


def test_weights_are_memory_mapped(gpt2_small):
    m = pyinfer.load(gpt2_small)
    wte = m._tensors["token_embd.weight"]
    assert not wte.flags.owndata and not wte.flags.writeable  # a view of the file, not a copy


def test_context_overflow_is_a_clear_error(model):
    model.reset()
    with pytest.raises(ValueError, match="context"):
        model.eval(list(range(129)))
    model.reset()
    model.eval(list(range(120)))
    with pytest.raises(ValueError, match="n_ctx"):
        model.eval(list(range(9)))
    with pytest.raises(ValueError, match="out of range"):
        model.forward([50257])
    with pytest.raises(ValueError, match="n_ctx"):
        pyinfer.load(model.path, n_ctx=129)


def test_broken_checkpoints_list_every_problem(gpt2_small, tmp_path):
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(gpt2_small, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors.pop("transformer.h.1.mlp.c_fc.weight")
    tensors["transformer.h.0.attn.c_proj.bias"] = np.zeros(7, np.float32)
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        pyinfer.load(bad)
    msg = str(e.value)
    assert "model.safetensors" in msg and "h.1.mlp.c_fc.weight" in msg and "h.0.attn.c_proj.bias" in msg

    with open(bad / "model.safetensors", "r+b") as f:  # truncated file
        f.truncate(os.path.getsize(bad / "model.safetensors") // 2)
    with pytest.raises(ValueError, match="truncated"):
        pyinfer.load(bad)
    with pytest.raises(FileNotFoundError):
        pyinfer.load(tmp_path / "nowhere")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "bert"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="bert"):
        pyinfer.load(bad)


def test_isa_override(gpt2_small):
    """PYINFER_ISA=ref gives the same logits (within f32 tolerance) as the selected SIMD ISA; a bad value errors."""
    code = ("import sys, numpy as np, pyinfer; m = pyinfer.load(sys.argv[1]); "
            "np.save(sys.argv[2], m.forward(list(range(40)))); print(pyinfer.build_info()['isa_selected'])")
    outs = {}
    for isa in pyinfer.build_info()["isa_available"]:
        path = os.path.join(str(gpt2_small) + f"-{isa}.npy")
        env = dict(os.environ, PYINFER_ISA=isa)
        r = subprocess.run([sys.executable, "-c", code, str(gpt2_small), path], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == isa
        outs[isa] = np.load(path)
        os.remove(path)
    for isa, out in outs.items():
        assert_close(out, outs["ref"], MODEL_F32_VS_HF, f"{isa} vs ref")
    r = subprocess.run([sys.executable, "-c", "import pyinfer"], env=dict(os.environ, PYINFER_ISA="mmx"),
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown ISA 'mmx'" in r.stderr


def test_prompts_run_in_chunks_bit_identically(make_llama, monkeypatch):
    """A prompt longer than EVAL_CHUNK runs as several C++ calls; logits and cache equal one call's, bit for bit."""
    from pyinfer import model as model_mod

    m = pyinfer.load(make_llama(), n_threads=2)
    ids = [int(i) for i in np.random.default_rng(3).integers(0, 50257, 150)]
    whole = m.forward(ids)
    last = m.eval([7])
    calls = []
    monkeypatch.setattr(model_mod, "EVAL_CHUNK", 32)
    orig = m._ctx.eval
    m._ctx = _CountingCtx(m._ctx, calls)
    assert np.array_equal(m.forward(ids), whole)
    assert [n for n, _ in calls] == [32, 32, 32, 32, 22]
    assert np.array_equal(m.eval([7]), last), "the cache after chunks equals the cache after one call"
    calls.clear()
    m.reset()
    assert np.array_equal(m.eval(ids), whole[-1])
    assert [n for n, _ in calls] == [32, 32, 32, 32, 22] and m.n_past == len(ids) == len(m.cached_ids)
    del orig


class _CountingCtx:
    """Wraps a C++ context, recording (n_tokens, all_logits) of each eval; optionally raising after k calls."""

    def __init__(self, ctx, calls, raise_after=None, exc=KeyboardInterrupt):
        self._c, self._calls, self._raise_after, self._exc = ctx, calls, raise_after, exc

    def eval(self, tokens, all_logits=False):
        if self._raise_after is not None and len(self._calls) == self._raise_after:
            raise self._exc()
        self._calls.append((len(tokens), all_logits))
        return self._c.eval(tokens, all_logits)

    def __getattr__(self, name):
        return getattr(self._c, name)


def test_interrupt_between_chunks_keeps_cache_consistent(make_llama, monkeypatch):
    """Ctrl-C during a long prefill stops after the chunk in flight; what is cached is what the ids say."""
    from pyinfer import model as model_mod

    m = pyinfer.load(make_llama(), n_threads=1)
    monkeypatch.setattr(model_mod, "EVAL_CHUNK", 16)
    calls = []
    real = m._ctx
    m._ctx = _CountingCtx(real, calls, raise_after=3)
    ids = list(range(100, 180))
    with pytest.raises(KeyboardInterrupt):
        m.eval(ids)
    assert len(calls) == 3 and m.n_past == 48 and m.cached_ids == ids[:48]
    m._ctx = real
    # the next generate reuses the 48 cached tokens and gives the uninterrupted run's logits
    full = pyinfer.load(make_llama(), n_threads=1).forward(ids)
    assert m.trim_cache(ids) == 48
    assert np.array_equal(m.eval(ids[48:]), full[-1])


def test_kv_cache_larger_than_memory_is_refused(gpt2_small, monkeypatch):
    from pyinfer import model as model_mod

    monkeypatch.setattr(model_mod, "_mem_available", lambda: 1 << 16)  # 64 KiB free; the cache needs 128 KiB
    with pytest.raises(ValueError, match=r"n_ctx 128 needs a 0\.1 MiB KV cache but only 0\.1 MiB .*smaller n_ctx"):
        pyinfer.load(gpt2_small, n_ctx=128)
    assert pyinfer.load(gpt2_small, n_ctx=64).n_ctx == 64  # 64 KiB: fits
