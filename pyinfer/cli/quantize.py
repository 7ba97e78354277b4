"""`pyinfer quantize`: a thin command over pyinfer/quantize.py, which owns both its flags (add_arguments) and the
work (run); nothing about quantization lives here.
"""
from .common import register_command


def add_quantize_args(p):
    from ..quantize import add_arguments
    add_arguments(p)


@register_command("quantize", "write a GGUF at f32/f16/q8_0/q4_0/q4_1 from a HF folder or a GGUF; prints the "
                              "per-tensor error report", add_quantize_args)
def cmd_quantize(args):
    from ..quantize import run
    return run(args)
