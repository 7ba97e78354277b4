"""The HTTP app (Starlette): OpenAI's /v1/chat/completions, /v1/completions and /v1/models, llama.cpp's /health,
/slots, /tokenize and /detokenize. A handler validates the body (schema.py), renders and tokenizes the prompt,
takes a slot (slots.py) and turns the worker's events into one JSON response or server-sent events ending in
`data: [DONE]`. Every failure is an OpenAI-style JSON error; no request can stop the server. Uses the public
Model/Session/generate API only; runs no model code itself.
"""
import contextlib
import hmac
import json
import os
import secrets
import sys
import time
import traceback
import uuid

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..generate import prompt_to_ids, top_logprobs_of
from ..sampling import log_softmax
from .schema import (ApiError, ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest,
                     validation_error)
from .slots import SlotPool

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}  # ours -> OpenAI's
MAX_BODY = 32 * 1024 * 1024


def error_response(e):
    return JSONResponse(e.body(), status_code=e.status)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


async def parse_body(request, cls):
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the request body is {len(raw)} bytes; at most {MAX_BODY} are accepted")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


class EventStream(StreamingResponse):
    """Server-sent events that stop (closing the body iterator, so its `finally` runs) as soon as the client
    disconnects, whatever ASGI spec version the server speaks."""
    media_type = "text/event-stream"

    async def __call__(self, scope, receive, send):
        async with anyio.create_task_group() as tg:
            async def stream():
                try:
                    await self.stream_response(send)
                except OSError:  # the client went away while we wrote
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


def sse(obj):
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def sum_timings(ts):
    """llama.cpp's `timings` object summed over the choices (cache_n: prompt tokens taken from the KV cache)."""
    keys = ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "sample_ms", "cache_n")
    t = {k: sum(x.get(k, 0) for x in ts) for k in keys}
    t["prompt_per_token_ms"] = t["prompt_ms"] / t["prompt_n"] if t["prompt_n"] else 0.0
    t["prompt_per_second"] = 1e3 * t["prompt_n"] / t["prompt_ms"] if t["prompt_ms"] > 0 else 0.0
    t["predicted_per_token_ms"] = t["predicted_ms"] / t["predicted_n"] if t["predicted_n"] else 0.0
    t["predicted_per_second"] = 1e3 * t["predicted_n"] / t["predicted_ms"] if t["predicted_ms"] > 0 else 0.0
    return t


class Server:
    """The state behind the routes: the model, its slots, its public name(s) and the API key."""

    def __init__(self, model, *, n_slots=1, n_ctx=None, n_threads=None, api_key=None, model_id=None,
                 aliases=()):
        self.model = model
        self.pool = SlotPool(model, n_slots, n_ctx=n_ctx, n_threads=n_threads)
        self.model_id = model_id or os.path.basename(str(model.path))
        self.names = {self.model_id, *[a for a in aliases if a]}
        self.api_key = api_key
        self.created = int(time.time())

    # --- checks ---------------------------------------------------------------------------------------------
    def check_auth(self, request):
        if self.api_key is None:
            return
        h = request.headers.get("authorization", "")
        key = h[7:].strip() if h.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if not key:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer KEY'",
                           type="authentication_error", code="invalid_api_key")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(401, "invalid API key", type="authentication_error", code="invalid_api_key")

    def check_model(self, name):
        if name is not None and name not in self.names:
            raise ApiError(404, f"the model {name!r} does not exist; this server serves {self.model_id!r} "
                                f"(GET /v1/models)", param="model", code="model_not_found")

    def check_prompt(self, ids, param="prompt"):
        if not ids:
            raise ApiError(400, "the prompt is empty (0 tokens)", param=param)
        bad = [t for t in ids if not 0 <= t < self.model.n_vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is out of range: the vocabulary has {self.model.n_vocab} tokens",
                           param=param)
        if len(ids) > self.pool.n_ctx:
            raise ApiError(400, f"the prompt is {len(ids)} tokens but the context is {self.pool.n_ctx}; shorten "
                                f"the prompt or start the server with a larger -c/--ctx-size",
                           param=param, code="context_length_exceeded")

    # --- running --------------------------------------------------------------------------------------------
    def gen_kwargs(self, req, max_tokens, logprobs):
        return dict(max_tokens=-1 if max_tokens is None else max_tokens, temperature=float(req.temperature),
                    top_k=req.top_k, top_p=float(req.top_p), min_p=float(req.min_p),
                    typical_p=float(req.typical_p), repeat_penalty=float(req.repeat_penalty),
                    repeat_last_n=req.repeat_last_n, frequency_penalty=float(req.frequency_penalty),
                    presence_penalty=float(req.presence_penalty), logit_bias=req.logit_bias, stop=req.stop,
                    ignore_eos=req.ignore_eos, logprobs=logprobs)

    def make_work(self, prompts, n, kwargs, seed, cache_prompt, echo_logprobs=None):
        """The function a worker thread runs in the slot: for each prompt, n choices (seeds seed, seed + 1, ...).
        Events: ("start", (index, prompt_logprobs)), ("piece", (index, text, tokens)), ("end", (index, completion))
        where tokens are [(id, logprob, top)] (logprob None without logprobs)."""
        pool = self.pool

        def work(slot, job):
            s = slot.session
            if not cache_prompt:
                s.reset()
            for pi, ids in enumerate(prompts):
                prompt_lp = None
                if echo_logprobs is not None:
                    s.n_threads = pool.threads_for(slot)
                    logits = s.forward(ids)  # [n_prompt, n_vocab]
                    prompt_lp = [(ids[0], None, [])]
                    for i in range(1, len(ids)):
                        lp = log_softmax(logits[i - 1])
                        prompt_lp.append((ids[i], float(lp[ids[i]]), top_logprobs_of(lp, echo_logprobs)))
                    del logits
                for j in range(n):
                    idx = pi * n + j
                    s.n_threads = pool.threads_for(slot)
                    stream = s.generate(ids, seed=seed + j, stream=True, **kwargs)  # ValueError: bad arguments
                    gen = stream.generation
                    job.emit("start", (idx, prompt_lp))
                    k = 0
                    try:
                        for piece in stream:
                            k2 = len(gen.tokens)
                            job.emit("piece", (idx, piece, self._token_info(gen, k, k2)))
                            k = k2
                            if job.cancel.is_set():
                                return
                            s.n_threads = pool.threads_for(slot)
                    finally:
                        stream.close()
                    c = stream.result()
                    job.emit("end", (idx, c, self._token_info(gen, k, len(gen.tokens))))
        return work

    @staticmethod
    def _token_info(gen, a, b):
        if gen.logprobs is None:
            return [(t, None, None) for t in gen.tokens[a:b]]
        return list(zip(gen.tokens[a:b], gen.logprobs[a:b], gen.top_logprobs[a:b]))

    async def run(self, request, first_ids, work):
        """Take a slot (waiting in the queue if need be) and start `work` in it; returns (job, slot, first event).
        A client that disconnects meanwhile cancels the wait, or the job (which then frees its slot itself)."""
        box = {}
        async with anyio.create_task_group() as tg:
            async def watch():
                while True:
                    msg = await request.receive()
                    if msg["type"] == "http.disconnect":
                        box["gone"] = True
                        if "job" in box:
                            box["job"].cancel.set()
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            slot = await self.pool.acquire(first_ids)
            box["job"] = job = self.pool.start(slot, work)
            first = await job.events.get()
            tg.cancel_scope.cancel()  # stop watching: the response takes the receive channel over
        if box.get("gone"):
            raise ApiError(499, "client closed the request")
        return job, slot, first

    async def collect(self, request, job, first):
        """All events of a non-streamed job (a disconnect cancels it), the last being ("done"|"error", ...)."""
        events = [first]
        async with anyio.create_task_group() as tg:
            async def watch():
                while True:
                    msg = await request.receive()
                    if msg["type"] == "http.disconnect":
                        job.cancel.set()
                        return
            tg.start_soon(watch)
            while events[-1][0] not in ("done", "error"):
                events.append(await job.events.get())
            tg.cancel_scope.cancel()
        return events


def _error_of(exc):
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValueError):
        return ApiError(400, " ".join(str(exc).split()))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write("pyinfer serve: request failed:\n" + tb)
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")


def _log_line(kind, slot, n_prompt, completions):
    ts = sum_timings([c.timings for c in completions])
    sys.stderr.write(f"pyinfer serve: slot {slot.id}: {kind}: {n_prompt} prompt tokens ({ts['cache_n']} cached), "
                     f"{ts['predicted_n']} generated at {ts['predicted_per_second']:.1f} tokens/s, finish "
                     f"{','.join(str(c.finish_reason) for c in completions)}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------------------
# response shapes


class ChatShape:
    """chat.completion / chat.completion.chunk objects."""
    object = "chat.completion"

    def __init__(self, srv, req, n_choices):
        self.srv, self.req, self.n = srv, req, n_choices
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.tok = srv.model.tokenizer
        self.want_lp = req.logprobs is True
        self.n_top = (getattr(req, "top_logprobs", None) or 0) if self.want_lp else 0

    def head(self, obj):
        return {"id": self.id, "object": obj, "created": self.created, "model": self.srv.model_id,
                "system_fingerprint": "pyinfer"}

    def _entry(self, t, lp, top):
        def one(i, v):
            return {"token": self.tok.decode([i]), "logprob": v, "bytes": list(self.tok.token_bytes(i))}
        d = one(t, lp)
        d["top_logprobs"] = [one(i, v) for i, v in (top or [])[:self.n_top]]
        return d

    def logprobs(self, toks):
        if not self.want_lp:
            return None
        return {"content": [self._entry(*x) for x in toks]}

    def chunk(self, idx, delta, toks=(), finish=None):
        d = self.head("chat.completion.chunk")
        d["choices"] = [{"index": idx, "delta": delta, "logprobs": self.logprobs(toks) if toks else None,
                         "finish_reason": finish}]
        return d

    def start_chunk(self, idx, prompt_lp):
        return self.chunk(idx, {"role": "assistant", "content": ""})

    def piece_chunk(self, idx, text, toks):
        return self.chunk(idx, {"content": text}, toks)

    def end_chunk(self, idx, c, toks):
        return self.chunk(idx, {}, toks, FINISH.get(c.finish_reason))

    def choice(self, idx, c, prompt_lp, toks):
        return {"index": idx, "message": {"role": "assistant", "content": c.text},
                "logprobs": self.logprobs(toks), "finish_reason": FINISH.get(c.finish_reason)}


class CompletionShape(ChatShape):
    """text_completion objects (streamed as the same object, one piece of text each)."""

    def __init__(self, srv, req, n_choices, prompt_texts):
        super().__init__(srv, req, n_choices)
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.want_lp = req.logprobs is not None
        self.n_top = req.logprobs or 0
        self.prompt_texts = prompt_texts
        self.offset = {}

    def logprobs(self, toks, idx=0):
        if not self.want_lp:
            return None
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        off = self.offset.get(idx, 0)
        for t, lp, top in toks:
            s = self.tok.decode([t])
            out["tokens"].append(s)
            out["token_logprobs"].append(lp)
            out["top_logprobs"].append(None if lp is None else {self.tok.decode([i]): v for i, v in top[:self.n_top]})
            out["text_offset"].append(off)
            off += len(s)
        self.offset[idx] = off
        return out

    def chunk(self, idx, text, toks=(), finish=None):
        d = self.head("text_completion")
        d["choices"] = [{"index": idx, "text": text, "logprobs": self.logprobs(toks, idx) if toks else None,
                         "finish_reason": finish}]
        return d

    def start_chunk(self, idx, prompt_lp):
        if not self.req.echo:
            return None
        return self.chunk(idx, self.prompt_texts[idx // self.n], prompt_lp or ())

    def piece_chunk(self, idx, text, toks):
        return self.chunk(idx, text, toks)

    def end_chunk(self, idx, c, toks):
        return self.chunk(idx, "", toks, FINISH.get(c.finish_reason))

    def choice(self, idx, c, prompt_lp, toks):
        text = c.text
        if self.req.echo:
            text = self.prompt_texts[idx // self.n] + text
            toks = list(prompt_lp or []) + list(toks)
        return {"index": idx, "text": text, "logprobs": self.logprobs(toks, idx), "finish_reason":
                FINISH.get(c.finish_reason)}


def usage_of(prompts, completions_by_idx, n):
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(c.n_gen for c in completions_by_idx.values())
    cached = sum(completions_by_idx[i * n].n_reused for i in range(len(prompts)) if i * n in completions_by_idx)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached}}


# ------------------------------------------------------------------------------------------------------------
# the routes


def create_app(model, *, n_slots=1, n_ctx=None, n_threads=None, api_key=None, model_id=None, aliases=()):
    """The Starlette app serving `model` with n_slots sessions of n_ctx tokens each (None: the model's context)."""
    srv = Server(model, n_slots=n_slots, n_ctx=n_ctx, n_threads=n_threads, api_key=api_key, model_id=model_id,
                 aliases=aliases)

    def endpoint(fn, auth=True):
        async def handler(request):
            try:
                if auth:
                    srv.check_auth(request)
                return await fn(request)
            except Exception as e:  # noqa: BLE001  the server answers every request, whatever went wrong
                return error_response(_error_of(e))
        return handler

    async def health(request):
        return JSONResponse({"status": "ok", "slots_idle": len(srv.pool.slots) - srv.pool.n_busy,
                             "slots_processing": srv.pool.n_busy, "requests_waiting": srv.pool.n_waiting})

    async def slots(request):
        return JSONResponse([s.info() for s in srv.pool.slots])

    async def models(request):
        m = srv.model
        return JSONResponse({"object": "list", "data": [{
            "id": srv.model_id, "object": "model", "created": srv.created, "owned_by": "pyinfer",
            "meta": {"arch": m.arch, "n_vocab": m.n_vocab, "n_ctx": srv.pool.n_ctx, "n_ctx_train":
                     int(m.hparams.get("n_ctx_train", 0)), "n_slots": len(srv.pool.slots)}}]})

    async def tokenize(request):
        req = await parse_body(request, TokenizeRequest)
        tok = srv.model.tokenizer
        ids = tok.encode(req.content, special=req.parse_special)
        if req.add_special and tok.add_bos and tok.bos_id is not None:
            ids = [tok.bos_id] + ids
        if req.with_pieces:
            return JSONResponse({"tokens": [{"id": i, "piece": tok.decode([i])} for i in ids]})
        return JSONResponse({"tokens": ids})

    async def detokenize(request):
        req = await parse_body(request, DetokenizeRequest)
        bad = [t for t in req.tokens if not 0 <= t < srv.model.n_vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is out of range: the vocabulary has {srv.model.n_vocab} tokens",
                           param="tokens")
        return JSONResponse({"content": srv.model.tokenizer.decode(req.tokens)})

    async def chat(request):
        req = await parse_body(request, ChatRequest)
        srv.check_model(req.model)
        m = srv.model
        if m.chat_template is None:
            raise ApiError(400, f"the model {srv.model_id!r} has no chat template; use /v1/completions",
                           param="messages", code="no_chat_template")
        msgs = [{"role": "system" if x.role == "developer" else x.role, "content": x.text()} for x in req.messages]
        try:
            ids = m.chat_ids(msgs)
        except Exception as e:  # the template's own raise_exception, e.g. roles that do not alternate
            raise ApiError(400, f"the chat template refused the messages: {e}", param="messages") from None
        srv.check_prompt(ids, "messages")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        shape = ChatShape(srv, req, req.n)
        return await respond(request, req, shape, [ids], srv.gen_kwargs(req, max_tokens, logprobs), "chat")

    async def completions(request):
        req = await parse_body(request, CompletionRequest)
        srv.check_model(req.model)
        m = srv.model
        p = req.prompt
        raw = [p] if isinstance(p, str) or (p and isinstance(p[0], int)) else list(p)
        if not raw:
            raise ApiError(400, "the prompt list is empty", param="prompt")
        prompts = [prompt_to_ids(m, x) for x in raw]
        for ids in prompts:
            srv.check_prompt(ids)
        texts = [x if isinstance(x, str) else m.detokenize(x) for x in raw]
        shape = CompletionShape(srv, req, req.n, texts)
        echo_lp = req.logprobs if (req.echo and req.logprobs is not None) else None
        return await respond(request, req, shape, prompts, srv.gen_kwargs(req, req.max_tokens, req.logprobs),
                             "completion", echo_lp)

    async def respond(request, req, shape, prompts, kwargs, kind, echo_lp=None):
        seed = req.seed if req.seed is not None else secrets.randbits(32)
        work = srv.make_work(prompts, req.n, kwargs, seed, req.cache_prompt, echo_lp)
        job, slot, first = await srv.run(request, prompts[0], work)
        if first[0] == "error":
            raise first[1]
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            async def events():
                done = {}
                try:
                    ev = first
                    while True:
                        kind_, payload = ev
                        if kind_ == "start":
                            ch = shape.start_chunk(payload[0], payload[1])
                        elif kind_ == "piece":
                            ch = shape.piece_chunk(*payload)
                        elif kind_ == "end":
                            idx, c, toks = payload
                            done[idx] = c
                            ch = shape.end_chunk(idx, c, toks)
                            if len(done) == len(prompts) * req.n:
                                ch["timings"] = sum_timings([x.timings for x in done.values()])
                                ch["id_slot"] = slot.id
                        elif kind_ == "error":
                            yield sse(_error_of(payload).body())
                            break
                        else:  # done
                            break
                        if ch is not None:
                            if include_usage:
                                ch["usage"] = None
                            yield sse(ch)
                        ev = await job.events.get()
                    if include_usage:
                        u = shape.head("chat.completion.chunk" if kind == "chat" else "text_completion")
                        u["choices"] = []
                        u["usage"] = usage_of(prompts, done, req.n)
                        yield sse(u)
                    yield "data: [DONE]\n\n"
                    _log_line(kind, slot, sum(len(p) for p in prompts), list(done.values()))
                finally:
                    job.cancel.set()  # the client is gone, or we are done: either way stop generating
            return EventStream(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        events = await srv.collect(request, job, first)
        if events[-1][0] == "error":
            raise events[-1][1]
        starts = {p[0]: p[1] for k, p in events if k == "start"}
        toks, done = {}, {}
        for k, p in events:
            if k == "piece":
                toks.setdefault(p[0], []).extend(p[2])
            elif k == "end":
                toks.setdefault(p[0], []).extend(p[2])
                done[p[0]] = p[1]
        if len(done) != len(prompts) * req.n:  # cancelled: the client has gone, nobody reads this
            raise ApiError(499, "client closed the request")
        body = shape.head(shape.object if kind == "chat" else "text_completion")
        body["choices"] = [shape.choice(i, done[i], starts.get(i), toks.get(i, [])) for i in sorted(done)]
        body["usage"] = usage_of(prompts, done, req.n)
        body["timings"] = sum_timings([c.timings for c in done.values()])
        body["id_slot"] = slot.id
        _log_line(kind, slot, sum(len(p) for p in prompts), list(done.values()))
        return JSONResponse(body)

    async def not_found(request, exc):
        if exc.status_code == 405:
            return error_response(ApiError(405, f"method {request.method} is not allowed on {request.url.path}"))
        return error_response(ApiError(exc.status_code, f"no such endpoint: {request.method} {request.url.path}",
                                       code="not_found"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        srv.pool.shutdown()

    post = ["POST"]
    routes = [
        Route("/health", endpoint(health, auth=False)),
        Route("/v1/health", endpoint(health, auth=False)),
        Route("/slots", endpoint(slots)),
        Route("/v1/models", endpoint(models)),
        Route("/models", endpoint(models)),
        Route("/v1/chat/completions", endpoint(chat), methods=post),
        Route("/chat/completions", endpoint(chat), methods=post),
        Route("/v1/completions", endpoint(completions), methods=post),
        Route("/completions", endpoint(completions), methods=post),
        Route("/tokenize", endpoint(tokenize), methods=post),
        Route("/detokenize", endpoint(detokenize), methods=post),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.server = srv
    return app
