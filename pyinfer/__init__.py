"""pyinfer: CPU inference for small transformer language models.

    import pyinfer
    m = pyinfer.load("path/to/model")
    print(m.generate("Hello", max_tokens=32))
"""
import os as _os


def _libgomp_loaded() -> bool:
    """Whether an OpenMP runtime is already in this process (e.g. torch's libgomp), so its settings are fixed."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line or "libiomp" in line for line in f)
    except OSError:
        return False


# OpenMP threads that spin at barriers stall every parallel region when one of them is descheduled (another
# process busy on a core): -t 2 then ran 10-50x slower than -t 1. A passive wait policy (sleep on a futex at once)
# keeps -t N within a small factor of -t 1 on a busy machine at a small cost per region on an idle one. libgomp reads
# it once, when it loads: set it for our import only (children keep the caller's environment); the caller's own
# OMP_WAIT_POLICY / GOMP_SPINCOUNT win.
_WAIT_SET = not ({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ))
_GOMP_EARLY = _libgomp_loaded()
if _WAIT_SET:
    _os.environ["OMP_WAIT_POLICY"] = "passive"
try:
    from ._ext import build_info as _build_info
finally:
    if _WAIT_SET:
        del _os.environ["OMP_WAIT_POLICY"]
if not _WAIT_SET:
    _WAIT_POLICY = "from the environment (OMP_WAIT_POLICY / GOMP_SPINCOUNT)"
elif _GOMP_EARLY:
    _WAIT_POLICY = ("OpenMP default (spinning): an OpenMP runtime was loaded before pyinfer (import pyinfer first, or "
                    "set OMP_WAIT_POLICY=passive)")
else:
    _WAIT_POLICY = "passive"
from .model import Model, load
from .session import Session

__version__ = "0.1.0"
_build_info()  # a bad PYINFER_ISA fails here, at import, with a message naming the fix


def build_info() -> dict:
    """Compiled and selected ISA, OpenMP and thread count of this build."""
    info = dict(_build_info())
    info["version"] = __version__
    info["omp_wait_policy"] = _WAIT_POLICY
    return info


__all__ = ["Model", "Session", "load", "build_info", "__version__"]
