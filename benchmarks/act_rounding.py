"""Prototype for the fidelity work (benchmarks/fidelity.py): the default path's activation rounding emulated in the
float64 oracle (tests/reference/llama_numpy.py), weights exact, each matmul input rounded to 8-bit blocks: q32 =
ggml's q8_0/q8_1 (32 values, fp16 scale), qK = ggml's Q8_K (256 values, f32 scale), q16 = 16 values, f32 scale.
Prints the mean KLD to the exact oracle over the second half of one window.  Not a test.

    python benchmarks/act_rounding.py MODEL.gguf 128 q32/qK/q16          # one scheme for every matmul
    python benchmarks/act_rounding.py MODEL.gguf 128 qK,q32/q16,q16      # K-quant tensors' scheme, the others'
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from reference.llama_numpy import LlamaFamilyOracle  # noqa: E402
import fidelity  # noqa: E402
import pyinfer  # noqa: E402

def q32(x):
    b = x.reshape(-1, 32); amax = np.abs(b).max(1, keepdims=True)
    q = np.rint(b * np.where(amax > 0, 127 / np.where(amax > 0, amax, 1), 0).astype(np.float32))
    return (q * (amax / 127).astype(np.float16).astype(np.float64)).reshape(x.shape)
def qK(x):
    b = x.reshape(-1, 256); i = np.abs(b).argmax(1); mx = b[np.arange(len(b)), i][:, None]
    isc = np.where(mx != 0, -127.0 / np.where(mx != 0, mx, 1), 0).astype(np.float32)
    q = np.minimum(127, np.rint(isc * b.astype(np.float32)))
    return (q * np.where(isc != 0, 1 / np.where(isc != 0, isc, 1), 0).astype(np.float32)).reshape(x.shape)
def q16(x):  # per-16 blocks, f32 scale (a hypothetical finer activation block)
    b = x.reshape(-1, 16); amax = np.abs(b).max(1, keepdims=True)
    d = (amax / 127).astype(np.float32); q = np.rint(b / np.where(d > 0, d, 1))
    return (q * d).reshape(x.shape)

class QW:
    __array_ufunc__ = None
    def __init__(self, W, f): self.W, self.f = W, f
    @property
    def T(self): return self
    def __rmatmul__(self, h): return self.f(np.asarray(h, np.float64)) @ self.W.T

def lsm(x): x = x - x.max(1, keepdims=True); return x - np.log(np.exp(x).sum(1, keepdims=True))
def kld(a, b): la, lb = lsm(a), lsm(b); return (np.exp(la) * (la - lb)).sum(1)

path = sys.argv[1]; n = int(sys.argv[2]); schemes = sys.argv[3].split("/")
m = pyinfer.load(path, n_ctx=n, n_threads=2)
ids = m.tokenize(fidelity.stdlib_docstrings(20000))[:n]
if m.tokenizer.add_bos: ids[0] = m.tokenizer.bos_id
o = LlamaFamilyOracle(path)
raw = dict(o.w)
exact = o.logits(ids)
first = n // 2
print("pyinfer default vs oracle: mean KLD %.4e" % kld(exact[first:], m.forward(ids)[first:].astype(np.float64)).mean())
from gguf import GGUFReader
ktypes = {t.name for t in GGUFReader(path).tensors if t.tensor_type.name.endswith("_K")}
F = {"q32": q32, "qK": qK, "q16": q16}
for s in schemes:
    parts = s.split(",")
    fk, fr = F[parts[0]], F[parts[-1]]  # the K-quant tensors' scheme, the others' (one name: both)
    o.w = {k: (QW(v, fk if k in ktypes else fr) if (v.ndim == 2 and k != "token_embd.weight") else v)
           for k, v in raw.items()}
    print(f"emulated {s}: mean KLD %.4e" % kld(exact[first:], o.logits(ids)[first:]).mean(), flush=True)
