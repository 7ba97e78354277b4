"""`pyinfer serve` as a user runs it: the real server in a subprocess on a free loopback port, driven with the
`openai` client and plain HTTP (httpx). References: the same pyinfer model run in this process through the Python
API (same seed -> the same text and token counts: the server must only transport them), HF transformers for the
prompt log-probabilities, and exact token counting. A random-weight GPT-2 (no chat template) for completions, the
load test and the errors; the default model SmolLM2 for chat and its KV-cache reuse. Each server stops at the end
of its module (SIGTERM, exit code 0) and, should pytest die, by itself when its stdin closes.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

openai = pytest.importorskip("openai", reason="the openai client is part of the test extra: pip install '.[test]'")
httpx = pytest.importorskip("httpx", reason="httpx is part of the test extra: pip install '.[test]'")
pytest.importorskip("uvicorn", reason="the server extra is part of the test extra: pip install '.[test]'")

import pyinfer  # noqa: E402
from assets import smollm2_gguf_path  # noqa: E402
from subproc import assert_one_line_error, pyinfer_root, run_cli  # noqa: E402
from tolerances import MODEL_F32_VS_HF, assert_close  # noqa: E402

KEY = "test-key-123"

# The server as a child that also exits when the test process goes away (its stdin reaches EOF).
LAUNCH = """
import os, sys, threading
def watch():
    while os.read(0, 4096):  # the raw fd: a buffered read would block interpreter shutdown
        pass
    os._exit(3)
threading.Thread(target=watch, daemon=True).start()
from pyinfer.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""


class ServerProcess:
    def __init__(self, args, log_path, timeout=120, env=None):
        env = dict(os.environ, PYTHONIOENCODING="utf-8", **(env or {}))
        env["PYTHONPATH"] = os.pathsep.join([pyinfer_root()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.pop("PYINFER_API_KEY", None)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        cmd = [sys.executable, "-c", LAUNCH, "--host", "127.0.0.1", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{self.text()}")
            time.sleep(0.1)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM, then the exit code (killed after 20 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdin.close()
        self.log.close()
        return self.proc.returncode


def _serve(tmp_path_factory, name, args, env=None):
    srv = ServerProcess(args, tmp_path_factory.mktemp(name) / "server.log", env=env)
    yield srv
    rc = srv.stop()
    log = srv.text()
    assert rc == 0, log
    assert "Traceback" not in log, log  # no request made it crash, or even log an internal error


# ---------------------------------------------------------------------------------------------------------------------
# a random-weight GPT-2: completions, errors, the API key, the load test


@pytest.fixture(scope="module")
def gpt2_dir(make_gpt2):
    return str(make_gpt2(n_positions=256))


@pytest.fixture(scope="module")
def gpt2_model(gpt2_dir):
    return pyinfer.load(gpt2_dir, n_threads=1)


@pytest.fixture(scope="module")
def gpt2_server(gpt2_dir, tmp_path_factory):
    yield from _serve(tmp_path_factory, "gpt2", ["-m", gpt2_dir, "--parallel", "4", "-t", "2", "--api-key", KEY])


@pytest.fixture(scope="module")
def client(gpt2_server):
    return openai.OpenAI(base_url=gpt2_server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(gpt2_server):
    with httpx.Client(base_url=gpt2_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


def expected(model, prompt, seed, **kw):
    """What the Python API generates for the same request (a fresh sequence: cache_prompt off)."""
    kw.setdefault("max_tokens", 12)
    return model.generate(prompt, seed=seed, details=True, cache_prompt=False, **kw)


def test_health_models_and_names(gpt2_server, client, http, gpt2_dir):
    h = httpx.get(gpt2_server.url + "/health")  # no key needed
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["slots_idle"] == 4
    assert [m.id for m in client.models.list().data] == [os.path.basename(os.path.normpath(gpt2_dir))]
    r = http.get("/v1/models").json()["data"][0]
    assert r["meta"]["n_ctx"] == 256 and r["meta"]["n_slots"] == 4 and r["meta"]["n_vocab"] == 50257


@pytest.mark.parametrize("kw", [dict(temperature=0.9), dict(temperature=0.0, max_tokens=20),
                                dict(temperature=1.0, top_p=0.5, presence_penalty=0.5, frequency_penalty=0.3),
                                dict(temperature=0.7, stop=[" the", "."], max_tokens=30)])
def test_completion_equals_the_python_api(client, gpt2_model, kw):
    kw = dict(kw)
    max_tokens = kw.pop("max_tokens", 12)
    prompt = "The quick brown fox"
    r = client.completions.create(model=client.models.list().data[0].id, prompt=prompt, max_tokens=max_tokens,
                                  seed=11, **kw)
    ref = expected(gpt2_model, prompt, 11, max_tokens=max_tokens, **kw)
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == {"eos": "stop", "stop": "stop", "length": "length"}[ref.finish_reason]
    assert r.usage.prompt_tokens == len(gpt2_model.tokenize(prompt))
    assert r.usage.completion_tokens == ref.n_gen
    assert r.usage.total_tokens == r.usage.prompt_tokens + ref.n_gen


def test_logit_bias_bans_a_token(client, gpt2_model):
    prompt = "The quick brown fox"
    name = client.models.list().data[0].id
    greedy = client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0)
    ref0 = expected(gpt2_model, prompt, 0, max_tokens=6, temperature=0)
    assert greedy.choices[0].text == ref0.text
    first = ref0.tokens[0]
    r = client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0,
                                  logit_bias={str(first): -100})
    ref = expected(gpt2_model, prompt, 0, max_tokens=6, temperature=0, logit_bias={first: -100.0})
    assert r.choices[0].text == ref.text and ref.tokens[0] != first


def test_stream_is_the_same_text_and_ends_with_done(client, http, gpt2_model):
    prompt = "Once upon a time"
    pieces, finish = [], None
    for ch in client.completions.create(model=client.models.list().data[0].id, prompt=prompt,
                                        max_tokens=16, seed=5, stream=True):
        pieces.append(ch.choices[0].text)
        finish = ch.choices[0].finish_reason or finish
    ref = expected(gpt2_model, prompt, 5, max_tokens=16)
    assert "".join(pieces) == ref.text and finish == "length"
    # the raw event stream: `data: {json}` events, usage on request, then `data: [DONE]`
    with http.stream("POST", "/v1/completions", json={"prompt": prompt, "max_tokens": 16, "seed": 5, "stream": True,
                                                      "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ref.text
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] == ref.n_gen == 16
    assert usage["prompt_tokens"] == len(gpt2_model.tokenize(prompt))


def test_n_choices_use_consecutive_seeds(client, gpt2_model):
    r = client.completions.create(model=client.models.list().data[0].id, prompt="Hello", max_tokens=8, seed=100, n=3)
    refs = [expected(gpt2_model, "Hello", 100 + i, max_tokens=8) for i in range(3)]
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == [x.text for x in refs]
    assert r.usage.completion_tokens == sum(x.n_gen for x in refs)
    assert r.usage.prompt_tokens == len(gpt2_model.tokenize("Hello"))
    texts = {}  # streamed: the choices one after another, told apart by index
    for ch in client.completions.create(model=client.models.list().data[0].id, prompt="Hello", max_tokens=8,
                                        seed=100, n=3, stream=True):
        texts[ch.choices[0].index] = texts.get(ch.choices[0].index, "") + ch.choices[0].text
    assert [texts[i] for i in range(3)] == [x.text for x in refs]


def test_logprobs_and_echo(http, gpt2_model, gpt2_dir):
    import torch
    from transformers import GPT2LMHeadModel

    prompt = "It was the best of times"
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 6, "seed": 3, "logprobs": 3, "echo": True})
    assert r.status_code == 200, r.text
    ch = r.json()["choices"][0]
    ids = gpt2_model.tokenize(prompt)
    ref = expected(gpt2_model, prompt, 3, max_tokens=6, logprobs=3)
    assert ch["text"] == prompt + ref.text
    lp = ch["logprobs"]
    n = len(ids)
    assert len(lp["tokens"]) == n + ref.n_gen and lp["token_logprobs"][0] is None
    assert lp["tokens"] == [gpt2_model.detokenize([t]) for t in ids + ref.tokens]
    assert lp["text_offset"] == list(np.cumsum([0] + [len(t) for t in lp["tokens"][:-1]]))
    assert np.array_equal(lp["token_logprobs"][n:], ref.logprobs)  # the generated part: the API's own numbers
    # the prompt part against HF transformers on the same checkpoint
    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        hf_lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()  # [n, n_vocab]
    assert_close(lp["token_logprobs"][1:n], hf_lp[np.arange(n - 1), ids[1:]], MODEL_F32_VS_HF, "prompt logprobs")
    # the best alternative at each prompt position is HF's most probable token (ids decoding to the same text,
    # e.g. partial UTF-8 bytes, share one key, so a position may list fewer than 3)
    assert all(1 <= len(top) <= 3 for top in lp["top_logprobs"][1:n])
    assert_close([max(top.values()) for top in lp["top_logprobs"][1:n]], hf_lp[:n - 1].max(axis=1),
                 MODEL_F32_VS_HF, "best prompt alternatives")


def test_tokenize_detokenize(http, gpt2_model):
    text = "Hello world, hello <|endoftext|> again"
    r = http.post("/tokenize", json={"content": text}).json()
    assert r["tokens"] == gpt2_model.tokenizer.encode(text, special=True)
    assert 50256 in r["tokens"]
    r2 = http.post("/tokenize", json={"content": text, "parse_special": False, "with_pieces": True}).json()
    assert 50256 not in [t["id"] for t in r2["tokens"]]
    assert "".join(t["piece"] for t in r2["tokens"]) == text
    assert http.post("/detokenize", json={"tokens": r["tokens"]}).json()["content"] == text


def _err(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert isinstance(e["message"], str) and e["message"] and "type" in e
    return e


def test_bad_requests_get_openai_errors(gpt2_server, http, client):
    e = _err(http.post("/v1/completions", content=b'{"prompt": "x", '), 400)
    assert e["code"] == "invalid_json"
    _err(http.post("/v1/completions", content=b"[1, 2]"), 400)
    e = _err(http.post("/v1/completions", json={"prompt": "x", "max_tokens": "ten"}), 400)
    assert e["param"] == "max_tokens"
    e = _err(http.post("/v1/completions", json={"prompt": "x", "temperature": "hot"}), 400)
    assert e["param"] == "temperature"
    _err(http.post("/v1/completions", json={"prompt": "x", "n": True}), 400)
    _err(http.post("/v1/completions", json={"prompt": {"text": "x"}}), 400)
    _err(http.post("/v1/completions", json={"max_tokens": 3}), 400)  # no prompt
    _err(http.post("/v1/completions", json={"prompt": "x", "top_p": 1.5}), 400)
    _err(http.post("/v1/completions", json={"prompt": "x", "logit_bias": {"abc": 1}}), 400)
    e = _err(http.post("/v1/completions", json={"prompt": "x", "logit_bias": {"99999": -100}}), 400)
    assert "99999" in e["message"]
    _err(http.post("/v1/completions", json={"prompt": [1, 2, 60000]}), 400)
    # unknown fields are ignored
    r = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "frobnicate": {"a": 1}, "user": "me"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    # a prompt longer than the context (256 tokens) says so
    e = _err(http.post("/v1/completions", json={"prompt": "hello " * 300}), 400)
    assert e["code"] == "context_length_exceeded" and "context is 256" in e["message"]
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=client.models.list().data[0].id, prompt="hello " * 300, max_tokens=1)
    # an unknown model name
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=1)
    # GPT-2 has no chat template
    e = _err(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}), 400)
    assert "chat template" in e["message"]
    _err(http.post("/v1/chat/completions", json={"messages": []}), 400)
    _err(http.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "hi"}]}), 400)
    # routes
    _err(http.get("/v1/nope"), 404)
    _err(http.get("/v1/completions"), 405)
    # the API key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + KEY}):
        e = _err(httpx.post(gpt2_server.url + "/v1/completions", json={"prompt": "x"}, headers=headers), 401)
        assert e["code"] == "invalid_api_key"
    _err(httpx.get(gpt2_server.url + "/v1/models"), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gpt2_server.url + "/v1", api_key="nope", max_retries=0).models.list()
    # and the server is still fine
    assert http.get("/health").json()["status"] == "ok"


def test_load_50_requests_from_8_clients(http, gpt2_model):
    """50 seeded requests (streamed and not) from 8 threads on 4 slots: none fails or is lost, each text is the
    text the same request gives alone, and more than one slot served them."""
    prompts = ["The quick brown fox", "Once upon a time", "In the beginning", "Hello world", "It was the best"]
    jobs = [(prompts[i % 5], 1000 + i, i % 2 == 1) for i in range(50)]

    def one(job):
        prompt, seed, stream = job
        body = {"prompt": prompt, "max_tokens": 10, "seed": seed, "temperature": 0.9}
        if not stream:
            r = http.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            d = r.json()
            return d["choices"][0]["text"], d["usage"]["completion_tokens"], d["id_slot"]
        with http.stream("POST", "/v1/completions", json=dict(body, stream=True)) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        return "".join(c["choices"][0]["text"] for c in chunks), None, chunks[-1]["id_slot"]

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, jobs, timeout=300))
    assert time.monotonic() - t0 < 300
    assert len(results) == 50
    for (prompt, seed, _), (text, n_gen, _) in zip(jobs, results):
        ref = expected(gpt2_model, prompt, seed, max_tokens=10, temperature=0.9)
        assert text == ref.text, (prompt, seed)
        assert n_gen in (None, ref.n_gen)
    assert len({slot for _, _, slot in results}) > 1
    # one at a time through the server: the same texts again
    for job, (text, _, _) in list(zip(jobs, results))[:5]:
        assert one((job[0], job[1], False))[0] == text
    health = http.get("/health").json()
    assert health["slots_processing"] == 0 and health["requests_waiting"] == 0


def test_slot_pool_is_fifo_and_a_worker_frees_its_slot(gpt2_model):
    """The scheduler alone (no HTTP): one slot, three waiters, one of them abandoned; the slot passes from the
    worker thread that held it to the waiters in arrival order, skipping the abandoned one."""
    import asyncio
    import threading

    from pyinfer.server.slots import SlotPool

    async def main():
        pool = SlotPool(gpt2_model, 1, n_ctx=64, n_threads=1)
        slot = await pool.acquire([1, 2])
        waiters = [asyncio.ensure_future(pool.acquire([i])) for i in range(3)]
        await asyncio.sleep(0)
        assert pool.n_waiting == 3 and pool.n_busy == 1
        waiters[1].cancel()
        gate, seen = threading.Event(), []
        job = pool.start(slot, lambda s, j: (gate.wait(10), seen.append(threading.current_thread().name)))
        await asyncio.sleep(0.05)
        assert not waiters[0].done()  # the worker still holds the slot
        gate.set()
        assert await asyncio.wait_for(job.events.get(), 10) == ("done", None)
        assert await asyncio.wait_for(waiters[0], 10) is slot and seen[0].startswith("pyinfer-slot")
        assert not waiters[2].done()
        pool.release(slot)
        assert await asyncio.wait_for(waiters[2], 10) is slot and waiters[1].cancelled()
        pool.release(slot)
        assert pool.n_busy == 0 and pool.n_waiting == 0
        pool.shutdown()

    asyncio.run(main())


def test_cli_refuses_bad_flags():
    assert "--parallel" in assert_one_line_error(*run_cli("serve", "--parallel", "0"))
    assert "--port" in assert_one_line_error(*run_cli("serve", "--port", "70000"))


# ---------------------------------------------------------------------------------------------------------------------
# the default model SmolLM2: chat through its template, KV-cache reuse, client disconnects


@pytest.fixture(scope="module")
def smol_path():
    return str(smollm2_gguf_path())


@pytest.fixture(scope="module")
def smol_model(smol_path):
    return pyinfer.load(smol_path, n_ctx=512, n_threads=2)


@pytest.fixture(scope="module")
def smol_server(smol_path, tmp_path_factory):
    """`pyinfer serve` with no -m: the default model, found in a cache that holds the tests' copy of it."""
    from pyinfer.models import DEFAULT_MODEL
    cache = tmp_path_factory.mktemp("xdg-cache")
    (cache / "pyinfer").mkdir()
    os.symlink(smol_path, cache / "pyinfer" / DEFAULT_MODEL.name)
    yield from _serve(tmp_path_factory, "smol", ["-c", "512", "--parallel", "2", "-t", "2"],
                      env={"XDG_CACHE_HOME": str(cache)})


@pytest.fixture(scope="module")
def smol_client(smol_server):
    return openai.OpenAI(base_url=smol_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_chat_equals_the_python_api_and_reuses_the_cache(smol_client, smol_model):
    assert [m.id for m in smol_client.models.list().data] == ["smollm2-135m"]
    msgs = [{"role": "user", "content": "Name the capital city of France."}]
    r = smol_client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=12, seed=7)
    ref = smol_model.generate(smol_model.chat_ids(msgs), max_tokens=12, seed=7, details=True, cache_prompt=False)
    assert r.choices[0].message.content == ref.text and r.choices[0].message.role == "assistant"
    ids1 = smol_model.chat_ids(msgs)
    assert r.usage.prompt_tokens == len(ids1) and r.usage.completion_tokens == ref.n_gen
    # the conversation goes on: only the new part is evaluated, in the slot that holds the old part
    msgs2 = msgs + [{"role": "assistant", "content": r.choices[0].message.content},
                    {"role": "user", "content": "And of Italy?"}]
    ids2 = smol_model.chat_ids(msgs2)
    r2 = smol_client.chat.completions.create(model="smollm2-135m", messages=msgs2, max_tokens=8, seed=8)
    t = r2.model_extra["timings"]
    # the slot's cache holds the prompt and the generated tokens, but the last of them only if an end-of-turn token
    # followed it (a run cut by max_tokens never evaluates its last token)
    cached = ids1 + (ref.tokens if ref.finish_reason == "eos" else ref.tokens[:-1])
    reuse = min(_lcp(cached, ids2), len(ids2) - 1)
    assert reuse > len(ids1) // 2
    assert t["cache_n"] == reuse == r2.usage.prompt_tokens_details.cached_tokens
    assert t["prompt_n"] == len(ids2) - reuse and r2.model_extra["id_slot"] == r.model_extra["id_slot"]
    ref2 = smol_model.generate(ids2, max_tokens=8, seed=8, details=True, cache_prompt=False)
    assert r2.choices[0].message.content == ref2.text


def test_chat_stream_and_logprobs(smol_client, smol_model):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    pieces, lps, roles = [], [], []
    for ch in smol_client.chat.completions.create(model="smollm2-135m", messages=msgs, max_tokens=10, seed=2,
                                                  stream=True, logprobs=True, top_logprobs=2):
        d = ch.choices[0].delta
        roles.append(d.role)
        pieces.append(d.content or "")
        if ch.choices[0].logprobs is not None:
            lps += ch.choices[0].logprobs.content
    ref = smol_model.generate(smol_model.chat_ids(msgs), max_tokens=10, seed=2, details=True, cache_prompt=False,
                              logprobs=2)
    assert roles[0] == "assistant" and "".join(pieces) == ref.text
    assert [x.logprob for x in lps] == ref.logprobs
    assert [x.token for x in lps] == [smol_model.detokenize([t]) for t in ref.tokens]
    assert all(len(x.top_logprobs) == 2 and x.top_logprobs[0].logprob >= x.logprob - 1e-12 for x in lps)


def test_client_disconnect_stops_generation_and_frees_the_slot(smol_server):
    url = smol_server.url
    body = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}], "stream": True,
            "ignore_eos": True, "max_tokens": 460, "seed": 1}
    with httpx.Client(base_url=url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                n += line.startswith("data: ")
                if n >= 4:
                    break  # leaving the block closes the connection mid-stream
        # not streamed: the client gives up after a moment
        with pytest.raises(httpx.TimeoutException):
            c.post("/v1/chat/completions", json=dict(body, stream=False), timeout=0.5)
        deadline = time.monotonic() + 30
        while True:
            slots = c.get("/slots").json()
            if all(s["state"] == "idle" for s in slots) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(s["state"] == "idle" for s in slots), slots
        # both stopped early: neither slot went on to its 460 tokens
        assert all(s["n_past"] < 300 for s in slots), slots
        assert c.get("/health").json()["status"] == "ok"


def test_sigterm_mid_stream_ends_the_stream_and_exits_0(smol_path, tmp_path):
    srv = ServerProcess(["-m", smol_path, "-c", "512"], tmp_path / "server.log")
    try:
        body = {"messages": [{"role": "user", "content": "Write a very long story."}], "stream": True,
                "ignore_eos": True, "max_tokens": 460}
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            events = []
            for line in lines:
                if line.startswith("data: "):
                    events.append(line[6:])
                if len(events) == 3:
                    srv.proc.send_signal(signal.SIGTERM)
                    break
            events += [line[6:] for line in lines if line.startswith("data: ")]
        t0 = time.monotonic()
        rc = srv.proc.wait(30)
    finally:
        rc = srv.stop()
    assert events[-1] == "[DONE]" and len(events) < 100, len(events)  # ended early, and cleanly
    assert time.monotonic() - t0 < 10
    assert rc == 0 and "Traceback" not in srv.text() and "ERROR" not in srv.text(), srv.text()


def test_chat_errors(smol_server, smol_client):
    with pytest.raises(openai.BadRequestError, match="context is 512") as e:
        smol_client.chat.completions.create(model="smollm2-135m", max_tokens=4,
                                            messages=[{"role": "user", "content": "word " * 600}])
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError):
        smol_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(smol_server.url + "/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]})
    assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]
    # content as a list of text parts is the same as the joined string
    parts = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]
    a = smol_client.chat.completions.create(model="smollm2-135m", max_tokens=4, seed=1,
                                            messages=[{"role": "user", "content": parts}])
    b = smol_client.chat.completions.create(model="smollm2-135m", max_tokens=4, seed=1,
                                            messages=[{"role": "user", "content": "Say hi."}])
    assert a.choices[0].message.content == b.choices[0].message.content
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (b.usage.prompt_tokens, b.usage.completion_tokens)
