"""`pyinfer build-info`: how the C++ extension was built (compiled / available / selected ISA, OpenMP, threads), as
JSON on stdout.
"""
import json

from .common import register_command


@register_command("build-info", "print how the C++ extension was built (ISA, OpenMP, ...) as JSON")
def cmd_build_info(args):
    import pyinfer
    print(json.dumps(pyinfer.build_info(), indent=2, sort_keys=True, default=str))
    return 0
