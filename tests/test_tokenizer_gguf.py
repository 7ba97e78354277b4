"""Tokenizers stored in GGUF files: pyinfer's BPETokenizer, built from a GGUF's `tokenizer.ggml.*` fields by
gguf_file.tokenizer_from_gguf, must give llama.cpp's ids (llama-cpp-python, vocab_only) for every string of a
corpus, with special=False and special=True. The real file is SmolLM2-135M-Instruct (pre-tokenizer "smollm");
copies of its vocabulary written here under other `tokenizer.ggml.pre` names and token types cover "gpt-2",
"llama-bpe", "qwen2", "deepseek-llm" and llama.cpp's rules for control and user-defined tokens. Needs gguf and, for
the comparisons, llama_cpp; tests/assets.py fetches the GGUF (cached).
"""
import os
import random
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

gguf = pytest.importorskip("gguf")

from assets import gguf_metadata, smollm2_gguf_path, stdlib_sources  # noqa: E402
from pyinfer.gguf_file import tokenizer_from_gguf  # noqa: E402
from pyinfer.tokenizer import (PRETOKENIZER_PATTERNS, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,  # noqa: E402
                               BPETokenizer, IncrementalDecoder, gguf_special_tokens)

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"


# ---------------------------------------------------------------------------------------------------------------
# GGUF -> tokenizer
# ---------------------------------------------------------------------------------------------------------------

def tokenizer_fields(metadata: dict) -> dict:
    """The `tokenizer.*` fields of gguf_metadata(), as Python values."""
    return {k: v for k, (v, _, _) in metadata.items() if k.startswith("tokenizer.")}


def vocab_variant(metadata: dict, pre, token_types=None) -> dict:
    """metadata with `tokenizer.ggml.pre` set to `pre` and token types overridden by token_types {id: type}."""
    out = dict(metadata)
    _, vtype, sub = out["tokenizer.ggml.pre"]
    out["tokenizer.ggml.pre"] = (pre, vtype, sub)
    if token_types:
        types, vtype, sub = out["tokenizer.ggml.token_type"]
        types = list(types)
        for i, t in token_types.items():
            types[i] = t
        out["tokenizer.ggml.token_type"] = (types, vtype, sub)
    return out


def write_metadata_gguf(metadata: dict, dst):
    """A GGUF with these metadata fields and no tensors: enough for llama.cpp's vocab_only load."""
    writer = gguf.GGUFWriter(dst, metadata["general.architecture"][0])     # writes general.architecture itself
    for key, (value, vtype, sub_type) in metadata.items():
        if key != "general.architecture":
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


# ---------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------

def stdlib_corpus(n_files=120, seed=1234):
    """Lines, random chunks (cut anywhere) and a few whole files of the standard library's .py sources."""
    rng = random.Random(seed)
    out = []
    for k, text in enumerate(stdlib_sources(n_files, max_chars=100_000)):
        if k % 10 == 0:
            out.append(text[:20_000])
        lines = text.splitlines(keepends=True)
        out.extend(rng.sample(lines, min(len(lines), 15)))
        for _ in range(10):
            n = rng.choice([1, 2, 3, 5, 8, 17, 64, 200, 1000])
            i = rng.randrange(max(1, len(text) - n))
            out.append(text[i:i + n])
    return out


def adversarial_corpus(seed=7):
    """Strings aimed at llama.cpp's pre-tokenizers, Unicode tables, literal tokens and missing byte tokens."""
    ws = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85",
          "\u2003", "\u200b", "\ufeff", "\x1c"]
    out = []
    for a in ws:
        for b in ws:
            out += [a + b, "x" + a + b + "y", a * 3 + "word" + b * 2, "end" + a + b, a + "1" + b + "22"]
    out += [" " * n for n in (1, 2, 3, 7, 64, 300)] + ["\n" * n + "x" for n in (1, 2, 5, 100)]
    out += ["a  b   c    d", "  leading", "trailing  ", "\t\tdef f():\n\t\t\treturn 1\n", "line1\r\nline2\r\n\r\n",
            " !", "  !!", "\t!", "\n!", "x\n\n!\n\n", "(  )\n\n\t", "?!\r\n\r\n"]
    for w in ["it", "he", "IT", "o", "rock", "ſ"]:
        for c in ["'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'m", "'M", "'ll", "'LL", "'d", "'D", "'x",
                  "'", "''", "'ſ"]:
            out += [w + c, w + c + " ok", " " + w + c + "!"]
    out += ["don't won't can't I'm you're they've he'd she'll", "DON'T WON'T I'M", "rock 'n' roll", "’s ’t"]
    # Numbers: llama-3 groups of three, smollm/qwen2 single digits, every script's digits and other numbers.
    out += ["0", "12", "123", "1234", "12345", "1234567", "3.14159", "1e-9", "0x1F", "1,000,000", "v1.2.3-rc4",
            "٣٤٥", "१२३", "①②③", "½¾", "²³", "ⅫⅩ", "１２３", "a1b2c3" * 10, "9" * 100, "x 42 y", " 7", "\n7\n"]
    out += ["😀", "😀😃😄", "👍🏽", "👩‍👩‍👧‍👦", "🇯🇵🇺🇸", "❤️", "a😀b", " 😀 ", "😀" * 30, "🫠"]
    out += ["漢字かなカナ한국어", "日本語のテキストです。", "中文，标点！", "ｈａｌｆ　ｗｉｄｔｈ", "مرحبا بالعالم",
            "שלום עולם", "नमस्ते दुनिया", "Здравствуй, мир", "Ελληνικά", "ไทย", "Tiếng Việt", "اَلْعَرَبِيَّةُ"]
    out += ["e\u0301", "a\u0308\u0304", "x" + "\u0300" * 20, "\u0301start", "ﬁ ﬂ", "Å Å", "ǅ", "İstanbul ıi"]
    # Code points whose class depends on the Unicode version: letters/digits new in 15.0/15.1 (llama.cpp knows
    # them) and in 16.0/17.0 (llama.cpp does not), next to ASCII letters, digits and spaces.
    for c in ["\U0002EBF0", "\U00031350", "\U0001E4D0", "\U0001E4F0", "\U00011F50", "\u1c89", "\ua7cb",
              "\U00010D4A", "\U00010D40", "\U00011BF0", "\U00016D40", "\u088f"]:
        out += [c, "a" + c + "b", " " + c * 3, "1" + c + "2", c + " x", "'" + c]
    # Control characters and bytes SmolLM2's vocabulary lacks (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, lead bytes
    # 0xF1/0xF2 of planes 4-11, ...): llama.cpp drops them.
    out += ["".join(chr(c) for c in range(32)), "\x7f", "a\x00b", "\x04\x06\x13", "x\x04y", "\x1d" * 3,
            "\U00040000", "a\U00050000b", "\U0009ffff \U000bffff", "\U000e0041", "\U000f0000", "\U0010ffff",
            "\ue000", "\uffff", "\ufffd", "\u00ad"]
    # Literal tokens: whole, adjacent, broken, nested in text and whitespace.
    out += [IM_START, IM_END, EOT, IM_START + IM_END, IM_START + "user\nHi!" + IM_END + "\n" + IM_START + "assistant\n",
            "a" + EOT + "b", " " + IM_START + " ", "\n" + IM_END + "\n\n", "<|im_start", "im_start|>", "<|im_" + EOT,
            "<|" + IM_START + "|>", "<repo_name>x<reponame>y<file_sep>", "<filename>a.py\n<gh_stars>10",
            "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>", "<|" * 10, "<<|im_end|>>"]
    out += ["a" * n for n in (129, 600)] + ["-" * 300, "=" * 200 + "\n", "ab" * 300, "é" * 200, "漢" * 150]
    rng = random.Random(seed)
    pools = [range(0x20, 0x7f), range(0x80, 0x800), range(0x800, 0xd800), range(0xe000, 0x10000),
             range(0x10000, 0x40000), range(0x40000, 0x110000), range(0, 0x20), range(0x30, 0x3a)]
    for _ in range(400):
        out.append("".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randrange(1, 30))))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_path():
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def metadata(gguf_path):
    return gguf_metadata(gguf_path)


@pytest.fixture(scope="module")
def fields(metadata):
    return tokenizer_fields(metadata)


@pytest.fixture(scope="module")
def tok(fields):
    return tokenizer_from_gguf(fields)


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is an optional "
                                                   "test dependency")


def _load_reference(path):
    return _llama_cpp().Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def ref(gguf_path):
    return _load_reference(gguf_path)


def _mismatches(tok, ref, strings, special, k=5):
    bad = []
    for s in strings:
        want = ref.tokenize(s.encode("utf-8"), add_bos=False, special=special)
        got = tok.encode(s, special=special)
        if got != want:
            bad.append((s[:60], got[:16], want[:16]))
            if len(bad) >= k:
                break
    return bad


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2: the real file
# ---------------------------------------------------------------------------------------------------------------

def test_smollm2_fields(fields, tok):
    assert fields["tokenizer.ggml.pre"] == "smollm"
    assert tok.pre == "smollm" and tok.n_vocab == 49152
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, False)
    assert tok.special_tokens[IM_START] == 1 and tok.special_tokens[IM_END] == 2 and tok.special_tokens[EOT] == 0
    assert len(tok.special_tokens) == 17 and tok.user_defined_tokens == {}


@pytest.mark.parametrize("special", [False, True])
def test_smollm2_matches_llama_cpp(tok, ref, special):
    corpus = stdlib_corpus() + adversarial_corpus()
    assert len(corpus) > 2500
    t0 = time.perf_counter()
    assert _mismatches(tok, ref, corpus, special) == []
    assert time.perf_counter() - t0 < 30


def test_smollm2_special_tokens(tok):
    chat = IM_START + "user\nHi!" + IM_END + "\n"
    ids = tok.encode(chat, special=True)
    assert ids[0] == 1 and ids.count(1) == 1 and ids.count(2) == 1
    assert 1 not in tok.encode(chat) and 2 not in tok.encode(chat)
    assert tok.decode(ids) == chat == tok.decode(tok.encode(chat))


def test_smollm2_digits_split_one_by_one(tok):
    assert tok.pretokenize("abc 2024, x1") == ["abc", " ", "2", "0", "2", "4", ",", " x", "1"]
    assert len(tok.encode("1234567890")) == 10


def test_smollm2_roundtrip_and_stream(tok):
    for s in adversarial_corpus()[:600]:
        if any(0xF1 <= b <= 0xF2 or b in (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D) for b in s.encode("utf-8")):
            continue                                      # bytes without a token are dropped, not round-tripped
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        dec = IncrementalDecoder(tok)
        assert "".join(dec.add(i) for i in ids) + dec.flush() == s


def test_missing_bytes(fields):
    tokens = fields["tokenizer.ggml.tokens"]
    strict = BPETokenizer(tokens, fields["tokenizer.ggml.merges"], pre="smollm")
    with pytest.raises(ValueError, match="byte 0x04 has no token"):
        strict.encode("a\x04b")
    lenient = BPETokenizer(tokens, fields["tokenizer.ggml.merges"], pre="smollm", skip_missing_bytes=True)
    assert lenient.encode("a\x04b") == lenient.encode("a") + lenient.encode("b")


# ---------------------------------------------------------------------------------------------------------------
# Other pre-tokenizers and token types: SmolLM2's vocabulary under other GGUF metadata
# ---------------------------------------------------------------------------------------------------------------

# SmolLM2 tokens: "he" (id of a 2-char token) overlaps "ello" in "hello"; llama.cpp cuts the longer one first.
def _variant_types(tokens):
    ids = {t: i for i, t in enumerate(tokens)}
    return {ids["he"]: TOKEN_TYPE_CONTROL, ids["ello"]: TOKEN_TYPE_USER_DEFINED,
            ids["<repo_name>"]: TOKEN_TYPE_USER_DEFINED}


@pytest.fixture(scope="module")
def variants(metadata, fields, tmp_path_factory):
    """pre name -> (our tokenizer, llama.cpp's) for SmolLM2's vocabulary written under that name; under "smollm",
    with the token types of _variant_types."""
    _llama_cpp()
    d = tmp_path_factory.mktemp("gguf-variants")
    out = {}
    for pre in ("gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "smollm"):
        types = _variant_types(fields["tokenizer.ggml.tokens"]) if pre == "smollm" else None
        variant = vocab_variant(metadata, pre, types)
        path = write_metadata_gguf(variant, d / f"{pre}.gguf")
        out[pre] = (tokenizer_from_gguf(tokenizer_fields(variant)), _load_reference(path))
    return out


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2", "deepseek-llm"])
@pytest.mark.parametrize("special", [False, True])
def test_other_pretokenizers_match_llama_cpp(variants, pre, special):
    tok, ref = variants[pre]
    assert tok.pre == pre
    corpus = adversarial_corpus(seed=11) + stdlib_corpus(n_files=40, seed=5)
    assert _mismatches(tok, ref, corpus, special) == []


def test_literal_token_rules_match_llama_cpp(variants):
    tok, ref = variants["smollm"]
    he, ello, repo = (tok.encode(t, special=True)[0] for t in ("he", "ello", "<repo_name>"))
    assert tok.special_tokens["he"] == he and tok.user_defined_tokens == {"ello": ello, "<repo_name>": repo}
    # USER_DEFINED tokens are cut out of the text even with special=False; CONTROL ones only with special=True,
    # and the longer token first ("ello" beats the leftmost "he").
    assert tok.encode("hello") == [tok.encode("h")[0], ello]
    assert tok.encode("<repo_name>", special=False) == [repo]
    strings = ["hello", "hehello", "ellohe", "the hell", "say hello<repo_name>he", "<repo_name>hello" + IM_START,
               " hello  hello\nhe", IM_START + "hello" + IM_END] + adversarial_corpus()[::7]
    for special in (False, True):
        assert _mismatches(tok, ref, strings, special) == []


def test_pretokenizer_defaults(fields):
    tokens, merges = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.merges"]
    llama3, qwen2 = (BPETokenizer(tokens, merges, pre=p) for p in ("llama-bpe", "qwen2"))
    assert llama3._ignore_merges and not qwen2._ignore_merges           # llama.cpp's ignore_merges per pre name
    assert not BPETokenizer(tokens, merges, pre="llama-bpe", ignore_merges=False)._ignore_merges
    assert llama3.pretokenize("abc 2024, x12345") == ["abc", " ", "202", "4", ",", " x", "123", "45"]
    assert llama3.pretokenize("I'M here\n\n  ok") == ["I", "'M", " here", "\n\n", " ", " ok"]
    assert qwen2.pretokenize("x 12") == ["x", " ", "1", "2"]
    # Unicode 15.1 classes: U+2EBF0 (CJK Ext. I, 15.1) is a letter, U+1C89 (16.0) is not, whatever `regex` knows.
    assert llama3.pretokenize("a\U0002EBF0b \u1c89x") == ["a\U0002EBF0b", " \u1c89", "x"]


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "smollm"])
@pytest.mark.parametrize("add_bos", [None, False, True])
def test_add_bos_default_matches_llama_cpp(metadata, tmp_path, pre, add_bos):
    """Without `tokenizer.ggml.add_bos_token`, llama.cpp adds BOS for the Llama 3 pre-tokenizers only."""
    variant = {k: v for k, v in vocab_variant(metadata, pre).items() if k != "tokenizer.ggml.add_bos_token"}
    if add_bos is not None:
        variant["tokenizer.ggml.add_bos_token"] = (add_bos, gguf.GGUFValueType.BOOL, None)
    ref = _load_reference(write_metadata_gguf(variant, tmp_path / f"{pre}.gguf"))
    tok = tokenizer_from_gguf(tokenizer_fields(variant))
    ref_adds_bos = ref.tokenize(b"hello", add_bos=True)[0] == ref.token_bos()
    assert tok.add_bos == ref_adds_bos == (pre == "llama-bpe" if add_bos is None else add_bos)


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------

def test_registry_names_and_unknown_pre(fields):
    for name in ("gpt2", "gpt-2", "smollm", "llama-bpe", "llama3", "qwen2"):
        assert name in PRETOKENIZER_PATTERNS
    assert len(PRETOKENIZER_PATTERNS["smollm"]) == 2                       # digits, then GPT-2's regex
    with pytest.raises(ValueError, match=r"unknown pre-tokenizer 'deepseek-v9'.*gpt-2.*llama-bpe.*smollm"):
        BPETokenizer(fields["tokenizer.ggml.tokens"], [], pre="deepseek-v9")


def test_gguf_special_tokens_rules():
    tokens = ["a", "<|im_end|>", "<u>", "<c>", "<|channel|>", "<|eot_id|>"]
    types = [1, 1, TOKEN_TYPE_USER_DEFINED, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED]
    special, user = gguf_special_tokens(tokens, types)
    # <|im_end|> is a control token to llama.cpp whatever its type; <|channel|> always user-defined (gpt-oss);
    # a user-defined <|eot_id|> gains the control attribute, so it is matched only with special=True.
    assert special == {"<|im_end|>": 1, "<c>": 3, "<|eot_id|>": 5}
    assert user == {"<u>": 2, "<|channel|>": 4}
    with pytest.raises(ValueError, match="token_type has 2 entries for 6 tokens"):
        gguf_special_tokens(tokens, [1, 1])


def test_tokenizer_json_pretokenizers_detected(fields, tok, tmp_path):
    """HF tokenizer.json files of SmolLM2 (Digits + ByteLevel) and Llama-3 (Split + ByteLevel) map onto the
    llama.cpp pre-tokenizers; the SmolLM2 one tokenizes as the GGUF does."""
    import json
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    llama3_split = {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+")}}
    loaded = {}
    pre_tokenizers = {
        "smollm": [{"type": "Digits", "individual_digits": True}, byte_level],
        "llama-bpe": [llama3_split, {**byte_level, "use_regex": False}],
    }
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(tokens) if types[i] == TOKEN_TYPE_CONTROL]
    for name, seq in pre_tokenizers.items():
        data = {"added_tokens": added, "pre_tokenizer": {"type": "Sequence", "pretokenizers": seq},
                "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)},
                          "merges": fields["tokenizer.ggml.merges"], "ignore_merges": name == "llama-bpe"}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        loaded[name] = BPETokenizer.from_tokenizer_json(path)
        assert loaded[name].pre == name
    assert loaded["llama-bpe"]._ignore_merges
    strings = [s for s in adversarial_corpus() if all(tok._vocab.byte_id(b) >= 0 for b in s.encode("utf-8"))]
    for special in (False, True):
        assert [s for s in strings if loaded["smollm"].encode(s, special) != tok.encode(s, special)] == []


def test_unicode_classes_are_llama_cpp_unicode_15_1():
    """\\p{L} and \\p{N} in llama.cpp patterns mean Unicode 15.1's letters and numbers, whatever `regex` knows: the
    15.0/15.1 additions are in, the 16.0/17.0 ones out, and on a Python whose unicodedata is at most 15.1 the
    classes agree with it wherever it has the code point assigned (exactly, on Unicode 15.1)."""
    import unicodedata

    import regex
    from pyinfer import tokenizer as t
    for name, added, later in (("L", t._LETTERS_15, t._LETTERS_16_17), ("N", t._NUMBERS_15, t._NUMBERS_16_17)):
        cls = regex.compile(t._llama_cpp_regex(rf"\p{{{name}}}"), regex.V1)
        assert all(cls.match(chr(a)) and cls.match(chr(b)) for a, b in added)
        assert not any(cls.match(chr(a)) or cls.match(chr(b)) for a, b in later)
        version = tuple(int(x) for x in unicodedata.unidata_version.split(".")[:2])
        if version <= (15, 1):
            cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
            text = "".join(map(chr, cps))
            ours = {cps[m.start()] for m in cls.finditer(text)}
            theirs = {c for c in cps if unicodedata.category(chr(c))[0] == name}
            assert theirs <= ours
            extra = [c for c in ours - theirs if unicodedata.category(chr(c)) != "Cn" or version == (15, 1)]
            assert [hex(c) for c in extra[:10]] == []


# ---------------------------------------------------------------------------------------------------------------
# The fast loading paths (string arrays parsed in C++, the tokenizer's tables built at C speed) against the slow
# definitions
# ---------------------------------------------------------------------------------------------------------------

def test_metadata_equals_the_gguf_packages_reader(gguf_path, metadata):
    from pyinfer import gguf_file
    r = gguf_file.read_gguf(gguf_path)
    ours = gguf_file.read_metadata(r, gguf_path)
    assert ours.keys() == metadata.keys()
    for key, (value, _, _) in metadata.items():
        assert ours[key] == value, key
    tokens = r.fields["tokenizer.ggml.tokens"]  # indexing as the stock ReaderField does
    assert tokens.contents(7) == metadata["tokenizer.ggml.tokens"][0][7]
    assert tokens.contents(-1) == metadata["tokenizer.ggml.tokens"][0][-1]
    assert tokens.contents(slice(10, 20, 3)) == metadata["tokenizer.ggml.tokens"][0][10:20:3]


def test_invalid_utf8_in_a_string_array_is_a_clear_error(metadata, tmp_path):
    from pyinfer import gguf_file
    path = write_metadata_gguf(metadata, tmp_path / "vocab.gguf")
    data = bytearray(path.read_bytes())
    i = data.find(b"<|im_start|>")
    data[i + 2] = 0xFF  # "<|" then an invalid UTF-8 byte
    bad = tmp_path / "bad-utf8.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="tokenizer.ggml.tokens.*not valid UTF-8"):
        gguf_file.read_metadata(gguf_file.read_gguf(bad), bad)


def test_tokenizer_tables_equal_their_definitions(tok, metadata):
    """The C++ vocabulary (BpeVocab) equals the plain per-item definitions: the merge table (first occurrence of a
    text / lowest rank of a pair wins), each byte's token, id -> bytes, and with ignore_merges bytes -> first id; and
    a vocabulary with chars outside the byte table (their own UTF-8), repeats and unused ids."""
    from pyinfer.tokenizer import _BYTE_TO_CHAR, _CHAR_TO_BYTE, BPETokenizer
    tokens = metadata["tokenizer.ggml.tokens"][0]
    merges = metadata["tokenizer.ggml.merges"][0]
    first = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)
    v = tok._vocab
    want = {}
    for rank, m in enumerate(merges):
        a, b = m.split(" ")
        want.setdefault((first[a], first[b]), (rank, first[a + b]))
    assert v.n_merges == len(want)
    assert [p for p, r in want.items() if v.merge(*p) != r] == []
    assert v.merge(first["a"], first["\u0120"]) is None and v.merge(-1, 0) is None and v.merge(0, len(tokens)) is None
    byte_of = {c: bytes([b]) for c, b in _CHAR_TO_BYTE.items()}
    assert [b for b in range(256) if v.byte_id(b) != first.get(_BYTE_TO_CHAR[b], -1)] == []
    special = set(tok.special_tokens.values()) | set(tok.user_defined_tokens.values())
    assert [i for i in range(len(tokens))
            if i not in special and v.token_bytes(i) != b"".join(byte_of[c] for c in tokens[i])] == []
    assert [i for i in special if v.token_bytes(i) != tokens[i].encode()] == []
    assert v.token_bytes(-1) is None and v.token_bytes(len(tokens)) is None
    llama3 = BPETokenizer(tokens, merges, pre="llama-bpe")  # ignore_merges: bytes -> the first id of that text
    assert [t for t, i in first.items() if llama3._vocab.whole_id(b"".join(byte_of[c] for c in t)) != i] == []
    assert llama3._vocab.whole_id(b"\xff\xfe not a token") == -1 and tok._vocab.whole_id(b"the") == -1
    odd = BPETokenizer(["a", "b", "ab", "\u20ac", "a\u20ac", "ab", None, "\u20ac"], ["a b", "a \u20ac", "a b"])
    assert [odd.token_bytes(i) for i in (3, 4, 5)] == ["\u20ac".encode(), b"a" + "\u20ac".encode(), b"ab"]
    assert odd._vocab.merge(0, 1) == (0, 2) and odd._vocab.merge(0, 3) == (1, 4) and odd._vocab.n_merges == 2
    assert odd._vocab.token_bytes(6) is None and odd._vocab.byte_id(ord("a")) == 0
    with pytest.raises(ValueError, match="invalid token id 6"):
        odd.decode([6])
    with pytest.raises(ValueError, match="merge 1"):
        BPETokenizer(["a", "b", "ab"], ["a b", "a c"])
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer(["a", "b", "ab"], [["a", 5]])
    with pytest.raises(ValueError, match="token 1: expected str"):
        BPETokenizer(["a", 7], [])
    with pytest.raises(ValueError, match="token 1 holds a lone surrogate .U.D800"):
        BPETokenizer(["a", "b\ud800"], [])


def test_cpp_vocabulary_helpers_decline_what_python_must_check():
    """_ext.tokenizer.merge_ids gives the ids of the plain definitions, -1 for a text not in the vocabulary, and None
    (the Python path then runs and names the problem) for anything irregular; BpeVocab checks its arrays and merges
    alone the runs between bytes that have no token."""
    import numpy as np
    from pyinfer import _ext
    from pyinfer.tokenizer import _BYTE_LEVEL_TABLE
    T = _ext.tokenizer
    tokens = ["a", "b", None, "ab", "a", "", "\u0120x", "b\u0120x"]
    a, b, ab = T.merge_ids(tokens, ["a b", "b \u0120x", "ab a", " a", "a q"])
    assert a.tolist() == [0, 1, 3, 5, 0] and b.tolist() == [1, 6, 0, 0, -1] and ab.tolist() == [3, 7, -1, 0, -1]
    for bad_merges in (["a b c"], ["ab"], [["a", "b"]], ["a \ud800"]):
        assert T.merge_ids(tokens, bad_merges) is None, bad_merges
    assert T.merge_ids(["a", 7], ["a b"]) is None and T.merge_ids(["\udc00"], []) is None
    ids = [np.array(x, np.int64) for x in ([0], [1], [3])]
    v = T.BpeVocab(tokens, _BYTE_LEVEL_TABLE, *ids, {}, whole=False)
    assert [v.token_bytes(i) for i in range(8)] == [b"a", b"b", None, b"ab", b"a", b"", b" x", b"b x"]
    assert v.bpe(b"ab", False, False) == (3,) and v.bpe(b"abq", False, False) is None
    assert v.bpe(b"aqb", True, False) == (0, 1) and v.bpe(b"abqab", True, False) == (3, 3)
    with pytest.raises(ValueError, match="table"):
        T.BpeVocab(tokens, np.zeros(4, np.int64), *ids, {}, whole=False)
    with pytest.raises(ValueError, match="merge 0: token id outside"):
        T.BpeVocab(tokens, _BYTE_LEVEL_TABLE, ids[0], ids[1], np.array([8], np.int64), {}, whole=False)
    with pytest.raises(ValueError, match="differ in length"):
        T.BpeVocab(tokens, _BYTE_LEVEL_TABLE, ids[0], ids[1], np.array([3, 3], np.int64), {}, whole=False)
    with pytest.raises(ValueError, match="content of token 9"):
        T.BpeVocab(tokens, _BYTE_LEVEL_TABLE, *ids, {9: b"x"}, whole=False)
    # repeated texts among control tokens: the last id wins, NORMAL ones between change nothing
    special, user = gguf_special_tokens(["<c>", "<c>", "x", "<c>", "<c>"], [3, 1, 1, 3, 1])
    assert special == {"<c>": 3} and user == {}
