"""`pyinfer kld`: KL divergence KL(base || model), top-1 agreement and the perplexity of both models on a text file,
as llama-perplexity --kl-divergence reports them (a markdown table on stdout). The scoring is pyinfer/perplexity.py.
"""
import sys

from .common import add_model_flags, check_ctx_size, check_threads, load_model, read_text_file, register_command


def add_kld_args(p):
    g = p.add_argument_group("models")
    g.add_argument("--model-base", metavar="PATH", required=True,
                   help="the reference model P (e.g. the f32 original); llama.cpp takes its logits from "
                        "--kl-divergence-base")
    g.add_argument("-m", "--model", metavar="PATH", required=True,
                   help="the model Q compared with it (e.g. the quantized file); may be the same path with --dtype")
    g.add_argument("--dtype-base", choices=("auto", "f32", "f16"), default="auto",
                   help="weight type of --model-base after loading (default: auto)")
    g.add_argument("--exact-base", action="store_true",
                   help="exact activations for --model-base (f32 against weights dequantized on the fly): with "
                        "-m the same file, the KL divergence of the default path to the model the file holds")
    add_model_flags(g, with_model=False)
    g = p.add_argument_group("evaluation")
    g.add_argument("-f", "--file", metavar="FNAME", required=True, help="the text to score, UTF-8")
    g.add_argument("-c", "--ctx-size", type=int, default=0, metavar="N",
                   help="window length in tokens (default: 0 = min(512, both models' contexts))")


@register_command("kld", "KL divergence KL(base || model) and perplexity of both on a text file, as "
                         "llama-perplexity --kl-divergence; the table goes to stdout", add_kld_args)
def cmd_kld(args):
    from ..perplexity import kl_divergence

    check_threads(args.threads)
    check_ctx_size(args.ctx_size, "min(512, the models')")
    text = read_text_file(args.file)
    base = load_model(args.model_base, args.ctx_size, args.threads, args.dtype_base, args.exact_base, args.cache_type)
    model = load_model(args.model, args.ctx_size, args.threads, args.dtype, args.exact, args.cache_type)
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

