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


# ----------------------------------------------------------------------------------------------------------------
# stop conditions, stop strings, logprobs, details, score, prefix reuse

from pyinfer.generate import Completion, TextStream, stop_token_ids  # noqa: E402
from pyinfer.sampling import log_softmax  # noqa: E402
from tolerances import KV_CACHE_VS_RECOMPUTE, MODEL_F32_VS_HF, SCORE_F64, assert_close  # noqa: E402


@pytest.fixture
def own_model(gpt2_small):
    """A model of its own (tests may change its tokenizer's stop ids)."""
    return pyinfer.load(gpt2_small, n_threads=1)


def greedy_ids(model, prompt, n):
    return model.generate(prompt, max_tokens=n, temperature=0, ignore_eos=True, details=True).tokens


def test_stop_token_ids_tolerates_missing_attributes(own_model):
    tok = own_model.tokenizer
    assert stop_token_ids(tok) == {50256}
    tok.eot_id, tok.eog_ids, tok.stop_ids = 11, [12, 13], None
    assert stop_token_ids(tok) == {50256, 11, 12, 13}

    class Bare:
        pass
    assert stop_token_ids(Bare()) == frozenset()


@pytest.mark.parametrize("attr", ["eos_id", "eot_id", "eog_ids", "stop_ids"])
def test_end_of_generation_tokens_stop_and_ignore_eos_bans_them(own_model, attr):
    ids = greedy_ids(own_model, PROMPT, 12)
    k = next(i for i in range(3, 12) if ids[i] not in ids[:i])  # a token that first appears at position k
    stop = ids[k]
    setattr(own_model.tokenizer, attr, [stop] if attr.endswith("_ids") else stop)
    c = own_model.generate(PROMPT, max_tokens=12, temperature=0, details=True)
    assert c.tokens == ids[:k] and c.finish_reason == "eos" and c.n_gen == k
    assert c.text == own_model.detokenize(ids[:k])
    c = own_model.generate(PROMPT, max_tokens=12, temperature=0, ignore_eos=True, details=True)
    assert c.finish_reason == "length" and len(c.tokens) == 12 and stop not in c.tokens
    assert c.tokens[:k] == ids[:k]  # the same run up to the banned token
    # the low-level loop with ignore_eos (and no bias) generates through it as an ordinary token
    gen = generate_tokens(own_model, own_model.tokenize(PROMPT), Sampler(temperature=0), 12, ignore_eos=True)
    assert list(gen) == ids[:12] and gen.stats.stop_reason == "length"


def text_pieces(tok, ids, stop):
    ts = stream_text(iter(ids), tok, stop=stop)
    return list(ts), ts


@pytest.mark.parametrize("stop, want", [
    ("o w", "Hell"),  # spans the tokens "Hello" and " world"
    (["xyz", " is"], "Hello world, this"),
    (["world, t", "orld"], "Hello w"),  # the earliest match wins
    ("test!", "Hello world, this is a test"),  # a partial match that never completes is released at the end
    ("本", "naïve 日"),  # inside a character split over byte tokens
])
def test_stop_strings_never_leak_across_tokens(gpt2_small, stop, want):
    tok = BPETokenizer.from_dir(gpt2_small)
    text = "naïve 日本 ok" if "本" in stop else "Hello world, this is a test"
    ids = tok.encode(text)
    pieces, ts = text_pieces(tok, ids, stop)
    assert "".join(pieces) == want == ts.text
    assert all(pieces)
    assert ts.stopped_by == (None if want == text else next(s for s in ([stop] if isinstance(stop, str) else stop)
                                                           if s in text and text.index(s) == len(want)))


def test_stop_string_held_back_while_pending(gpt2_small):
    tok = BPETokenizer.from_dir(gpt2_small)
    ids = tok.encode("Hello world, this is a test")
    seen = []
    ts = stream_text(iter(ids), tok, stop=["world peace"])
    for piece in ts:
        seen.append(ts.text)
    # while " world" could still become "world peace", "Hello " is out but "world" is not
    assert "Hello " in seen and not any(s.endswith("world") for s in seen)
    assert ts.text == "Hello world, this is a test"


def test_stop_strings_in_generation_streamed_and_not(own_model):
    ids = greedy_ids(own_model, PROMPT, 24)
    full = own_model.detokenize(ids)
    # a stop string made of the end of one token's text and the start of the next
    for i in range(4, 20):
        a, b = own_model.detokenize(ids[:i]), own_model.detokenize(ids[:i + 1])
        if len(a) >= 2 and len(b) - len(a) >= 2 and full.find(b[len(a) - 2:len(a) + 2]) == len(a) - 2:
            stop = b[len(a) - 2:len(a) + 2]
            break
    else:
        pytest.skip("no suitable token boundary in this text")
    want = full[:full.index(stop)]
    c = own_model.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True, stop=[stop, "never there"],
                           details=True)
    assert c.text == want and c.finish_reason == "stop" and c.stop == stop
    assert c.tokens == ids[:i + 1]  # decoding stopped at the token that completed the stop string
    assert own_model.n_past == len(own_model.tokenize(PROMPT)) + i  # and that token was not evaluated
    pieces = list(own_model.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True, stop=stop, stream=True))
    assert "".join(pieces) == want
    assert own_model.generate(PROMPT, max_tokens=24, temperature=0, ignore_eos=True, stop=stop) == want
    # seeded sampling with stop strings: streamed == non-streamed
    kw = dict(max_tokens=30, temperature=0.9, seed=4, stop=[" the", "."])
    assert "".join(own_model.generate(PROMPT, stream=True, **kw)) == own_model.generate(PROMPT, **kw)
    with pytest.raises(ValueError, match="stop"):
        own_model.generate(PROMPT, stop=[""])


def test_logprobs_are_log_softmax_of_the_raw_logits(own_model):
    prompt = own_model.tokenize(PROMPT)
    for kw in [dict(temperature=0), dict(temperature=1.5, top_k=5, seed=2, repeat_penalty=1.5)]:
        c = own_model.generate(prompt, max_tokens=6, logprobs=3, details=True, ignore_eos=True, **kw)
        assert len(c.logprobs) == len(c.top_logprobs) == len(c.tokens) == 6
        ref_rows = log_softmax(own_model.forward(prompt + c.tokens)[len(prompt) - 1:-1])  # [6, n_vocab]
        ref = ref_rows[np.arange(6), c.tokens]
        assert_close(c.logprobs, ref, KV_CACHE_VS_RECOMPUTE, "logprobs")
        for row, alts in zip(ref_rows, c.top_logprobs):
            assert len(alts) == 3
            assert [i for i, _ in alts] == np.argsort(-row, kind="stable")[:3].tolist()
            assert_close([lp for _, lp in alts], np.sort(row)[::-1][:3], KV_CACHE_VS_RECOMPUTE, "top logprobs")
        if kw["temperature"] == 0:
            assert [alts[0][0] for alts in c.top_logprobs] == c.tokens
    c = own_model.generate(prompt, max_tokens=3, logprobs=0, details=True, temperature=0)
    assert all(alts == [] for alts in c.top_logprobs) and len(c.logprobs) == 3
    assert own_model.generate(prompt, max_tokens=3, details=True, temperature=0).logprobs is None
    with pytest.raises(ValueError, match="logprobs"):
        own_model.generate(prompt, logprobs=-1)


def test_details(own_model):
    own_model.reset()
    c = own_model.generate(PROMPT, max_tokens=5, temperature=0.8, seed=9, details=True)
    assert isinstance(c, Completion)
    assert c.text == own_model.generate(PROMPT, max_tokens=5, temperature=0.8, seed=9)
    assert c.text == own_model.detokenize(c.tokens) and c.n_gen == len(c.tokens)
    assert c.n_prompt == len(own_model.tokenize(PROMPT)) and c.n_reused == 0 and c.seed == 9
    assert c.finish_reason in ("length", "eos")
    t = c.timings
    assert t["prompt_ms"] > 0 and t["predicted_n"] == c.n_gen and t["cache_n"] == 0
    d = c.to_dict(own_model.tokenizer)
    import json
    assert json.loads(json.dumps(d))["tokens"] == c.tokens


def test_score_equals_log_softmax_of_forward(own_model, gpt2_small):
    import torch
    import transformers

    text = "The score of a text is the sum of its token log-likelihoods."
    ids = own_model.tokenize(text)
    s = own_model.score(text)
    assert s.dtype == np.float64 and s.shape == (len(ids) - 1,)
    logits = own_model.forward(ids).astype(np.float64)
    m = logits.max(axis=1, keepdims=True)
    ref = (logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[np.arange(len(ids) - 1), ids[1:]]
    assert_close(s, ref, SCORE_F64, "score vs numpy on the same logits")
    assert np.array_equal(own_model.score(ids), s)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_small), dtype=torch.float32).eval()
    with torch.no_grad():
        hl = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
    assert_close(s, hl[np.arange(len(ids) - 1), ids[1:]], MODEL_F32_VS_HF, "score vs HF")
    assert own_model.score(ids[:1]).shape == (0,)
    try:
        from pyinfer.perplexity import token_logprobs
    except ImportError:
        return
    assert_close(token_logprobs(own_model, ids), s, SCORE_F64, "score vs perplexity.token_logprobs")


def test_prefix_reuse_equals_a_cold_run(own_model):
    m = own_model
    p1 = m.tokenize("In a chat, the whole conversation is sent again each turn")
    c1 = m.generate(p1, max_tokens=6, temperature=0, ignore_eos=True, details=True, cache_prompt=False)
    assert c1.n_reused == 0
    assert m.cached_ids == p1 + c1.tokens[:-1]  # the last token was sampled, not evaluated
    p2 = p1 + c1.tokens + m.tokenizer.encode(" and the answer is")
    c2 = m.generate(p2, max_tokens=8, temperature=0, ignore_eos=True, details=True)
    assert c2.n_reused == len(p1) + len(c1.tokens) - 1
    assert c2.timings["prompt_n"] == len(p2) - c2.n_reused
    cold = m.generate(p2, max_tokens=8, temperature=0, ignore_eos=True, details=True, cache_prompt=False)
    assert cold.n_reused == 0 and cold.tokens == c2.tokens and cold.text == c2.text
    # the same prompt again: everything but the last token is reused
    again = m.generate(p2, max_tokens=8, temperature=0, ignore_eos=True, details=True)
    assert again.n_reused == len(p2) - 1 and again.tokens == c2.tokens
    # a prompt that diverges after k tokens reuses k; a prefix of the cache reuses all but its last token
    k = len(p1) - 3
    p3 = p1[:k] + m.tokenizer.encode(" something else")
    assert m.generate(p3, max_tokens=2, temperature=0, details=True).n_reused == k
    m.forward(p2)  # forward() leaves p2 in the cache
    assert m.generate(p2[:5], max_tokens=2, temperature=0, details=True).n_reused == 4
    # logits: reused prefix + evaluated rest == a fresh forward
    m.forward(p1)
    n = m.trim_cache(p2)
    assert n == len(p1)
    reused = m.eval(p2[n:])
    assert_close(reused, m.forward(p2)[-1], KV_CACHE_VS_RECOMPUTE, "logits after prefix reuse")


def test_prefix_reuse_survives_a_cache_driven_behind_its_back(own_model):
    m = own_model
    ids = m.tokenize(PROMPT)
    m.forward(ids)
    m._ctx.eval(np.array([5], np.int32), False)  # bypasses the bookkeeping
    c = m.generate(ids + [5], max_tokens=3, temperature=0, details=True)
    assert c.n_reused == 0  # it noticed and started over
    cold = m.generate(ids + [5], max_tokens=3, temperature=0, details=True, cache_prompt=False)
    assert c.tokens == cold.tokens


def test_penalties_reach_the_model_loop(own_model):
    # a strong repeat penalty over the prompt + output changes greedy text and avoids repeating its tokens
    plain = greedy_ids(own_model, PROMPT, 16)
    pen = own_model.generate(PROMPT, max_tokens=16, temperature=0, repeat_penalty=100.0, repeat_last_n=64,
                             ignore_eos=True, details=True).tokens
    assert pen != plain
    seen = set(own_model.tokenize(PROMPT))
    for t in pen:
        assert t not in seen  # logits of random models are mostly > 0: /100 puts a repeat far below the rest
        seen.add(t)


def test_penalties_see_the_prompt(own_model):
    prompt = own_model.tokenize(PROMPT)
    s = Sampler(temperature=0, repeat_penalty=1.5, repeat_last_n=4)
    gen = generate_tokens(own_model, prompt, s, 3)
    first = next(gen)
    assert s.history == prompt[-3:] + [first]  # the window holds the prompt's tail, then generated tokens
    gen.close()
    # a prompt whose greedy continuation repeats one of its own tokens: the penalty must move it
    g = greedy_ids(own_model, PROMPT, 30)
    seq = prompt + g
    i = next((i for i in range(len(prompt), len(seq)) if seq[i] in seq[:i]), None)
    if i is None:
        pytest.skip("no repeated token in the greedy text")
    c = own_model.generate(seq[:i], max_tokens=1, temperature=0, repeat_penalty=100.0, repeat_last_n=len(seq),
                           details=True, ignore_eos=True)
    assert c.tokens[0] != seq[i]


def test_stream_result_is_the_completion(own_model):
    kw = dict(max_tokens=6, temperature=0.7, seed=1, logprobs=1)
    it = own_model.generate(PROMPT, stream=True, **kw)
    with pytest.raises(RuntimeError):
        it.result()
    text = "".join(it)
    r = it.result()
    c = own_model.generate(PROMPT, details=True, **kw)
    assert r.text == text == c.text and r.tokens == c.tokens and r.finish_reason == c.finish_reason
