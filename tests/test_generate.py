"""The generation loop on a random-weight GPT-2 with GPT-2's real tokenizer: streamed == non-streamed text,
seeding, stop conditions and stats, greedy decoding (KV cache) == an argmax loop over full-recompute forward(),
context overflow, closing a stream early.
"""
import numpy as np
import pytest

import pyinfer
from pyinfer.generate import generate_tokens, stream_text
from pyinfer.sampling import Sampler
from pyinfer.tokenizer import BPETokenizer

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stream_concatenates_to_the_non_streamed_text(model, seed):
    kw = dict(max_tokens=40, temperature=0.8, top_k=40, top_p=0.95, seed=seed)
    text = model.generate(PROMPT, **kw)
    pieces = list(model.generate(PROMPT, stream=True, **kw))
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text
    assert len(text) > 0


def test_stream_text_never_splits_a_character(gpt2_small):
    # GPT-2 splits many non-ASCII characters over several byte tokens; each piece must still be whole characters
    tok = BPETokenizer.from_dir(gpt2_small)
    text = "naïve café € 日本語 🙂 done"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # some characters do span tokens
    pieces = list(stream_text((i for i in ids), tok))
    assert "".join(pieces) == text == tok.decode(ids)
    assert all(p and "\ufffd" not in p for p in pieces)
    # ending inside a character: the held-back bytes come out at the end, as decode() renders them
    cut = next(n for n in range(len(ids), 0, -1) if tok.decode(ids[:n]).endswith("\ufffd"))
    pieces = list(stream_text((i for i in ids[:cut]), tok))
    assert "".join(pieces) == tok.decode(ids[:cut])


def test_seeded_generation_is_reproducible(model):
    kw = dict(max_tokens=24, temperature=0.8, top_k=40, top_p=0.95)
    a = model.generate(PROMPT, seed=11, **kw)
    assert a == model.generate(PROMPT, seed=11, **kw)
    assert a != model.generate(PROMPT, seed=12, **kw)


@pytest.mark.parametrize("n", [1, 5, 17])
def test_max_tokens_is_respected_and_stats_count(model, n):
    prompt_ids = model.tokenize(PROMPT)
    gen = generate_tokens(model, prompt_ids, Sampler(temperature=0.8, seed=5), n)
    ids = list(gen)
    assert len(ids) <= n
    assert gen.stats.stop_reason == ("length" if len(ids) == n else "eos")
    assert gen.stats.n_gen == len(ids) and gen.stats.n_prompt == len(prompt_ids)
    assert gen.stats.t_prompt_s > 0 and gen.stats.t_gen_s > 0
    # the last token is yielded, not evaluated; an EOS ends the run after evaluating every yielded token
    assert model.n_past == len(prompt_ids) + len(ids) - (gen.stats.stop_reason == "length")
    assert model.tokenizer.eos_id not in ids


def test_max_tokens_zero_gives_empty_text(model):
    assert model.generate(PROMPT, max_tokens=0) == ""
    assert list(model.generate(PROMPT, max_tokens=0, stream=True)) == []


def test_greedy_equals_argmax_over_full_recompute_forward(model):
    n = 20
    text = model.generate(PROMPT, max_tokens=n, temperature=0)
    gen_ids = list(generate_tokens(model, model.tokenize(PROMPT), Sampler(temperature=0), n))

    ids = list(model.tokenize(PROMPT))
    ref = []
    for _ in range(n):
        logits = np.asarray(model.forward(ids + ref))  # [n_seq, n_vocab], no KV cache reuse
        tok = int(np.argmax(logits[-1]))
        if tok == model.tokenizer.eos_id:
            break
        ref.append(tok)
    assert gen_ids == ref
    assert text == model.detokenize(ref)
    assert len(ref) > 0


def test_prompt_longer_than_context_raises_up_front(model):
    long_prompt = "hello " * (model.n_ctx + 10)
    n = len(model.tokenize(long_prompt))
    assert n > model.n_ctx
    with pytest.raises(ValueError, match=f"prompt is {n} tokens but the context is {model.n_ctx}"):
        model.generate(long_prompt, max_tokens=4)
    with pytest.raises(ValueError, match="context"):
        model.generate(long_prompt, max_tokens=4, stream=True)  # at the call, not at the first next()


def test_generation_stops_when_the_context_is_full(model):
    prompt_ids = model.tokenize("hello " * (model.n_ctx - 6))[: model.n_ctx - 5]
    gen = generate_tokens(model, prompt_ids, Sampler(temperature=0.8, seed=1), max_tokens=-1)
    ids = list(gen)
    if gen.stats.stop_reason != "eos":
        assert gen.stats.stop_reason == "context"
        assert len(ids) == model.n_ctx - len(prompt_ids) + 1
        assert model.n_past == model.n_ctx


def test_closing_a_stream_early_stops_decoding(model):
    it = model.generate(PROMPT, max_tokens=50, temperature=0.8, seed=3, stream=True)
    first = next(it)
    n_past = model.n_past
    it.close()
    assert isinstance(first, str) and first
    assert model.n_past == n_past  # nothing was decoded after close
    with pytest.raises(StopIteration):
        next(it)
    gen = generate_tokens(model, model.tokenize(PROMPT), Sampler(temperature=0.8, seed=3), 50)
    stream = stream_text(gen, model.tokenizer)
    next(stream)
    stream.close()
    assert gen.stats.stop_reason == "closed" and 0 < gen.stats.n_gen < 50
    # the model is fine afterwards: a fresh run equals a run that never shared the model with a closed stream
    a = model.generate(PROMPT, max_tokens=8, temperature=0.8, seed=4)
    assert a == "".join(model.generate(PROMPT, max_tokens=8, temperature=0.8, seed=4, stream=True))


def test_bad_arguments_raise(model):
    with pytest.raises(ValueError, match="top_p"):
        model.generate(PROMPT, top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate(PROMPT, max_tokens=-5)
