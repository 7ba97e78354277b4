"""pyinfer: CPU inference for small transformer language models.

    import pyinfer
    m = pyinfer.load("path/to/model")
    print(m.generate("Hello", max_tokens=32))
"""
from ._ext import build_info as _build_info
from .model import Model, load
from .session import Session

__version__ = "0.1.0"
_build_info()  # a bad PYINFER_ISA fails here, at import, with a message naming the fix


def build_info() -> dict:
    """Compiled and selected ISA, the default thread count and the thread pool's wait policy of this build."""
    info = dict(_build_info())
    info["version"] = __version__
    return info


__all__ = ["Model", "Session", "load", "build_info", "__version__"]
