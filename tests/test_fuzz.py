"""Fuzzing the loaders with Hypothesis: mutated GGUF bytes (bit flips, truncations, header / metadata / tensor-info
fields overwritten with boundary values), generated and mutated safetensors headers, and mutated session states.
Every input must end in success or a ValueError with a message, within 10 s, with bounded memory; a file that loads
must also run a forward step. Bounded for CI (derandomized: the same examples every run); a longer run:
    PYINFER_FUZZ_EXAMPLES=20000 python -m pytest -q tests/test_fuzz.py
(N examples per target instead of the default). Not a coverage-guided fuzzer: mutations are biased toward headers.
"""
import json
import os
import signal
import struct
import tracemalloc
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyinfer
from pyinfer import gguf_file, hf_checkpoint

from tiny_files import safetensors_bytes, write_gpt2_gguf

# Default example counts: 3000 per target, ~1 minute for the three together on a 2-core CI machine.
N = int(os.environ.get("PYINFER_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=N or 3000, derandomize=True, database=None, deadline=10_000, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
HANG_S = 10  # an example running longer than this is a hang: a failure
# Python-side allocations of one example (tracemalloc): the tiny files are < 100 KB and a good load takes ~0.1 MB;
# anything sized by a corrupt count or dimension would be far larger.
MAX_ALLOC = 32 << 20

BOUNDARY = [0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
            2 ** 40, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 2, 2 ** 64 - 1]


@contextmanager
def bounded(what):
    """Fail an example that runs past HANG_S seconds or allocates more than MAX_ALLOC bytes (Python/numpy side)."""
    def on_alarm(*_):
        raise TimeoutError(f"{what}: still running after {HANG_S} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MAX_ALLOC, f"{what}: allocated {peak} bytes"


def expect_value_error_or_success(fn, what):
    """fn() returns, or raises ValueError with a non-empty message; anything else fails the example."""
    with bounded(what):
        try:
            return fn()
        except ValueError as e:
            assert str(e).strip(), f"{what}: ValueError without a message"
            return None


# ---------------------------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_seed(tmp_path_factory):
    """(bytes of a tiny valid GGUF, offsets of its header fields, end of its tensor-info section, a scratch path)."""
    d = tmp_path_factory.mktemp("fuzz_gguf")
    path = write_gpt2_gguf(d / "seed.gguf")
    r = gguf_file.read_gguf(path)
    fields = [8, 16]  # n_tensors, n_kv
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        at = f.offset
        fields += [at, at + 8 + len(key.encode()), at + 12 + len(key.encode())]  # key len, value type, value
        if f.types and f.types[0].name == "ARRAY":
            fields += [at + 16 + len(key.encode()), at + 24 + len(key.encode())]  # count, first element
    for t in r.tensors:
        base = t.field.offset + 8 + len(t.name.encode())
        n = len(t.shape)
        fields += [t.field.offset, base, base + 4, base + 12, base + 4 + 8 * n, base + 8 + 8 * n]
    return path.read_bytes(), sorted(set(fields)), r.data_offset, d / "mutant.gguf"


@st.composite
def gguf_mutant(draw, seed):
    data, fields, header_end, _ = seed
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "overwrite", "overwrite", "overwrite", "cut", "bytes"]))
        if kind == "flip":
            hi = header_end if draw(st.integers(0, 9)) else len(b)  # 90 % in the header / metadata / tensor infos
            pos = draw(st.integers(0, max(0, min(hi, len(b)) - 1)))
            if b:
                b[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            at = draw(st.sampled_from(fields)) + draw(st.sampled_from([0, 0, 0, 4]))
            width = draw(st.sampled_from([4, 8]))
            v = draw(st.sampled_from(BOUNDARY + [len(data), len(data) + 1, header_end]) | st.integers(0, 2 ** 16))
            b[at:at + width] = (v % 2 ** (8 * width)).to_bytes(width, "little")
        elif kind == "cut":
            del b[draw(st.integers(0, len(b))):]
        else:  # a run of random bytes somewhere in the header region
            pos = draw(st.integers(0, header_end))
            chunk = draw(st.binary(min_size=1, max_size=16))
            b[pos:pos + len(chunk)] = chunk
    return bytes(b)


def test_fuzz_gguf(gguf_seed):
    _, _, _, path = gguf_seed

    @FUZZ
    @given(gguf_mutant(gguf_seed))
    def run(data):
        path.write_bytes(data)

        def load_and_run():
            m = pyinfer.load(path, n_ctx=16, n_threads=1)
            m.eval(m.tokenize(" the in")[:2] or [0])  # runs (flipped weights may well give NaN logits)
            return m
        expect_value_error_or_success(load_and_run, "GGUF load")

    run()


# ---------------------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------------------

_dims = st.sampled_from([0, 1, 2, 3, 4, 8, 16, -1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 63, 2 ** 64]) | st.integers(0, 64)
_offset = st.sampled_from([0, 4, 8, 64, 128, 200, 10 ** 6, -8, 2 ** 63, 2 ** 64]) | st.integers(0, 300)
_entry = st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I32", "U8", "BOOL", "F64", "F8_E4M3", "", "f32"]) | st.integers(),
    "shape": st.lists(_dims, max_size=4) | st.integers() | st.text(max_size=3),
    "data_offsets": st.lists(_offset, min_size=0, max_size=3) | st.none(),
}) | st.integers() | st.text(max_size=4) | st.lists(st.integers(), max_size=3)
_header = st.dictionaries(st.text(max_size=6), _entry, max_size=4) | st.lists(st.integers(), max_size=2) | st.text()


@st.composite
def safetensors_mutant(draw):
    kind = draw(st.sampled_from(["generated", "generated", "flip", "raw"]))
    if kind == "generated":
        header = json.dumps(draw(_header)).encode()
        return struct.pack("<Q", len(header)) + header + bytes(draw(st.integers(0, 300)))
    if kind == "raw":
        return draw(st.binary(max_size=64))
    b = bytearray(safetensors_bytes())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(b) - 1))
        b[pos] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        del b[draw(st.integers(0, len(b))):]
    return bytes(b)


def test_fuzz_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"

    @FUZZ
    @given(safetensors_mutant())
    def run(data):
        path.write_bytes(data)
        out = expect_value_error_or_success(lambda: hf_checkpoint.read_safetensors(path), "safetensors read")
        for name, arr in (out or {}).items():  # what it returns lies inside the file
            assert isinstance(arr, np.ndarray) and arr.nbytes <= len(data) * (2 if arr.dtype == np.float32 else 1)

    run()


# ---------------------------------------------------------------------------------------------------------------
# Session states
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session_seed(gguf_seed):
    data, _, _, path = gguf_seed
    good = path.with_name("session-model.gguf")
    good.write_bytes(data)
    m = pyinfer.load(good, n_ctx=16, n_threads=1)
    s = m.session()
    s.generate(" the", max_tokens=6, temperature=0)
    return m, s.save()


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                     max_leaves=8)


@st.composite
def session_mutant(draw, state):
    n = struct.unpack_from("<I", state, 8)[0]
    header, c_state = json.loads(state[12:12 + n]), state[12 + n:]
    kind = draw(st.sampled_from(["field", "field", "flip", "c-header", "cut"]))
    if kind == "field":  # one header field replaced by any JSON value (or dropped)
        key = draw(st.sampled_from(sorted(header)))
        h = dict(header)
        if draw(st.integers(0, 4)):
            h[key] = draw(_json | st.sampled_from([-1, 0, 2 ** 31, 2 ** 63, 10 ** 30]))
        else:
            del h[key]
        raw = json.dumps(h).encode()
        return b"PYINFSES" + struct.pack("<I", len(raw)) + raw + c_state
    b = bytearray(state)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, min(len(b), 12 + n + 48) - 1))  # the two headers
            b[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "c-header":  # one int64 of the C++ state header (arch, n_layer, kv_dim, n_vocab, n_past)
        at = 12 + n + draw(st.sampled_from([4, 8, 16, 24, 32, 40]))
        v = draw(st.sampled_from(BOUNDARY) | st.integers(0, 64))
        b[at:at + 8] = (v % 2 ** 64).to_bytes(8, "little")
    else:
        del b[draw(st.integers(0, len(b))):]
    return bytes(b)


def test_fuzz_session_state(session_seed):
    m, state = session_seed

    @FUZZ
    @given(session_mutant(state))
    def run(data):
        s = m.session()

        def load():
            s.load(data)
            assert 0 <= s.n_past <= s.n_ctx and len(s.tokens) - s.n_past in (0, 1)
            s.eval([0])  # a loaded state can be continued
        expect_value_error_or_success(load, "session load")

    run()
