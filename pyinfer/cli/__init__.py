"""The `pyinfer` command line: one module per subcommand (run, chat, pull, quantize, perplexity, kld, bench,
build-info, serve), each registering a name, a help line, its flags and a handler (args -> exit code) in
common.COMMANDS. main() turns errors into one `error: ...` line on stderr and an exit code (1; argparse: 2;
Ctrl-C: 130). Commands use only the public API (pyinfer.load, generate.py, sampling.py, ...); no model code.
"""
import sys

from . import run, chat, pull, quantize, perplexity, kld, bench, build_info, serve  # noqa: F401  (registers them)
from .common import COMMANDS, Parser, one_line, register_command, version
from .run import format_timings, parse_logit_bias

__all__ = ["main", "build_parser", "register_command", "COMMANDS", "format_timings", "parse_logit_bias"]


def build_parser():
    parser = Parser(prog="pyinfer", description="CPU LLM inference.")
    parser.add_argument("--version", action="version", version=f"pyinfer {version()}")
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
        sys.stderr.write(f"error: {one_line(e)}\n")
        return 1
