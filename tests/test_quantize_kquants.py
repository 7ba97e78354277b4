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


# ---------------------------------------------------------------------------------------------------------------
# 2. Whole files: pyinfer quantize == llama_model_quantize
# ---------------------------------------------------------------------------------------------------------------

K_RECIPES = ("q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
LLAMA_FTYPES = {"q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14,
                "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}  # include/llama.h llama_ftype


def random_gguf(path, arch="llama", n_layer=2, n_embd=256, n_ff=512, n_head=4, n_head_kv=1, n_vocab=300, tie=True,
                seed=0):
    """An F32 GGUF of random weights with llama.cpp's tensor names and the metadata its loader needs for `arch`
    (llama, qwen2, gemma3: q/k/v/o + gate/up/down; gpt2: fused attn_qkv, biases, position embeddings). Rows have
    per-row scales so that blocks differ; norms are near 1. No tokenizer: quantizing never reads it."""
    import gguf
    rng = np.random.default_rng(seed)
    hd = n_embd // n_head
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    if arch == "gpt2":
        w.add_layer_norm_eps(1e-5)
    else:
        w.add_layer_norm_rms_eps(1e-6)
        w.add_rope_dimension_count(hd)
    if arch == "gemma3":
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_sliding_window(128)
    w.add_file_type(0)

    def mat(name, n_rows, n_cols):  # [n_rows, n_cols]
        scale = rng.uniform(0.01, 0.1, (n_rows, 1))
        w.add_tensor(name, (rng.standard_normal((n_rows, n_cols)) * scale).astype(np.float32))

    def vec(name, n):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd)
    if arch == "gpt2":
        mat("position_embd.weight", 256, n_embd)
    vec("output_norm.weight", n_embd)
    if not tie:
        mat("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", n_embd)
        if arch == "gpt2":
            for name, n_out, n_in in (("attn_qkv", 3 * n_embd, n_embd), ("attn_output", n_embd, n_embd),
                                      ("ffn_up", n_ff, n_embd), ("ffn_down", n_embd, n_ff)):
                mat(p + name + ".weight", n_out, n_in)
                vec(p + name + ".bias", n_out)
            vec(p + "ffn_norm.weight", n_embd)
            continue
        mat(p + "attn_q.weight", n_head * hd, n_embd)
        mat(p + "attn_k.weight", n_head_kv * hd, n_embd)
        mat(p + "attn_v.weight", n_head_kv * hd, n_embd)
        if arch == "qwen2":
            vec(p + "attn_q.bias", n_head * hd)
            vec(p + "attn_k.bias", n_head_kv * hd)
            vec(p + "attn_v.bias", n_head_kv * hd)
        if arch == "gemma3":
            for name, n in (("attn_q_norm", hd), ("attn_k_norm", hd), ("post_attention_norm", n_embd),
                            ("post_ffw_norm", n_embd)):
                vec(p + name + ".weight", n)
        mat(p + "attn_output.weight", n_embd, n_head * hd)
        vec(p + "ffn_norm.weight", n_embd)
        mat(p + "ffn_gate.weight", n_ff, n_embd)
        mat(p + "ffn_up.weight", n_ff, n_embd)
        mat(p + "ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_cpp_quantize(src, dst, recipe, allow_requantize=False):
    """llama.cpp's quantizer (llama_model_quantize, default parameters: its mixture, no importance matrix)."""
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[recipe]
    params.nthread = 2
    params.allow_requantize = allow_requantize
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0, \
        f"llama.cpp failed to quantize {src} to {recipe}"
    return dst


def assert_same_tensors(ours, theirs, what):
    """The same tensor names, types and bytes, and the same general.file_type."""
    a, b = gguf_file.read_gguf(ours), gguf_file.read_gguf(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb), f"{what}: tensor names differ: {sorted(set(ta) ^ set(tb))}"
    types = {n: (ta[n].tensor_type.name, tb[n].tensor_type.name) for n in ta if ta[n].tensor_type != tb[n].tensor_type}
    assert not types, f"{what}: (pyinfer, llama.cpp) types differ: {types}"
    diff = [n for n in ta if not np.array_equal(gguf_file.tensor_raw(ta[n]), gguf_file.tensor_raw(tb[n]))]
    assert not diff, f"{what}: bytes differ in {diff}"
    fa, fb = (gguf_file.read_metadata(r, p)["general.file_type"] for r, p in ((a, ours), (b, theirs)))
    assert fa == fb, f"{what}: general.file_type {fa} (pyinfer) vs {fb} (llama.cpp)"
    return {n: ta[n].tensor_type.name for n in ta}


# (arch, random_gguf kwargs): 9 layers make every branch of llama.cpp's use_more_bits fire (first/last eighth,
# every third between); n_head_kv 1 gives n_gqa 4 (Q2_K's attn_v rule); n_ff 320 gives ffn_down rows that fall
# back from the 256-blocks (Q4_K -> Q5_0, ...); n_embd 96 / n_ff 200 every matrix and an F16 fallback.
CONFIGS = {
    "llama-9": ("llama", dict(n_layer=9, n_ff=256)),
    "llama-17-untied-mha": ("llama", dict(n_layer=17, n_ff=256, n_head_kv=4, n_vocab=64, tie=False)),
    "gpt2-3": ("gpt2", dict(n_layer=3, n_head_kv=4, n_ff=320)),
    "qwen2-2-untied": ("qwen2", dict(n_layer=2, tie=False)),
    "gemma3-2": ("gemma3", dict(n_layer=2, n_ff=256)),
    "llama-small-rows": ("llama", dict(n_layer=2, n_embd=96, n_ff=200, n_head=4, n_head_kv=2)),
}


@pytest.fixture(scope="module")
def random_ggufs(tmp_path_factory):
    d = tmp_path_factory.mktemp("kquant-src")
    return {name: random_gguf(d / f"{name}.gguf", arch, **kw) for name, (arch, kw) in CONFIGS.items()}


# every recipe on every config, except the 17-layer one (the slowest): only the recipes whose rules count layers
CASES = [(c, r) for c in CONFIGS for r in K_RECIPES
         if c != "llama-17-untied-mha" or r in ("q3_k_m", "q4_k_s", "q4_k_m", "q5_k_m")]


@pytest.mark.parametrize("config, recipe", CASES)
def test_files_equal_llama_cpp(random_ggufs, tmp_path, config, recipe):
    src = random_ggufs[config]
    theirs = llama_cpp_quantize(src, tmp_path / "llama-cpp.gguf", recipe)
    report = pq.quantize_model(src, tmp_path / "pyinfer.gguf", recipe, progress=False)
    types = assert_same_tensors(tmp_path / "pyinfer.gguf", theirs, f"{config} {recipe}")
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert len(report.tensors) == len(types)


def test_mixture_spot_checks(random_ggufs, tmp_path):
    # what the comparisons above rely on, stated once (llama.cpp chose the same; these catch a rule that
    # silently stopped firing in both): llama-9 at q4_k_m
    pq.quantize_model(random_ggufs["llama-9"], tmp_path / "m.gguf", "q4_k_m", progress=False)
    types = {t.name: t.tensor_type for t in gguf_file.read_gguf(tmp_path / "m.gguf").tensors}
    more = [i for i in range(9) if types[f"blk.{i}.ffn_down.weight"] == Q.Q6_K]
    assert more == [0, 3, 6, 7, 8]  # i < 9/8, i >= 7*9/8, (i - 1) % 3 == 2
    assert [i for i in range(9) if types[f"blk.{i}.attn_v.weight"] == Q.Q6_K] == more
    assert types["token_embd.weight"] == Q.Q6_K  # tied: the output matrix
    assert types["blk.4.attn_q.weight"] == Q.Q4_K and types["blk.4.ffn_up.weight"] == Q.Q4_K
    # --pure: one type everywhere
    pq.quantize_model(random_ggufs["llama-9"], tmp_path / "p.gguf", "q4_k_m", pure=True, progress=False)
    types = {t.name: t.tensor_type for t in gguf_file.read_gguf(tmp_path / "p.gguf").tensors}
    assert {types[n] for n in types if not n.endswith("norm.weight")} == {Q.Q4_K}


@pytest.mark.parametrize("first, then", [("q4_k_m", "q6_k"), ("q2_k", "q5_k_s"), ("q5_1", "q3_k_m")])
def test_requantizing_k_quant_files_equals_llama_cpp(random_ggufs, tmp_path, first, then):
    # K-quant and Q5 tensors are dequantized (gguf's numpy code, exact as ggml's) and quantized again; tensors
    # already of the new type are copied, as llama.cpp does
    mid = llama_cpp_quantize(random_ggufs["llama-9"], tmp_path / "mid.gguf", first)
    theirs = llama_cpp_quantize(mid, tmp_path / "llama-cpp.gguf", then, allow_requantize=True)
    pq.quantize_model(mid, tmp_path / "pyinfer.gguf", then, progress=False)
    assert_same_tensors(tmp_path / "pyinfer.gguf", theirs, f"{first} -> {then}")


@pytest.mark.parametrize("recipe", ["q4_k_m", "q3_k_l"])
def test_hf_folder_equals_llama_cpp_on_its_f32_gguf(make_gpt2, tmp_path, recipe):
    # straight from a HF GPT-2 folder: the same file as llama.cpp makes from pyinfer's f32 conversion of it
    folder = make_gpt2(n_layer=2, n_embd=256, n_head=4)
    pq.quantize_model(folder, tmp_path / "f32.gguf", "f32", progress=False)
    theirs = llama_cpp_quantize(tmp_path / "f32.gguf", tmp_path / "llama-cpp.gguf", recipe)
    pq.quantize_model(folder, tmp_path / "pyinfer.gguf", recipe, progress=False)
    types = assert_same_tensors(tmp_path / "pyinfer.gguf", theirs, f"gpt2 folder {recipe}")
    assert types["position_embd.weight"] == "F32" and types["token_embd.weight"] == "Q6_K"


# ---------------------------------------------------------------------------------------------------------------
# 3. Command line
# ---------------------------------------------------------------------------------------------------------------

def test_cli_k_quant_recipe_and_pure(random_ggufs, tmp_path):
    from subproc import run_cli
    src, out = random_ggufs["gpt2-3"], tmp_path / "q.gguf"
    rc, stdout, stderr = run_cli("quantize", src, out, "--type", "Q4_K_M", "--no-progress")
    assert rc == 0, stderr
    rows = {ln.split()[0]: ln.split() for ln in stdout.splitlines()[2:-1]}
    # 3 layers: only the last one is in use_more_bits' last eighth (i >= 7 * 3 // 8)
    assert rows["blk.2.attn_qkv.weight"][2] == "F32->Q6_K" and rows["blk.2.attn_qkv.weight"][-2:] == [
        "q4_k_m", "mixture"]
    assert rows["blk.1.attn_qkv.weight"][2] == "F32->Q4_K" and rows["blk.1.ffn_down.weight"][2] == "F32->Q5_0"
    assert rows["blk.2.ffn_down.weight"][2] == "F32->Q8_0"  # Q6_K, which falls back to Q8_0
    assert "row length 320 is not a multiple of 256: Q5_0 instead of Q4_K" in stdout  # ffn_down rows of n_ff
    assert stdout.splitlines()[-1].endswith("type q4_k_m")
    assert gguf_file.read_metadata(gguf_file.read_gguf(out), out)["general.file_type"] == 15
    rc, stdout, stderr = run_cli("quantize", src, out, "--type", "q6_k", "--pure", "--no-progress")
    assert rc == 0, stderr
    types = {t.name: t.tensor_type for t in gguf_file.read_gguf(out).tensors}
    assert types["token_embd.weight"] == Q.Q6_K and types["blk.2.ffn_down.weight"] == Q.Q8_0  # fallback for 320


def test_mixture_for_experts_needs_pure(tmp_path):
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "moe.gguf"), "llama")
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_expert_count(8)
    w.add_tensor("blk.0.attn_q.weight", np.ones((256, 256), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="--pure"):
        pq.quantize_model(tmp_path / "moe.gguf", tmp_path / "x.gguf", "q4_k_m", progress=False)
    pq.quantize_model(tmp_path / "moe.gguf", tmp_path / "x.gguf", "q4_k_m", pure=True, progress=False)
    assert [t.tensor_type for t in gguf_file.read_gguf(tmp_path / "x.gguf").tensors] == [Q.Q4_K]
