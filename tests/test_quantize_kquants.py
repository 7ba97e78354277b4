"""`pyinfer quantize` at the K-quant recipes (q2_k .. q6_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m) and q5_0 / q5_1, against
llama.cpp itself (llama-cpp-python, an optional test dependency that CI installs):
1. the C++ block quantizers give the bytes of ggml's own (ggml_quantize_chunk from llama.cpp's libggml-base, no
   importance matrix), on every ISA; Q5_0 / Q5_1 also equal the gguf package's numpy quantizers;
2. whole files: llama_model_quantize and pyinfer quantize on the same F32 GGUF (GPT-2, Llama, Qwen2 and Gemma 3
   shapes, several layer counts, tied and untied heads) choose the same type for every tensor and write the same
   bytes, and the same general.file_type.
"""
import ctypes
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize as gguf_quantize

import pyinfer
from pyinfer import _ext, gguf_file
from pyinfer import quantize as pq

K = _ext.kernels
ISAS = pyinfer.build_info()["isa_available"]
BLOCK_TYPES = {"q5_0": 6, "q5_1": 7, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14}


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is an optional "
                               "test dependency: `pip install llama-cpp-python==0.3.36` (CI installs it)")


@pytest.fixture(scope="module")
def ggml_quantize():
    """rows of x (float32) -> ggml's bytes for ggml type t, from llama.cpp's own library (the quantizer
    llama_model_quantize runs: ggml_quantize_chunk without an importance matrix)."""
    llama_cpp = _llama_cpp()
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    names = [n for n in os.listdir(libdir) if n.startswith("libggml-base")]
    if not names:
        pytest.fail(f"llama-cpp-python has no libggml-base in {libdir}")
    lib = ctypes.CDLL(os.path.join(libdir, sorted(names, key=len)[0]))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                  ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    def run(x, t):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((x.shape[0], lib.ggml_row_size(t, x.shape[1])), np.uint8)
        n = f(t, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
        assert n == out.nbytes
        return out
    return run


def awkward_rows(rng, n=512):
    """Rows a super-block quantizer must get right: mixed scales, zero and constant (sub-)blocks, one-signed
    blocks, heavy tails, sparse rows, values on a coarse grid, subnormal fp16 scales."""
    rows = [rng.standard_normal((40, n)) * rng.uniform(1e-3, 30, (40, 1)),
            rng.laplace(size=(12, n)), rng.standard_t(2, (12, n)), rng.uniform(-1, 1, (12, n)) ** 5,
            rng.standard_normal((12, n)) * (rng.random((12, n)) < 0.1)]
    x = np.concatenate(rows).astype(np.float32)
    x[0, :64] = 0                           # zero sub-blocks and a zero half super-block
    x[1, :256] = 7.0                        # a constant super-block (max == min)
    x[2, :256] = np.abs(x[2, :256])         # all positive: the min clamps to 0
    x[3, :256] = -np.abs(x[3, :256])        # all negative
    x[4, 5] = -np.abs(x[4]).max() * 3       # the largest magnitude is negative
    x[5, :16] = 0                           # one zero 16-sub-block
    x[6] = np.round(x[6] * 4) / 4           # values on a coarse grid: rounding ties
    x[7] *= 1e-30                           # scales below fp16's normal range
    x[8, 256:] = 0                          # a zero super-block
    return x


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_block_quantizers_are_ggml_bytes(isa, name, ggml_quantize):
    t = BLOCK_TYPES[name]
    for seed in range(3):
        x = awkward_rows(np.random.default_rng(seed))
        ours, ref = K.quantize(isa, x, t), ggml_quantize(x, t)
        bad = np.nonzero((ours != ref).any(axis=1))[0]
        assert not len(bad), f"{isa} {name} seed {seed}: rows {bad[:8].tolist()} differ from ggml's quantizer"
        if name in ("q5_0", "q5_1"):  # gguf's numpy twins too, on the rows without zeros of both signs in a
            # block (there numpy's min/max may pick +0 where ggml keeps the first zero, -0: a sign bit of m or d)
            assert np.array_equal(ours[:64], gguf_quantize(x[:64], Q(t))), f"{isa} {name} differs from gguf's"


def test_block_quantizer_sizes_and_bad_rows():
    for t, size in ((6, 22), (7, 24), (10, 84), (11, 110), (12, 144), (13, 176), (14, 210)):
        n = 256 if t >= 10 else 64
        assert K.quantize("ref", np.zeros((3, 2 * n), np.float32), t).shape == (3, 2 * size * n // (256 if t >= 10
                                                                                                        else 32))
    with pytest.raises(ValueError, match="multiple of 256"):
        K.quantize("ref", np.zeros((1, 96), np.float32), 12)
