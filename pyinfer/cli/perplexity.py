"""`pyinfer perplexity`: perplexity of a model on a text file by llama-perplexity's windowed rule (the running
estimate on stderr, `Final estimate: PPL = ...` on stdout). The scoring is pyinfer/perplexity.py.
"""
import math
import sys

from .common import add_model_flags, check_ctx_size, check_threads, load_model, read_text_file, register_command


def add_perplexity_args(p):
    g = p.add_argument_group("model")
    add_model_flags(g)
    g = p.add_argument_group("evaluation")
    g.add_argument("-f", "--file", metavar="FNAME", required=True,
                   help="the text to score, UTF-8 (at least 2 windows of -c tokens)")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="window length in tokens; the second half of each window is scored "
                        "(default: 0 = min(512, the model's context))")


@register_command("perplexity", "perplexity of a model on a text file, by llama-perplexity's windowed rule; the "
                                "running estimate goes to stderr, the final line to stdout", add_perplexity_args)
def cmd_perplexity(args):
    from ..perplexity import perplexity

    check_threads(args.threads)
    check_ctx_size(args.ctx_size, "min(512, the model's)")
    text = read_text_file(args.file)
    model = load_model(args.model, args.ctx_size, args.threads, args.dtype, args.exact, args.cache_type)
    r = perplexity(model, text, n_ctx=args.ctx_size or None, progress=True)
    sys.stderr.write(f"perplexity: {r.n_text_tokens} tokens, {r.n_chunks} chunks of n_ctx = {r.n_ctx}, "
                     f"{r.n_tokens} scored in {r.t_eval_s:.2f} s with {model.n_threads} threads\n")
    if math.isnan(r.ppl_stderr):
        sys.stderr.write("perplexity: the NLL variance is not positive; no standard error\n")
    sys.stderr.flush()
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_stderr:.5f}")
    return 0

