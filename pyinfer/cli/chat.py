"""`pyinfer chat`: talk with a model that has a chat template, one user message per line on stdin; the reply
streams to stdout. The KV cache keeps the conversation between turns (only the new turn is evaluated).
"""
import secrets
import sys

from .common import (add_exact_flag, check_ctx_size, check_model_path, check_threads, load_kwargs,
                     register_command)


def add_chat_args(p):
    p.add_argument("-m", "--model", metavar="PATH", default=None, help="the model (default: SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N")
    p.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N")
    add_exact_flag(p)
    p.add_argument("-n", "--n-predict", type=int, default=512, metavar="N", help="most tokens per reply")
    p.add_argument("-sys", "--system-prompt", metavar="TEXT", default=None)
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("-s", "--seed", type=int, default=-1)


@register_command("chat", "talk with the model; the KV cache keeps the conversation between turns", add_chat_args)
def cmd_chat(args):
    """Reads one user message per line from stdin ('/exit' or end of input stops). Each turn re-renders the whole
    conversation with the chat template; the model reuses the cached common prefix, so only the new turn runs."""
    import pyinfer

    check_threads(args.threads)
    check_ctx_size(args.ctx_size)
    check_model_path(args.model)
    model = pyinfer.load(args.model, **load_kwargs(args.ctx_size, args.threads, None, args.exact))
    if model.chat_template is None:
        raise ValueError(f"{model.path}: the model has no chat template; use `pyinfer run --raw`")
    messages = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
    seed = args.seed if args.seed >= 0 else secrets.randbits(32)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        reply = model.chat(messages, max_tokens=args.n_predict, stream=True, temperature=args.temp,
                           top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, seed=seed, details=False)
        text = []
        for piece in reply:
            text.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(text)})
        seed += 1

