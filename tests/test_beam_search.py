"""Beam search equals HF transformers' generate(num_beams=..., do_sample=False) on random GPT-2 checkpoints: the same
returned sequences in the same order, and the same sequence scores, for several beam counts, length penalties and
early_stopping modes, with EOS disabled and with an EOS that the beams actually produce. Also: the prompt's cache
is shared (the root context keeps only the prompt), arguments are checked, and the API shapes of the result.
"""
import numpy as np
import pytest
import torch
import transformers

import pyinfer
from pyinfer.beam_search import beam_search
from tolerances import MODEL_F32_VS_HF, SCORE_F64, assert_close

PROMPTS = ["The quick brown fox", "1 2 3"]
MAX_NEW = 10


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small, n_threads=1)


@pytest.fixture(scope="module")
def hf(gpt2_small):
    return transformers.GPT2LMHeadModel.from_pretrained(str(gpt2_small), dtype=torch.float32).eval()


def hf_beams(hf, ids, num_beams, length_penalty, early_stopping, eos, n_return=None, max_new=MAX_NEW):
    """HF's returned sequences (generated part; through the EOS where one ends it) and their scores."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), num_beams=num_beams, do_sample=False, max_new_tokens=max_new,
                          length_penalty=length_penalty, early_stopping=early_stopping,
                          num_return_sequences=n_return or num_beams, eos_token_id=eos, pad_token_id=50256,
                          return_dict_in_generate=True, output_scores=True)
    seqs = []
    for row in out.sequences[:, len(ids):].tolist():
        if eos is not None and eos in row:
            row = row[:row.index(eos) + 1]  # drop the padding after the EOS
        seqs.append(row)
    return seqs, out.sequences_scores.numpy().astype(np.float64)


CASES = [  # (num_beams, length_penalty, early_stopping)
    (2, 1.0, False),
    (3, 1.0, True),
    (4, 0.0, "never"),
    (4, 2.0, "never"),
    (3, -1.0, False),
    (2, 0.5, True),
]


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", CASES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_equals_hf_without_eos(model, hf, prompt, num_beams, length_penalty, early_stopping):
    ids = model.tokenize(prompt)
    ref, ref_scores = hf_beams(hf, ids, num_beams, length_penalty, early_stopping, eos=None)
    hyps = beam_search(model, ids, num_beams, MAX_NEW, length_penalty=length_penalty, early_stopping=early_stopping,
                       num_return_sequences=num_beams, eos_ids=())
    assert [h[0] for h in hyps] == ref
    assert all(len(h[0]) == MAX_NEW for h in hyps)
    assert_close([h[1] for h in hyps], ref_scores, MODEL_F32_VS_HF, "sequence scores")
    assert model.cached_ids == ids  # the beams ran in child contexts: the root holds the prompt alone


def eos_produced_by_beams(hf, ids, num_beams):
    """A token that the eos-free beams produce early on, to serve as EOS: then some hypotheses end with it."""
    ref, _ = hf_beams(hf, ids, num_beams, 1.0, False, eos=None)
    for pos in (2, 3, 1, 4):
        for row in ref[1:] + ref[:1]:
            if row[pos] not in row[:pos]:
                return row[pos]
    return ref[0][2]


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", CASES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_equals_hf_with_eos(model, hf, prompt, num_beams, length_penalty, early_stopping):
    ids = model.tokenize(prompt)
    eos = eos_produced_by_beams(hf, ids, num_beams)
    ref, ref_scores = hf_beams(hf, ids, num_beams, length_penalty, early_stopping, eos=eos)
    hyps = beam_search(model, ids, num_beams, MAX_NEW, length_penalty=length_penalty, early_stopping=early_stopping,
                       num_return_sequences=num_beams, eos_ids=[eos])
    assert [h[0] for h in hyps] == ref
    assert_close([h[1] for h in hyps], ref_scores, MODEL_F32_VS_HF, "sequence scores")


def frequent_tokens(model, ids, k):
    """k tokens often among the top 3 along the greedy continuation of ids: as EOS ids they end many beams early."""
    toks = model.generate(ids, max_tokens=30, temperature=0, ignore_eos=True, details=True).tokens
    top = np.argsort(-model.forward(ids + toks), axis=1)[:, :3].ravel()
    vals, cnt = np.unique(top, return_counts=True)
    return vals[np.argsort(-cnt, kind="stable")][:k].tolist()


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("num_beams, length_penalty", [(2, 1.0), (3, 1.0), (2, 2.0)])
@pytest.mark.parametrize("prompt", ["The quick brown fox", "1 2 3", "Hello, my name is"])
def test_equals_hf_with_several_eos_ids(model, hf, prompt, num_beams, length_penalty, early_stopping):
    # Every slot of the finished set fills before max_tokens here, so HF's early-stop heuristic decides when the
    # search ends (checked: with the heuristic disabled, 10 of the early_stopping=False cases give other sequences).
    ids = model.tokenize(prompt)
    eos = frequent_tokens(model, ids, 4)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), num_beams=num_beams, do_sample=False, max_new_tokens=MAX_NEW,
                          length_penalty=length_penalty, early_stopping=early_stopping,
                          num_return_sequences=num_beams, eos_token_id=eos, pad_token_id=50256,
                          return_dict_in_generate=True, output_scores=True)
    ref = []
    for row in out.sequences[:, len(ids):].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        ref.append(row if cut is None else row[:cut + 1])
    hyps = beam_search(model, ids, num_beams, MAX_NEW, length_penalty=length_penalty, early_stopping=early_stopping,
                       num_return_sequences=num_beams, eos_ids=eos)
    assert [h[0] for h in hyps] == ref
    assert_close([h[1] for h in hyps], out.sequences_scores.numpy(), MODEL_F32_VS_HF, "sequence scores")


def test_eos_case_exercises_early_endings(model, hf):
    # the point of test_equals_hf_with_eos: some returned hypotheses end with the EOS before max_tokens
    n_short = 0
    for prompt in PROMPTS:
        ids = model.tokenize(prompt)
        for num_beams, lp, es in CASES:
            eos = eos_produced_by_beams(hf, ids, num_beams)
            ref, _ = hf_beams(hf, ids, num_beams, lp, es, eos=eos)
            n_short += sum(1 for r in ref if r[-1] == eos and len(r) < MAX_NEW)
    assert n_short >= 6


def test_generate_api(model, hf):
    prompt = PROMPTS[0]
    ids = model.tokenize(prompt)
    ref, ref_scores = hf_beams(hf, ids, 3, 1.0, False, eos=50256, n_return=2)
    texts = model.generate(prompt, max_tokens=MAX_NEW, num_beams=3, num_return_sequences=2)
    assert texts == [model.detokenize([t for t in r if t != 50256]) for r in ref]
    assert model.generate(prompt, max_tokens=MAX_NEW, num_beams=3) == texts[0]
    c = model.generate(prompt, max_tokens=MAX_NEW, num_beams=3, num_return_sequences=2, details=True)
    assert [s.text for s in c.sequences] == texts and c.text == texts[0] and c.tokens == c.sequences[0].tokens
    assert_close([s.score for s in c.sequences], ref_scores, MODEL_F32_VS_HF, "scores")
    for s in c.sequences:  # score = sum of log-probs / generated length (an ending EOS counted) ** length_penalty
        assert s.finish_reason in ("eos", "length")
        n = len(s.tokens) + (s.finish_reason == "eos")
        assert_close([s.score], [s.sum_logprob / n ** 1.0], SCORE_F64, "score formula")
    # a second search with the same prompt reuses its cache
    c2 = model.generate(prompt, max_tokens=MAX_NEW, num_beams=3, num_return_sequences=2, details=True)
    assert c2.n_reused == len(ids) - 1 and [s.tokens for s in c2.sequences] == [s.tokens for s in c.sequences]
    # ignore_eos: EOS is an ordinary token, as HF with eos_token_id=None
    ref, _ = hf_beams(hf, ids, 2, 1.0, False, eos=None)
    c = model.generate(prompt, max_tokens=MAX_NEW, num_beams=2, num_return_sequences=2, ignore_eos=True,
                       details=True)
    assert [s.tokens for s in c.sequences] == ref


def test_one_new_token_and_context_cap(model, hf):
    ids = model.tokenize(PROMPTS[1])
    ref, _ = hf_beams(hf, ids, 3, 1.0, False, eos=None, max_new=1)
    assert [h[0] for h in beam_search(model, ids, 3, 1, num_return_sequences=3)] == ref
    assert beam_search(model, ids, 2, 0) == [([], 0.0, 0.0)]
    # max_tokens beyond the context is capped at n_ctx - n_prompt + 1 (the last token is never evaluated)
    long_ids = (ids * 200)[: model.n_ctx - 3]
    hyps = beam_search(model, long_ids, 2, 50, num_return_sequences=2)
    assert all(len(h[0]) == 4 for h in hyps)


@pytest.mark.parametrize("kw, match", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping"),
    (dict(num_beams=2, length_penalty=float("nan")), "length_penalty"),
    (dict(num_beams=2, stream=True), "stream"),
    (dict(num_beams=2, stop=["x"]), "stop"),
    (dict(num_beams=2, repeat_penalty=1.2), "repeat_penalty"),
    (dict(num_beams=2, logit_bias={1: 1.0}), "logit_bias"),
    (dict(num_beams=2, logprobs=2), "logprobs"),
])
def test_bad_arguments(model, kw, match):
    with pytest.raises(ValueError, match=match):
        model.generate(PROMPTS[0], max_tokens=4, **kw)
