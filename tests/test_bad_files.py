"""A corpus of hand-made bad files: GGUF (truncated at every section boundary, header counts, string lengths, dims,
offsets, types, shapes against the architecture, tokenizer metadata), safetensors headers and session-state bytes.
Each must end in one ValueError whose message names the problem (a regex per case), never a crash, a hang or a
giant allocation; the GGUF corpus also runs in a subprocess so that a segfault is a test failure, not a lost run.
"""
import json
import os
import re
import struct

import numpy as np
import pytest
from gguf import GGUFValueType as VT

import pyinfer
from pyinfer import gguf_file, hf_checkpoint

from subproc import run_py
from tiny_files import GPT2_HP, gpt2_tensors, gpt2_vocab, safetensors_bytes, spm_fields, write_gpt2_gguf

u32, u64 = (lambda v: int(v).to_bytes(4, "little")), (lambda v: int(v).to_bytes(8, "little"))
TRUNCATED = "truncated|outside the file|past the end"


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(data)
    b[offset:offset + len(value)] = value
    return bytes(b)


def _info_offsets(r, name):
    """File offsets of one tensor's n_dims, dims[0], type and data-offset fields."""
    t = next(t for t in r.tensors if t.name == name)
    base = t.field.offset + 8 + len(name.encode())
    n_dims = len(t.shape)
    return {"n_dims": base, "dims": base + 4, "type": base + 4 + 8 * n_dims, "offset": base + 8 + 8 * n_dims}


def _kv_value_offset(r, key):
    """File offset of a metadata field's value (after key length, key and value type)."""
    return r.fields[key].offset + 8 + len(key.encode()) + 4


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_gpt2_gguf(tmp_path_factory.mktemp("good") / "tiny.gguf")


def test_the_tiny_file_is_good(good):
    m = pyinfer.load(good)
    tokens, _ = gpt2_vocab()
    assert m.n_vocab == GPT2_HP["n_vocab"] and m.tokenize(" the in") == [258, tokens.index("Ġ"), 259]
    assert isinstance(m.generate(" the", max_tokens=4, temperature=0), str)  # runs end to end


def boundaries(path):
    """Every section boundary of a GGUF: header end, each metadata field's start, each tensor info's start, the data
    section's start, each tensor's data start and end (minus a byte), and the last byte."""
    r = gguf_file.read_gguf(path)
    size = path.stat().st_size
    cuts = {"header": 24}
    for key, f in r.fields.items():
        if not key.startswith("GGUF."):
            cuts[f"kv:{key}"] = f.offset
            cuts[f"kv-mid:{key}"] = f.offset + sum(int(p.nbytes) for p in f.parts) // 2
    for t in r.tensors:
        cuts[f"info:{t.name}"] = t.field.offset
        cuts[f"data:{t.name}"] = t.data_offset
        cuts[f"data-end:{t.name}"] = t.data_offset + t.n_bytes - 1
    cuts["data-section"] = r.data_offset
    cuts["last-byte"] = size - 1
    return cuts


def gguf_cases(good, d):
    """{name: (path, regex)} of bad GGUF files derived from the good one."""
    data = good.read_bytes()
    r = gguf_file.read_gguf(good)
    cases = {}

    def put(name, content, regex):
        p = d / f"{name.replace(':', '_')}.gguf"
        p.write_bytes(content)
        cases[name] = (p, regex)

    def rewrite(name, regex, **kw):
        cases[name] = (write_gpt2_gguf(d / f"{name}.gguf", **kw), regex)

    for where, n in boundaries(good).items():
        put(f"cut@{where}", data[:n], TRUNCATED)
    put("empty", b"", "truncated")
    put("bad-magic", b"GGML" + data[4:], "not a GGUF file.*magic")
    for v in (0, 1, 4, 2 ** 32 - 1):
        put(f"version-{v}", _patch(data, 4, u32(v)), f"version {v if v & 0xFFFF else '.*'} is not supported")
    for n in (2 ** 20, 2 ** 63, 2 ** 64 - 1):
        put(f"n_tensors={n}", _patch(data, 8, u64(n)), f"claims {n} tensors")
        put(f"n_kv={n}", _patch(data, 16, u64(n)), f"claims {n} metadata")
    put("n_kv-too-small", _patch(data, 16, u64(3)), "corrupt|truncated|past the end|dimensions|type")
    first_key = next(k for k in r.fields if not k.startswith("GGUF."))
    put("key-length-past-eof", _patch(data, r.fields[first_key].offset, u64(2 ** 40)), "past the end")
    put("string-past-eof", _patch(data, _kv_value_offset(r, "general.name"), u64(len(data))), "past the end")
    tokens_at = _kv_value_offset(r, "tokenizer.ggml.tokens")
    put("array-count-past-eof", _patch(data, tokens_at + 4, u64(2 ** 61)), "claims")
    put("array-string-past-eof", _patch(data, tokens_at + 12 + 8 * 10 + sum(
        len(t.encode()) for t in gpt2_vocab()[0][:10]), u64(2 ** 50)), "past the end")
    put("array-unknown-type", _patch(data, tokens_at, u32(77)), "unknown element type 77")
    put("value-unknown-type", _patch(data, _kv_value_offset(r, "general.name") - 4, u32(99)),
        "unknown value type 99")
    put("block-count-as-string", _patch(data, _kv_value_offset(r, "gpt2.block_count") - 4, u32(8)),
        "corrupt|truncated|past the end|should be int")

    at = _info_offsets(r, "blk.0.attn_qkv.weight")  # f32 (96, 32): dims[0] = 32, dims[1] = 96
    put("name-length-past-eof", _patch(data, r.tensors[0].field.offset, u64(2 ** 62)), "past the end")
    put("n_dims-0", _patch(data, at["n_dims"], u32(0)), "0 dimensions")
    put("n_dims-5", _patch(data, at["n_dims"], u32(5)), "5 dimensions")
    put("dims-overflow-int64", _patch(_patch(data, at["dims"], u64(2 ** 33)), at["dims"] + 8, u64(2 ** 33)),
        "outside the file")
    put("dims-2^63", _patch(data, at["dims"] + 8, u64(2 ** 63)), "outside the file")
    put("dims-max", _patch(data, at["dims"] + 8, u64(2 ** 64 - 1)), "outside the file")
    put("dim-0", _patch(data, at["dims"], u64(0)), "non-positive dimension")
    put("offset-past-eof", _patch(data, at["offset"], u64(len(data))), "attn_qkv.weight.*outside the file")
    put("offset-max", _patch(data, at["offset"], u64(2 ** 64 - 32)), "attn_qkv.weight.*outside the file")
    put("offset-unaligned", _patch(data, at["offset"], u64(r.tensors[0].data_offset - r.data_offset + 4)),
        "alignment")
    other = next(t for t in r.tensors if t.name == "blk.0.attn_norm.weight")
    put("offset-overlapping", _patch(data, at["offset"], u64(other.data_offset - r.data_offset)), "overlap")
    put("type-unknown", _patch(data, at["type"], u32(99)), "unknown tensor type id 99")
    put("type-removed-q4_2", _patch(data, at["type"], u32(4)), "unknown tensor type id 4")
    put("type-huge", _patch(data, at["type"], u32(2 ** 31)), "unknown tensor type id 2147483648")
    q = _info_offsets(r, "blk.0.ffn_up.weight")  # q8_0 -> f32: 3.8x the bytes, over the next tensor's data
    put("type-q8_0-as-f32", _patch(data, q["type"], u32(0)), "overlap|outside the file")
    put("type-block-size", _patch(data, _info_offsets(r, "blk.0.attn_norm.weight")["type"], u32(12)),
        "row length 32 is not a multiple of its block size 256")

    C = GPT2_HP["n_embd"]
    t = gpt2_tensors()
    t["blk.0.attn_output.weight"] = np.zeros((C, C + 8), np.float32)
    rewrite("wrong-n_embd", r"blk.0.attn_output.weight': expected shape \(32, 32\), got \(32, 40\)", tensors=t)
    rewrite("missing-tensor", "missing tensor 'blk.0.ffn_down.weight'", drop={"blk.0.ffn_down.weight"})
    rewrite("missing-embedding", "missing tensor 'token_embd.weight'", drop={"token_embd.weight"})
    t = gpt2_tensors()
    t["blk.0.extra.weight"] = np.zeros(4, np.float32)
    rewrite("unexpected-tensor", "unexpected tensor 'blk.0.extra.weight'", tensors=t)
    t = gpt2_tensors(dict(GPT2_HP, n_vocab=250))
    rewrite("embedding-rows-vs-tokens", r"token_embd.weight': expected shape \(260, 32\), got \(250, 32\)",
            tensors=t)
    rewrite("vocab_size-vs-tokens", "260 tokens.*n_vocab.*250", tensors=t, meta={"gpt2.vocab_size": 250})
    tokens, merges = gpt2_vocab()
    rewrite("merge-unknown-token", r"merge 4 'q z': token\(s\) \['qz'\] not in the vocabulary",
            merges=merges + ["q z"])
    rewrite("merge-unknown-part", r"merge 4 'Ġthe x'", merges=merges + ["Ġthe x"])
    rewrite("merge-malformed", "merge 4: expected 'a b'", merges=merges + ["abc"])
    rewrite("bos-outside-vocab", "bos_token_id 9999 is outside the vocabulary",
            meta={"tokenizer.ggml.bos_token_id": 9999})
    rewrite("n_head-0", "must be positive", hp=dict(GPT2_HP, n_head=0))
    rewrite("n_embd-not-multiple", "not a multiple of head_count", hp=dict(GPT2_HP, n_head=3))
    rewrite("block-count-huge", "block_count 4294967295 but the file holds only", hp=dict(GPT2_HP, n_layer=2 ** 32 - 1),
            tensors=gpt2_tensors())
    rewrite("token-type-length", "token_type has 3 entries for 260 tokens",
            meta={"tokenizer.ggml.token_type": ([1, 1, 1], VT.ARRAY, VT.INT32)})
    return cases


@pytest.fixture(scope="module")
def bad_ggufs(good, tmp_path_factory):
    return gguf_cases(good, tmp_path_factory.mktemp("bad_gguf"))


def test_every_bad_gguf_is_one_clear_value_error(bad_ggufs):
    failures = []
    for name, (path, regex) in bad_ggufs.items():
        try:
            pyinfer.load(path)
            failures.append(f"{name}: loaded")
        except ValueError as e:
            msg = str(e)
            if not re.search(regex, msg) or str(path) not in msg:
                failures.append(f"{name}: {msg[:300]!r} does not match {regex!r}")
        except Exception as e:  # noqa: BLE001 -- any other exception type is the failure being tested for
            failures.append(f"{name}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    assert len(bad_ggufs) > 80


def test_bad_ggufs_in_a_subprocess(bad_ggufs):
    # a segfault or abort in the loader would kill the interpreter: rc != 0 and the remaining cases unreported
    script = ("import sys, pyinfer\n"
              "for path in sys.argv[1:]:\n"
              "    try:\n"
              "        pyinfer.load(path)\n"
              "        print('LOADED', flush=True)\n"
              "    except ValueError:\n"
              "        print('ValueError', flush=True)\n")
    paths = [p for p, _ in bad_ggufs.values()]
    rc, out, err = run_py(["-c", script, *paths], timeout=600)
    assert rc == 0, (rc, err[-2000:])
    assert out.split() == ["ValueError"] * len(paths)


@pytest.mark.parametrize("change, regex", [
    (dict(scores=[0.0] * 7), "scores has 7 entries for 8 tokens"),
    (dict(scores=[0.0] * 9), "scores has 9 entries for 8 tokens"),
    (dict(types=[1] * 3), "token_type has 3 entries for 8 tokens"),
    (dict(types=[1] * 100), "token_type has 100 entries for 8 tokens"),
    (dict(scores=["x"] * 8), "scores should hold numbers"),
    (dict(types=[1] * 7 + [99]), r"token_type\[7\] is 99"),
    (dict(types=[1, -1] + [1] * 6), r"token_type\[1\] is -1"),
    (dict(types=[1] * 5 + ["3", 1, 1]), r"token_type\[5\] is '3'"),
    (dict(scores=[True] * 8), "scores should hold numbers"),
])
def test_spm_vocab_arrays_of_the_wrong_length(change, regex):
    f = spm_fields(**change)
    with pytest.raises(ValueError, match=regex):
        gguf_file.tokenizer_from_gguf(f, source="t.gguf")
    gguf_file.tokenizer_from_gguf(spm_fields(), source="t.gguf")  # the unchanged vocabulary loads


# ---------------------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------------------

def _st_header(**changes):
    h = json.loads(safetensors_bytes()[8:8 + struct.unpack("<Q", safetensors_bytes()[:8])[0]])
    for name, entry in changes.items():
        h[name] = entry
    return h


ST_CASES = {
    "short": (b"\x01\x02", "shorter than its 8-byte header length"),
    "header-length-huge": (struct.pack("<Q", 2 ** 63) + b"{}", "header length 9223372036854775808"),
    "header-length-0": (struct.pack("<Q", 0), "header length 0"),
    "header-length-past-eof": (safetensors_bytes()[:40], "header length"),
    "bad-json": (safetensors_bytes(header=b'{"a": [1, 2'), "corrupt safetensors header"),
    "not-utf8": (safetensors_bytes(header=b'{"\xff": 1}'), "corrupt safetensors header"),
    "not-an-object": (safetensors_bytes(header=b"[1, 2, 3]"), "header is not a JSON object"),
    "entry-not-an-object": (safetensors_bytes(header=_st_header(a=[1, 2]), data=b"\0" * 200), "'a'.*not an object"),
    "missing-dtype": (safetensors_bytes(header=_st_header(a={"shape": [1], "data_offsets": [0, 4]}), data=b"\0" * 200),
                      "'a' has unsupported dtype None"),
    "dtype-unknown": (safetensors_bytes(header=_st_header(a={"dtype": "F8_E9", "shape": [4, 8],
                                                             "data_offsets": [0, 128]}), data=b"\0" * 200),
                      "'a' has unsupported dtype F8_E9"),
    "dtype-mismatch": (safetensors_bytes(header=_st_header(a={"dtype": "F64", "shape": [4, 8],
                                                              "data_offsets": [0, 128]}), data=b"\0" * 200),
                       "'a' data \\[0, 128\\) does not fit its shape"),
    "shape-not-ints": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": ["x"],
                                                              "data_offsets": [0, 4]}), data=b"\0" * 200),
                       "'a' has a bad shape"),
    "shape-negative": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": [-4, -8],
                                                              "data_offsets": [0, 128]}), data=b"\0" * 200),
                       "'a' has a bad shape"),
    "shape-overflow-int64": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": [2 ** 40, 2 ** 40],
                                                                    "data_offsets": [0, 128]}), data=b"\0" * 200),
                             "does not fit its shape"),
    "offsets-past-eof": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": [4, 8],
                                                                "data_offsets": [10 ** 6, 10 ** 6 + 128]}),
                                           data=b"\0" * 200), "outside the file|does not fit"),
    "offsets-reversed": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": [0],
                                                                "data_offsets": [128, 0]}), data=b"\0" * 200),
                         "does not fit"),
    "offsets-not-a-pair": (safetensors_bytes(header=_st_header(a={"dtype": "F32", "shape": [4, 8],
                                                                  "data_offsets": [0]}), data=b"\0" * 200),
                           "'a' has bad data_offsets"),
    "overlapping": (safetensors_bytes(header=_st_header(b={"dtype": "F16", "shape": [16], "data_offsets": [100, 132]}),
                                      data=b"\0" * 200), "'b'.*overlap"),
    "truncated-data": (safetensors_bytes()[:-1], "truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_bad_safetensors(tmp_path, case):
    content, regex = ST_CASES[case]
    p = tmp_path / "model.safetensors"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=regex) as e:
        hf_checkpoint.read_safetensors(p)
    assert str(p) in str(e.value)


def test_the_tiny_safetensors_is_good(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(safetensors_bytes())
    from safetensors.numpy import load_file  # the reference reader
    ref, got = load_file(str(p)), hf_checkpoint.read_safetensors(p)
    assert sorted(ref) == sorted(got) and all(np.array_equal(ref[k], got[k]) for k in ref)


# ---------------------------------------------------------------------------------------------------------------
# Session state bytes
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(good):
    m = pyinfer.load(good, n_ctx=32)
    s = m.session()
    s.generate(" the", max_tokens=12, temperature=0)
    return m, s.save()


def _split(state):
    n = struct.unpack_from("<I", state, 8)[0]
    return json.loads(state[12:12 + n]), state[12 + n:]


def _join(header, cstate):
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    return b"PYINFSES" + struct.pack("<I", len(h)) + h + cstate


def session_cases(state):
    header, c = _split(state)
    start = len(state) - len(c)
    cases = {f"cut@{n}": (state[:n], "bad magic|corrupt session header|truncated|state size")
             for n in (0, 5, 8, 11, 12, start - 1, start, start + 20, start + 48, len(state) - 1)}
    cases["wrong-magic"] = (b"PYINFSEZ" + state[8:], "bad magic")
    cases["header-length-huge"] = (state[:8] + u32(2 ** 32 - 1) + state[12:], "corrupt session header")
    cases["header-not-object"] = (_join(b"[1, 2]", c), "corrupt session header")
    cases["format-2"] = (_join(dict(header, format=2), c), "session format 2")
    cases["other-model"] = (_join(dict(header, fingerprint=dict(header["fingerprint"], n_embd=64)), c),
                            "different model.*n_embd=64")
    cases["tokens-not-a-list"] = (_join(dict(header, tokens=7), c), "corrupt session header")
    cases["tokens-not-ints"] = (_join(dict(header, tokens=["a"] * len(header["tokens"])), c),
                                "corrupt session header")
    cases["token-out-of-vocab"] = (_join(dict(header, tokens=[10 ** 9] * len(header["tokens"])), c),
                                   "corrupt session header.*token")
    cases["n_cached-missing"] = (_join({k: v for k, v in header.items() if k != "n_cached"}, c),
                                 "corrupt session header")
    cases["n_cached-inconsistent"] = (_join(dict(header, n_cached=header["n_cached"] - 1), c),
                                      r"corrupt session header \(n_cached")
    fewer = dict(header, n_cached=header["n_cached"] - 1, tokens=header["tokens"][:-1])
    n = header["n_cached"]
    cases["n_cached-vs-cache"] = (_join(fewer, c), f"the cache holds {n} positions, the header says {n - 1}")
    cases["c-magic"] = (_join(header, b"XXXX" + c[4:]), "not a pyinfer state")
    cases["c-version"] = (_join(header, _patch(c, 4, u32(99))), "format version 99")
    cases["c-shape"] = (_join(header, _patch(c, 24, u64(1000))), "another shape")
    cases["c-n_past>n_ctx"] = (_join(header, _patch(c, 40, u64(33))), "33 positions, more than .*n_ctx = 32")
    cases["c-n_past-huge"] = (_join(header, _patch(c, 40, u64(2 ** 62))), "more than .*n_ctx = 32")
    cases["c-n_past-negative"] = (_join(header, _patch(c, 40, u64(2 ** 64 - 1))), "-1 positions")
    cases["c-size"] = (_join(header, c + b"\0" * 4), "state size")
    return cases


def test_bad_session_states(saved):
    m, state = saved
    failures = []
    for name, (content, regex) in session_cases(state).items():
        s = m.session()
        try:
            s.load(content)
            failures.append(f"{name}: loaded")
        except ValueError as e:
            if not re.search(regex, str(e)):
                failures.append(f"{name}: {str(e)[:300]!r} does not match {regex!r}")
            if s.n_past != 0 or s.tokens:
                failures.append(f"{name}: a refused state left the session holding {s.n_past} positions")
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)
    s = m.session()
    s.load(state)  # the unchanged state loads, and continues as the saved session would
    assert s.n_past == _split(state)[0]["n_cached"]


def test_state_from_a_larger_context(good, saved):
    m, state = saved  # 13 tokens, saved at n_ctx=32
    small = pyinfer.load(good, n_ctx=8).session()
    with pytest.raises(ValueError, match="more than this context's n_ctx = 8"):
        small.load(state)


# ---------------------------------------------------------------------------------------------------------------
# A model file deleted while loaded
# ---------------------------------------------------------------------------------------------------------------

def test_a_deleted_gguf_keeps_working(good, tmp_path):
    # the weights are memory-mapped: unlinking the file leaves the mapping (and so the model) intact on Linux
    p = tmp_path / "doomed.gguf"
    p.write_bytes(good.read_bytes())
    m = pyinfer.load(p, n_ctx=32)
    want = pyinfer.load(good, n_ctx=32).generate(" the", max_tokens=10, temperature=0)
    assert m.generate(" the", max_tokens=10, temperature=0) == want
    logits = m.forward([1, 2, 3])
    p.unlink()
    import gc
    gc.collect()
    assert not p.exists()
    if os.path.exists("/proc/self/maps"):  # Linux: it is the mapping that keeps the unlinked file's pages
        with open("/proc/self/maps") as f:
            assert f"{p} (deleted)" in f.read()
    assert m.generate(" the", max_tokens=10, temperature=0) == want   # the same text after the unlink
    assert np.array_equal(m.session().forward([1, 2, 3]), logits)    # a new KV cache over the same mapping
    with pytest.raises(FileNotFoundError):
        pyinfer.load(p)
