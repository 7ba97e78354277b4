"""Sessions: save -> load -> continue gives exactly the tokens of an uninterrupted run (greedy, and seeded sampling
with penalties, whose RNG state travels with the state), to bytes and to a file; fork() is independent; a state
from a model of another shape is refused with a clear error; prefix reuse inside a session.
"""
import numpy as np
import pytest

import pyinfer
from tolerances import KV_CACHE_VS_RECOMPUTE, assert_close

PROMPT = "Once upon a time, in a land far away"


@pytest.fixture(scope="module")
def model(gpt2_small):
    return pyinfer.load(gpt2_small, n_threads=1)


def uninterrupted(model, n, **kw):
    return model.generate(PROMPT, max_tokens=n, ignore_eos=True, details=True, cache_prompt=False, **kw).tokens


@pytest.mark.parametrize("kw", [
    dict(temperature=0),
    dict(temperature=0.9, top_k=50, seed=7),
    dict(temperature=1.1, top_k=0, top_p=0.9, min_p=0.02, seed=3, repeat_penalty=1.3, repeat_last_n=8,
         presence_penalty=0.2),
])
def test_save_load_continue_equals_uninterrupted(model, kw, tmp_path):
    want = uninterrupted(model, 14, **kw)
    s = model.session()
    first = s.generate(PROMPT, max_tokens=6, ignore_eos=True, details=True, **kw)
    assert first.tokens == want[:6]
    data = s.save(tmp_path / "state.bin")
    assert (tmp_path / "state.bin").read_bytes() == data
    cont = {k: v for k, v in kw.items() if k != "seed"}  # seed=None continues the saved RNG

    for src in (data, tmp_path / "state.bin", str(tmp_path / "state.bin")):
        s2 = pyinfer.Session(model).load(src)
        assert s2.tokens == s.tokens and s2.n_past == s.n_past
        rest = s2.generate(None, max_tokens=8, ignore_eos=True, details=True, **cont)
        assert rest.tokens == want[6:], src
        assert rest.n_reused == len(model.tokenize(PROMPT)) + 5  # all of the restored cache
        assert s2.tokens == model.tokenize(PROMPT) + want
    # the original session continues the same way
    assert s.generate(None, max_tokens=8, ignore_eos=True, details=True, **cont).tokens == want[6:]


def test_continue_reuses_everything_cached(model):
    s = model.session()
    c = s.generate(PROMPT, max_tokens=5, temperature=0, ignore_eos=True, details=True)
    n_prompt = len(model.tokenize(PROMPT))
    assert c.n_reused == 0 and s.n_past == n_prompt + 4  # the 5th token is not evaluated yet
    c2 = s.generate(None, max_tokens=3, temperature=0, ignore_eos=True, details=True)
    assert c2.n_reused == n_prompt + 4 and c2.timings["prompt_n"] == 1
    # a new prompt sharing the prefix: only the new part is evaluated
    more = s.tokens + model.tokenizer.encode(" and then")
    c3 = s.generate(more, max_tokens=2, temperature=0, details=True)
    assert c3.n_reused == n_prompt + 7


def test_eval_appends_and_matches_forward(model):
    s = model.session()
    ids = model.tokenize(PROMPT)
    s.eval(ids[:4])
    logits = s.eval(ids[4:])
    assert s.tokens == ids and s.n_past == len(ids)
    assert_close(logits, model.forward(ids)[-1], KV_CACHE_VS_RECOMPUTE, "session eval")
    with pytest.raises(ValueError):
        s.eval([])


def test_fork_is_independent(model):
    s = model.session()
    s.generate(PROMPT, max_tokens=4, temperature=0, ignore_eos=True)
    f = s.fork()
    assert f.tokens == s.tokens and f.n_past == s.n_past
    a = f.generate(None, max_tokens=6, temperature=0, ignore_eos=True, details=True).tokens
    assert s.n_past == len(model.tokenize(PROMPT)) + 3  # untouched by the fork's run
    b = s.generate(None, max_tokens=6, temperature=0, ignore_eos=True, details=True).tokens
    assert a == b == uninterrupted(model, 10, temperature=0)[4:]
    # diverge the fork; the original keeps its own cache
    f.generate(model.tokenize("Something different entirely"), max_tokens=3, temperature=0)
    assert s.tokens[: len(model.tokenize(PROMPT))] == model.tokenize(PROMPT)
    c = s.generate(None, max_tokens=2, temperature=0, ignore_eos=True, details=True)
    assert c.n_reused == len(model.tokenize(PROMPT)) + 9  # everything the original had cached
    assert c.tokens == uninterrupted(model, 12, temperature=0)[10:]


def test_sessions_do_not_disturb_the_model(model):
    ids = model.tokenize(PROMPT)
    model.forward(ids)
    s = model.session()
    s.generate("Another text altogether", max_tokens=4, temperature=0)
    assert model.cached_ids == ids  # the model's own cache is separate


def test_state_from_another_model_is_refused(model, make_gpt2):
    s = model.session()
    s.generate(PROMPT, max_tokens=2, temperature=0)
    data = s.save()
    other = pyinfer.load(make_gpt2(n_embd=32, n_head=4), n_threads=1)
    with pytest.raises(ValueError, match="different model.*n_embd=64.*n_embd=32"):
        other.session().load(data)
    with pytest.raises(ValueError, match="bad magic"):
        model.session().load(b"not a state at all")
    with pytest.raises(ValueError):
        model.session().load(data[:-8])  # truncated cache bytes: the C++ size check
    small = model.session(n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx"):
        small.load(data)  # more positions than this context holds


def test_empty_session_needs_a_prompt(model):
    with pytest.raises(ValueError, match="empty"):
        model.session().generate(None)
    with pytest.raises(ValueError, match="cache"):
        model.session().generate(PROMPT, cache_prompt=False)


def test_stream_updates_the_session(model):
    s = model.session()
    pieces = list(s.generate(PROMPT, max_tokens=5, temperature=0, ignore_eos=True, stream=True))
    want = uninterrupted(model, 5, temperature=0)
    assert "".join(pieces) == model.detokenize(want)
    assert s.tokens == model.tokenize(PROMPT) + want


def test_beams_in_a_session(model):
    s = model.session()
    texts = s.generate(PROMPT, max_tokens=4, num_beams=2, num_return_sequences=2)
    assert texts == model.generate(PROMPT, max_tokens=4, num_beams=2, num_return_sequences=2)
    assert s.tokens == model.tokenize(PROMPT) and s.n_past == len(s.tokens)
    assert np.all(np.isfinite(s.eval(model.tokenize(" yes"))))


def test_sessions_in_threads_equal_sequential(gpt2_small):
    """One loaded model, four threads, each with its own Session: the same texts as one at a time (the C++ step
    releases the GIL, so the threads really overlap)."""
    import threading

    m = pyinfer.load(gpt2_small, n_threads=1)
    prompts = [f"Thread number {i} says" for i in range(4)]
    want = [m.session().generate(p, max_tokens=24, seed=i) for i, p in enumerate(prompts)]
    got, errors = [None] * 4, []

    def work(i):
        try:
            s = m.session()
            for _ in range(3):
                s.reset()
                got[i] = s.generate(prompts[i], max_tokens=24, seed=i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and got == want


def test_one_session_from_two_threads_is_a_clear_error(gpt2_small):
    """A generation owns its session's cache until it ends: a second generate() (from another thread, or while a
    stream is still open) raises instead of interleaving two sequences in one cache."""
    import threading

    s = pyinfer.load(gpt2_small, n_threads=1).session()
    stream = s.generate("Once upon a time", max_tokens=50, seed=0, stream=True)
    first = next(iter(stream))
    errors = []

    def other():
        try:
            s.generate("Another story", max_tokens=5, seed=1)
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join(timeout=60)
    assert len(errors) == 1 and "in use by another thread" in errors[0] and "Session" in errors[0]
    rest = "".join(stream)  # the first generation goes on undisturbed
    ref = pyinfer.load(gpt2_small, n_threads=1).session().generate("Once upon a time", max_tokens=50, seed=0)
    assert first + rest == ref
    assert s.generate("Another story", max_tokens=5, seed=1)  # free again once the stream has ended
