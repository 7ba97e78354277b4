"""What every `pyinfer` subcommand shares: the command registry (@register_command), the one-line-error argparse
parser, the model flags (-m, -t, -c, --dtype) with their checks, and small readers/writers (UTF-8 text files,
stdout that survives a closed pipe). Imports nothing heavy: a command imports pyinfer inside its handler.
"""
import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable  # (argparse.ArgumentParser) -> None
    run: Callable  # (argparse.Namespace) -> int exit code


COMMANDS = {}  # name -> Command, in registration order (the order `pyinfer --help` lists them)


def register_command(name, help, add_arguments=lambda p: None):
    """Decorator: @register_command("bench", "time prefill and decode", add_bench_args) on a handler(args) -> int."""
    def deco(handler):
        COMMANDS[name] = Command(name, help, add_arguments, handler)
        return handler
    return deco


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def version():
    import pyinfer
    v = getattr(pyinfer, "__version__", None)
    if v is None:
        try:
            from importlib.metadata import version as dist_version
            v = dist_version("pyinfer")
        except Exception:  # not installed as a distribution (a source checkout on PYTHONPATH)
            v = "unknown"
    return v


def one_line(exc):
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        msg = f"{exc.strerror}: {exc.filename}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())  # a multi-line message becomes one line


# ----------------------------------------------------------------------------------------------------------------
# model flags


THREADS_HELP = "threads for compute (default: chosen by the runtime)"
DTYPE_HELP = "weight type after loading: auto keeps the file's (default: auto)"
EXACT_HELP = ("exact activations: f32 activations against weights dequantized on the fly, never rounded to 8 "
              "bits (the model the file holds; slower). Default: 8-bit activation blocks, as llama.cpp")


def add_exact_flag(g):
    """--exact: pyinfer.load(..., activations="f32")."""
    g.add_argument("--exact", action="store_true", help=EXACT_HELP)


def add_model_flags(g, with_model=True, model_required=True, model_help=None):
    """-m/--model (required unless model_required=False: then None = the default model), -t/--threads, --dtype,
    --exact."""
    if with_model:
        g.add_argument("-m", "--model", metavar="PATH", required=model_required, default=None,
                       help=model_help or "the model: a Hugging Face folder or a GGUF file")
    g.add_argument("-t", "--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    g.add_argument("--dtype", choices=("auto", "f32", "f16"), default="auto", help=DTYPE_HELP)
    g.add_argument("--cache-type", choices=("f16", "f32"), default=None, dest="cache_type",
                   help="KV cache element type: f16 halves its memory, as llama.cpp's default (default: f16, or "
                        "PYINFER_KV_TYPE)")
    add_exact_flag(g)


def check_threads(n):
    if n is not None and n < 1:
        raise ValueError(f"-t/--threads must be >= 1 (got {n})")


def check_ctx_size(n, zero_means="the model's"):
    if n < 0:
        raise ValueError(f"-c/--ctx-size must be >= 0, 0 meaning {zero_means} (got {n})")


def check_model_path(path):
    """A path that must exist, or a named model (pyinfer.models.NAMED_MODELS); None is the default model."""
    if path is None:
        return
    from ..models import NAMED_MODELS
    if not os.path.exists(path) and path not in NAMED_MODELS:
        raise FileNotFoundError(f"model not found: {path}")


def load_kwargs(ctx, threads, dtype, exact=False, kv_type=None):
    """pyinfer.load's keyword arguments for the model flags: ctx 0 = the model's own context, dtype "auto" keeps the
    file's, exact = activations "f32", kv_type the KV cache's element type (None: the default, f16)."""
    kwargs = {"n_threads": threads, "dtype": None if dtype in (None, "auto") else dtype, "kv_type": kv_type}
    if exact:
        kwargs["activations"] = "f32"
    if ctx > 0:
        kwargs["n_ctx"] = ctx
    return kwargs


def load_model(path, ctx, threads, dtype, exact=False, kv_type=None):
    """pyinfer.load with a context of `ctx` tokens (0: the model's own); dtype "auto" keeps the file's; exact: f32
    activations (activations="f32"); kv_type the KV cache's element type (None: the default, f16)."""
    import pyinfer
    check_model_path(path)
    return pyinfer.load(path, **load_kwargs(ctx, threads, dtype, exact, kv_type))



# ----------------------------------------------------------------------------------------------------------------
# input and output


def read_text_file(path, what="text file"):
    """The whole UTF-8 file, one trailing newline dropped (llama.cpp's -f does the same)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{what} is a directory: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not valid UTF-8: {path} ({e.reason} at byte {e.start})") from None
    return text[:-1] if text.endswith("\n") else text


def write_stdout(text):
    """Write and flush; returns 141 if the reader went away (`| head`), else 0."""
    out = sys.stdout
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())  # so the interpreter's final flush does not fail again
        return 141
    return 0
