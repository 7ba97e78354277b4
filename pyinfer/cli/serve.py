"""`pyinfer serve`: the OpenAI-compatible HTTP server (pyinfer/server/) on one model, with llama-server's flag
names (--host, --port, -c, -t, --parallel/-np, --api-key). Binds the socket itself, so --port 0 takes a free port
and the `listening on` line on stderr names the real one. Needs the `server` extra (Starlette, uvicorn, pydantic).
"""
import os
import signal
import socket
import sys
import threading

from .common import add_model_flags, check_ctx_size, check_threads, load_model, register_command

MISSING = "pyinfer serve needs the server extra: pip install \"pyinfer[server]\" (Starlette, uvicorn, pydantic)"


def add_serve_args(p):
    g = p.add_argument_group("model")
    add_model_flags(g, model_required=False,
                    model_help="the model: a GGUF file, a Hugging Face folder or a named model (default: "
                               "SmolLM2-135M-Instruct)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="context of each slot in tokens, prompt included (default: 0 = the model's)")
    g.add_argument("--alias", metavar="NAME", default=None,
                   help="the model's name in the API (default: the named model, else the file name)")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="port; 0 = any free one (default: 8080)")
    g.add_argument("-np", "--parallel", type=int, default=1, metavar="N",
                   help="slots: requests served at once, each with its own KV cache; more wait in a queue "
                        "(default: 1)")
    g.add_argument("--api-key", metavar="KEY", default=None,
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health (default: "
                        "$PYINFER_API_KEY, else none)")


def _model_names(path, model, alias):
    """(the id /v1/models reports, other names requests may use): --alias, else the named model's name (also when
    the file is a named model's cached file), else the file or folder name; the path as given is accepted too."""
    from ..models import NAMED_MODELS
    base = os.path.basename(os.path.normpath(str(model.path)))
    named = [k for k, v in NAMED_MODELS.items() if v.name == base]
    if path in NAMED_MODELS:
        named = [path]
    model_id = alias or (named[0] if named else base)
    return model_id, [n for n in (path, base, *named) if n and n != model_id]


@register_command("serve", "an OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models, "
                           "/health, /tokenize, /detokenize)", add_serve_args)
def cmd_serve(args):
    try:
        import uvicorn

        from ..server import create_app
    except ImportError as e:
        raise RuntimeError(f"{MISSING}; missing: {e.name}") from None
    check_threads(args.threads)
    check_ctx_size(args.ctx_size)
    if args.parallel < 1:
        raise ValueError(f"--parallel must be >= 1 (got {args.parallel})")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535 (got {args.port})")
    api_key = args.api_key if args.api_key is not None else os.environ.get("PYINFER_API_KEY") or None

    model = load_model(args.model, args.ctx_size, args.threads, args.dtype, args.exact, args.cache_type)
    model_id, aliases = _model_names(args.model, model, args.alias)
    app = create_app(model, n_slots=args.parallel, n_ctx=args.ctx_size or None, n_threads=args.threads,
                     api_key=api_key, model_id=model_id, aliases=aliases)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    pool = app.state.server.pool
    sys.stderr.write(f"pyinfer serve: {model_id} ({model.arch}, n_vocab {model.n_vocab}), {len(pool.slots)} slot(s) "
                     f"of {pool.n_ctx} tokens, {pool.n_threads} threads{', API key required' if api_key else ''}\n"
                     f"pyinfer serve: listening on http://{shown}:{port}\n")
    sys.stderr.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3,
                            lifespan="on")
    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            pool.cancel_all()  # running generations end now, so their streams close within the grace period
            await super().shutdown(sockets=sockets)

    server = Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the previous handler: make that a
    # no-op so a terminated server exits 0 (Ctrl-C still ends as KeyboardInterrupt: exit 130)
    main_thread = threading.current_thread() is threading.main_thread()
    prev = signal.signal(signal.SIGTERM, lambda sig, frame: None) if main_thread else None
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if main_thread:
            signal.signal(signal.SIGTERM, prev)
    return 0
