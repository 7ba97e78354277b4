"""The `pyinfer` command line: `pyinfer run` with llama.cpp's flags, `pyinfer build-info`, `pyinfer --version`.
A subcommand is a name, a help line, a function adding its flags and a handler (args -> exit code), registered in
COMMANDS with @register_command. main() turns errors into one `error: ...` line on stderr and an exit code
(1; argparse: 2; Ctrl-C: 130). Uses only the public API (pyinfer.load, generate.py, sampling.py); no model code.
"""
import argparse
import json
import os
import secrets
import sys
import time
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


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _version():
    import pyinfer
    v = getattr(pyinfer, "__version__", None)
    if v is None:
        try:
            from importlib.metadata import version
            v = version("pyinfer")
        except Exception:  # not installed as a distribution (a source checkout on PYTHONPATH)
            v = "unknown"
    return v


def _one_line(exc):
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        msg = f"{exc.strerror}: {exc.filename}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())  # a multi-line message becomes one line


# ----------------------------------------------------------------------------------------------------------------
# run


def add_run_args(p):
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="PATH", default=None,
                   help="the model: a Hugging Face folder, or any path pyinfer.load accepts")
    g.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="threads for compute (default: chosen by the runtime)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="context size in tokens, prompt included (default: 0 = the model's)")
    g.add_argument("--dtype", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type after loading: auto keeps the file's (default: auto)")
    g.add_argument("--f16", action="store_true", help="same as --dtype f16: convert weights to f16 at load")

    g = p.add_argument_group("prompt (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt text")
    src.add_argument("-f", "--file", metavar="FNAME", help="read the prompt from a UTF-8 file (one trailing newline "
                                                           "is dropped, as llama.cpp does)")

    g = p.add_argument_group("generation")
    g.add_argument("-n", "--n-predict", type=int, default=128, metavar="N",
                   help="tokens to generate; -1 = until end of text or the context is full (default: 128)")
    g.add_argument("--temp", type=float, default=0.8, metavar="T",
                   help="temperature; <= 0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40, metavar="K", help="top-k; 0 = off (default: 40)")
    g.add_argument("--top-p", type=float, default=0.95, metavar="P", help="top-p; 1.0 = off (default: 0.95)")
    g.add_argument("-s", "--seed", type=int, default=-1, metavar="SEED",
                   help="RNG seed; -1 = random, reported with the timings (default: -1)")


def _read_prompt(args):
    if args.prompt is not None:
        return args.prompt
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"prompt file not found: {args.file}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file is not valid UTF-8: {args.file} ({e.reason} at byte {e.start})") from None
    return text[:-1] if text.endswith("\n") else text


def format_timings(stats, t_load_s, sampler):
    """llama.cpp-style timing lines (no trailing newline) for stderr."""
    def rate(n, t_s, unit):
        ms = t_s * 1e3
        per = f"{ms / n:8.2f} ms per token, {n / t_s:9.2f} tokens per second" if n > 0 and t_s > 0 else "n/a"
        return f"{ms:10.2f} ms / {n:5d} {unit} ({per})"
    return "\n".join([
        f"pyinfer: sampling: seed = {sampler.seed}, temp = {sampler.temperature:.3f}, top_k = {sampler.top_k}, "
        f"top_p = {sampler.top_p:.3f}; stopped: {stats.stop_reason}",
        f"pyinfer:        load time = {t_load_s * 1e3:10.2f} ms",
        f"pyinfer: prompt eval time = {rate(stats.n_prompt, stats.t_prompt_s, 'tokens')}",
        f"pyinfer:        eval time = {rate(stats.n_gen, stats.t_gen_s, 'tokens')}",
        f"pyinfer:      sample time = {stats.t_sample_s * 1e3:10.2f} ms (part of eval time)",
        f"pyinfer:       total time = {(t_load_s + stats.t_prompt_s + stats.t_gen_s) * 1e3:10.2f} ms",
    ])


@register_command("run", "generate text from a prompt, streamed to stdout; timings go to stderr", add_run_args)
def cmd_run(args):
    import pyinfer
    from .generate import generate_tokens, prompt_to_ids, stream_text
    from .sampling import Sampler

    # Everything that can be checked without the model is checked before loading it.
    if args.n_predict < -1:
        raise ValueError(f"-n/--n-predict must be >= 0, or -1 for no limit (got {args.n_predict})")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"-t/--threads must be >= 1 (got {args.threads})")
    if args.ctx_size < 0:
        raise ValueError(f"-c/--ctx-size must be >= 0, 0 meaning the model's (got {args.ctx_size})")
    if args.seed < -1:
        raise ValueError(f"-s/--seed must be >= 0, or -1 for a random seed (got {args.seed})")
    if args.f16 and args.dtype == "f32":
        raise ValueError("--f16 conflicts with --dtype f32; give one of them")
    dtype = "f16" if args.f16 else (None if args.dtype == "auto" else args.dtype)
    seed = args.seed if args.seed >= 0 else secrets.randbits(32)  # drawn here so the run can be repeated with -s
    sampler = Sampler(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=seed)
    prompt = _read_prompt(args)
    if args.model is not None and not os.path.exists(args.model):
        raise FileNotFoundError(f"model not found: {args.model}")

    load_kwargs = {"n_threads": args.threads, "dtype": dtype}
    if args.ctx_size > 0:
        load_kwargs["n_ctx"] = args.ctx_size
    t0 = time.perf_counter()
    model = pyinfer.load(args.model, **load_kwargs)
    t_load_s = time.perf_counter() - t0

    gen = generate_tokens(model, prompt_to_ids(model, prompt), sampler, args.n_predict)  # ValueError: too long
    pieces = stream_text(gen, model.tokenizer)
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a console that cannot show a character gets '?', not a crash
    rc = 0
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        rc = 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a SIGPIPE'd tool would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())  # so the interpreter's final flush does not fail again
        rc = 141
    finally:
        pieces.close()  # stops decoding; stats are final
    if rc != 141 and out.isatty():
        out.write("\n")
        out.flush()
    sys.stderr.write("\n" + format_timings(gen.stats, t_load_s, sampler) + "\n")
    sys.stderr.flush()
    return rc


# ----------------------------------------------------------------------------------------------------------------
# build-info


@register_command("build-info", "print how the C++ extension was built (ISA, OpenMP, ...) as JSON")
def cmd_build_info(args):
    import pyinfer
    print(json.dumps(pyinfer.build_info(), indent=2, sort_keys=True, default=str))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# quantize


def add_quantize_args(p):
    from .quantize import add_arguments
    add_arguments(p)


@register_command("quantize", "write a GGUF at f32/f16/q8_0/q4_0/q4_1 from a HF folder or a GGUF; prints the "
                              "per-tensor error report", add_quantize_args)
def cmd_quantize(args):
    from .quantize import run
    return run(args)


# ----------------------------------------------------------------------------------------------------------------
# entry point


def build_parser():
    parser = _Parser(prog="pyinfer", description="CPU LLM inference.")
    parser.add_argument("--version", action="version", version=f"pyinfer {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for c in COMMANDS.values():
        c.add_arguments(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def main(argv=None):
    """Console entry point `pyinfer`: returns the exit code (0 ok, 1 error, 2 bad usage, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed what it had to
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        sys.stderr.write(f"error: {_one_line(e)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
