"""`pyinfer run`: generate text from a prompt with llama.cpp's flags (llama-cli's names and defaults), streamed to
stdout; load time and prompt/generation speed go to stderr. Sampling, beam search, stop strings, logprobs, --json.
Uses only the public API (pyinfer.load, generate.py, sampling.py); no model code.
"""
import argparse
import json
import math
import re
import secrets
import sys
import time

from .common import (add_model_flags, check_ctx_size, check_model_path, check_threads, load_kwargs,
                     read_text_file, register_command, write_stdout)


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
    add_model_flags(g, model_required=False,
                    model_help="the model: a Hugging Face folder, a GGUF file or a named model (default: "
                               "SmolLM2-135M-Instruct)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="context size in tokens, prompt included (default: 0 = the model's)")
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
    return read_text_file(args.file, "prompt file")


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



@register_command("run", "generate text from a prompt, streamed to stdout; timings go to stderr", add_run_args)
def cmd_run(args):
    import pyinfer
    from ..generate import Generation, GenerationStats, TextStream, completion_of, generate, make_sampler, prompt_to_ids
    from ..sampling import Sampler

    # Everything that can be checked without the model is checked before loading it.
    if args.n_predict < -1:
        raise ValueError(f"-n/--n-predict must be >= 0, or -1 for no limit (got {args.n_predict})")
    check_threads(args.threads)
    check_ctx_size(args.ctx_size)
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
    check_model_path(args.model)

    t0 = time.perf_counter()
    model = pyinfer.load(args.model, **load_kwargs(args.ctx_size, args.threads, dtype, args.exact, args.cache_type))
    t_load_s = time.perf_counter() - t0
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a console that cannot show a character gets '?', not a crash
    builtin = getattr(model, "chat_template_builtin", False)
    if builtin and not args.raw and not args.system_prompt:
        print("pyinfer: the model file has no chat template: completing the prompt as it is (use `pyinfer chat` "
              "for the architecture's standard template)", file=sys.stderr)
    if model.chat_template is not None and not args.raw and not (builtin and not args.system_prompt):
        # chat mode: the prompt is the user's message
        messages = ([{"role": "system", "content": args.system_prompt}] if args.system_prompt else [])
        prompt = model.chat_ids(messages + [{"role": "user", "content": prompt}])
    elif args.system_prompt:
        raise ValueError("--system-prompt needs a model with a chat template (and no --raw)")

    if beams:
        c = generate(model, prompt, max_tokens=args.n_predict, num_beams=args.beams,
                     length_penalty=args.length_penalty, early_stopping=args.early_stopping,
                     ignore_eos=args.ignore_eos, details=True)
        rc = write_stdout(json.dumps(_json_result(c, model, t_load_s, None)) + "\n" if args.json else c.text)
        st = GenerationStats(n_prompt=c.n_prompt, n_reused=c.n_reused, n_gen=c.n_gen,
                             t_prompt_s=c.timings["prompt_ms"] / 1e3, t_gen_s=c.timings["predicted_ms"] / 1e3,
                             stop_reason=c.finish_reason)
        if rc != 141 and not args.json and out.isatty():
            write_stdout("\n")
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
                rc = write_stdout(piece)
                if rc:
                    break
    except KeyboardInterrupt:
        rc = 130
    finally:
        pieces.close()  # stops decoding; stats are final
    c = completion_of(gen, pieces)
    if args.json and rc == 0:
        rc = write_stdout(json.dumps(_json_result(c, model, t_load_s, seed)) + "\n")
    elif rc != 141 and out.isatty():
        write_stdout("\n")
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


