"""Tokenizer goldens: pyinfer's byte-level BPE must give tiktoken's ids (GPT-2 ranks) for every string of a corpus
built from the Python standard library's sources plus adversarial unicode, round-trip text, and stream it through
IncrementalDecoder. Also covers the tokenizer.json loader and loader/decoder errors. Needs tiktoken and the GPT-2
rank file that tests/assets.py fetches (cached).
"""
import json
import os
import random
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

tiktoken = pytest.importorskip("tiktoken")

from assets import gpt2_ranks, gpt2_tokenizer_files, stdlib_sources  # noqa: E402
from pyinfer.tokenizer import BPETokenizer, IncrementalDecoder  # noqa: E402
from tiktoken_ext.openai_public import r50k_pat_str as GPT2_PAT  # noqa: E402  tiktoken's own GPT-2 regex

EOT = "<|endoftext|>"
EOT_ID = 50256


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: our tokenizer from vocab.json/merges.txt, tiktoken's from the same ranks
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return gpt2_tokenizer_files(tmp_path_factory.mktemp("gpt2-tokenizer"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    return BPETokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def ref():
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=gpt2_ranks(),
                             special_tokens={EOT: EOT_ID})


# ---------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------

def stdlib_corpus():
    """Whole files, lines and random chunks (1..3000 chars) of stdlib sources."""
    rng = random.Random(1234)
    texts = stdlib_sources(n_files=200, max_chars=200_000)
    out = list(texts[::4])                                             # whole files
    for t in texts:
        lines = t.splitlines(keepends=True)
        out.extend(rng.sample(lines, min(len(lines), 20)))              # single lines
        for _ in range(10):                                             # chunks cut anywhere, even mid-word
            n = rng.choice([1, 2, 3, 5, 8, 17, 64, 200, 1000, 3000])
            i = rng.randrange(max(1, len(t) - n))
            out.append(t[i:i + n])
    return out


def adversarial_corpus():
    """Hand-written strings aimed at the pre-tokenizer regex, byte-level BPE and UTF-8 edge cases."""
    ws = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\x0b", "\x0c", "\x85",
          "\u2003", "\u202f", "\u205f", "\u1680", "\u200b", "\ufeff"]
    out = []
    for a in ws:
        for b in ws:
            out += [a + b, "x" + a + b + "y", a * 3 + "word" + b * 2, "end" + a + b]
    out += [" " * n for n in (1, 2, 3, 7, 64, 257, 1000)]
    out += ["\n" * n + "x" for n in (1, 2, 5, 100)]
    out += [" \n \n\t\t  x", "a  b   c    d", "  leading", "trailing  ", "\t\tdef f():\n\t\t\treturn 1\n",
            "line1\r\nline2\r\n\r\n", "mixed \u00a0\u3000 \t\n spaces", " \u00a0x", "\u3000\u3000漢字"]
    words = ["it", "he", "they", "we", "I", "you", "IT", "HE", "rock", "o"]
    for w in words:
        for c in ["'s", "'S", "'t", "'T", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'D", "'x", "'", "''"]:
            out += [w + c, w + c + " ok", " " + w + c + "!"]
    out += ["don't won't can't I'm you're they've he'd she'll", "'''", "' s", "rock 'n' roll", "’s ’t", "\"'s\""]
    out += ["0", "12", "123", "1234", "3.14159", "1e-9", "0x1F", "1,000,000", "٣٤٥", "१२३", "①②③", "½¾"]
    out += ["9" * n for n in (10, 100, 1001)] + ["1234567890" * 50, "a1b2c3" * 20]
    out += ["😀", "😀😃😄", "👍🏽", "👩‍👩‍👧‍👦", "👨🏻‍💻", "🏳️‍🌈", "🇯🇵🇺🇸🇫🇷", "❤️", "a😀b", " 😀 ", "😀" * 50,
            "🧑‍🤝‍🧑", "🫠", "✊🏿✋🏾"]
    out += ["漢字かなカナ한국어", "日本語のテキストです。", "中文，标点！", "這是一個測試", "ｈａｌｆ　ｗｉｄｔｈ",
            "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "Здравствуй, мир", "Ελληνικά", "ไทย", "ქართული",
            "አማርኛ", "Tiếng Việt", "עִבְרִית", "اَلْعَرَبِيَّةُ"]
    out += ["e\u0301", "a\u0308\u0304", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f", "\u0301start",
            "x" + "\u0300" * 30, "\u1100\u1161\u11a8", "ﬁ ﬂ", "Å Å", "ǅ", "İstanbul ıi"]
    out += ["".join(chr(c) for c in range(0, 32)), "\x7f", "a\x00b", "\x00" * 10, "\x1c\x1d\x1e\x1f",
            "tab\tsep\x1fvalue", "\x1b[31mred\x1b[0m", "\x80\x81\x9f", "\u00ad", "\ufffd", "\U0010ffff",
            "\ue000", "\uffff", "\U0001d11e"]
    out += [EOT, EOT + EOT, "a" + EOT + "b", " " + EOT + " ", "<|endoftext", "|endoftext|>", "<|endoftext|",
            "<|end" + EOT + "oftext|>", "hello" + EOT + "\n\n" + EOT + "world", "<|im_start|>", "<|" * 20]
    out += ["a" * n for n in (129, 500, 3000)]
    out += ["thequickbrownfoxjumpsoverthelazydog" * 20, "Supercalifragilisticexpialidocious" * 10,
            "-" * 300, "=" * 200 + "\n", "#" * 160, "ab" * 400, "\u00e9" * 300, "漢" * 200]
    # Random unicode soup over BMP and astral planes (no surrogates; tested below).
    rng = random.Random(7)
    pools = [range(0x20, 0x7f), range(0x80, 0x800), range(0x800, 0xd800), range(0xe000, 0x10000),
             range(0x10000, 0x30000), range(0, 0x20)]
    for _ in range(300):
        n = rng.randrange(1, 40)
        out.append("".join(chr(rng.choice(rng.choice(pools))) for _ in range(n)))
    return out


SURROGATES = ["\ud800", "\udfff", "a\ud800b", "\ud83d\ude00", "x\ud83dy", "\ude00\ud83d", " \udc80 ", "\ud800" * 5,
              "😀\udbff", EOT + "\ud800" + EOT]


def _first_mismatches(tok, ref, strings, special, k=5):
    bad = []
    for s in strings:
        want = ref.encode(s, allowed_special="all") if special else ref.encode(s, disallowed_special=())
        got = tok.encode(s, special=special)
        if got != want:
            bad.append((s[:80], got[:20], want[:20]))
            if len(bad) >= k:
                break
    return bad


# ---------------------------------------------------------------------------------------------------------------
# Encode == tiktoken
# ---------------------------------------------------------------------------------------------------------------

def test_loaded_metadata(tok):
    assert tok.n_vocab == 50257
    assert tok.special_tokens == {EOT: EOT_ID}
    assert tok.eos_id == tok.bos_id == EOT_ID
    assert tok.add_bos is False
    assert tok.pre == "gpt2"


@pytest.mark.parametrize("special", [False, True])
def test_stdlib_corpus_matches_tiktoken(tok, ref, special):
    corpus = stdlib_corpus()
    assert len(corpus) > 3000
    assert _first_mismatches(tok, ref, corpus, special) == []


@pytest.mark.parametrize("special", [False, True])
def test_adversarial_corpus_matches_tiktoken(tok, ref, special):
    assert _first_mismatches(tok, ref, adversarial_corpus(), special) == []


@pytest.mark.parametrize("special", [False, True])
def test_lone_surrogates_match_tiktoken(tok, ref, special):
    # tiktoken joins surrogate pairs and replaces lone surrogates by U+FFFD; so do we.
    assert _first_mismatches(tok, ref, SURROGATES, special) == []
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(tok.encode("\ud83d\ude00")) == "😀"


def test_special_tokens_split_only_when_asked(tok):
    assert tok.encode(EOT, special=True) == [EOT_ID]
    assert EOT_ID not in tok.encode(EOT)
    assert tok.encode("a" + EOT + "b", special=True) == tok.encode("a") + [EOT_ID] + tok.encode("b")


def test_every_vocab_token_encodes_to_itself(tok):
    # Each of the 50256 byte-level tokens, BPE'd alone, is one token (tiktoken's single-piece fast path).
    bad = [(b, r) for b, r in gpt2_ranks().items() if tok._bpe(b) != (r,)]
    assert bad[:5] == []


def test_long_pretokens_are_fast_and_exact(tok, ref):
    rng = random.Random(3)
    letters = "".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(5000))
    strings = [" " * 10_000, "\n" * 10_000, "a" * 10_000, "9" * 10_000, letters, "ab" * 5000, "😀" * 2000]
    t0 = time.perf_counter()
    assert _first_mismatches(tok, ref, strings, special=False) == []
    assert time.perf_counter() - t0 < 10.0


def test_roundtrip(tok):
    strings = adversarial_corpus() + stdlib_corpus()[::10]
    bad = [s[:80] for s in strings if tok.decode(tok.encode(s)) != s]
    assert bad[:5] == []
    assert tok.decode(tok.encode(EOT, special=True)) == EOT


# ---------------------------------------------------------------------------------------------------------------
# Decode and streaming
# ---------------------------------------------------------------------------------------------------------------

def _stream(tok, ids):
    dec = IncrementalDecoder(tok)
    parts = [dec.add(i) for i in ids]
    return parts, dec.flush()


def test_incremental_decoder_splits_multibyte_chars(tok):
    texts = ["👩‍👩‍👧‍👦 family 🇯🇵 flags 👍🏽", "日本語のテキストです。漢字かなカナ", "🫠🧑‍🤝‍🧑✊🏿",
             "mixed ascii 😀 and 中文 and עברית", "\U0001d11e\U0010ffff"]
    n_partial = 0
    for text in texts:
        ids = tok.encode(text)
        n_partial += sum(1 for i in ids if _is_partial(tok.token_bytes(i)))
        parts, rest = _stream(tok, ids)
        for p in parts:
            assert "\ufffd" not in p
            p.encode("utf-8")                     # no lone surrogates: only whole characters come out
        assert "".join(parts) + rest == text == tok.decode(ids)
        assert rest == ""
    assert n_partial > 10                         # the streams really did cut characters


def _is_partial(b):
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_incremental_decoder_invalid_bytes_match_decode(tok):
    # Random id streams rich in lone continuation/lead bytes: the concatenation must equal decode()'s replacement.
    rng = random.Random(11)
    high_bytes = [i for i in range(tok.n_vocab) if tok.token_bytes(i)[0] >= 0x80 or tok.token_bytes(i)[-1] >= 0x80]
    for _ in range(300):
        ids = [rng.choice(high_bytes) if rng.random() < 0.7 else rng.randrange(tok.n_vocab)
               for _ in range(rng.randrange(0, 12))]
        parts, rest = _stream(tok, ids)
        assert "".join(parts) + rest == tok.decode(ids)
        assert tok.decode_bytes(ids).decode("utf-8", errors="replace") == tok.decode(ids)


def test_decoder_reuse_after_flush(tok):
    dec = IncrementalDecoder(tok)
    first = tok.encode("😀")
    assert dec.add(first[0]) == ""
    assert dec.flush() == "\ufffd"
    assert "".join(dec.add(i) for i in first) + dec.flush() == "😀"


@pytest.mark.parametrize("bad", [-1, 50257, 10**9, 1.5, "3", None])
def test_invalid_ids_raise(tok, bad):
    with pytest.raises(ValueError, match="invalid token id"):
        tok.decode([1, bad])
    with pytest.raises(ValueError, match="invalid token id"):
        tok.token_bytes(bad)
    dec = IncrementalDecoder(tok)
    with pytest.raises(ValueError, match="invalid token id"):
        dec.add(bad)


def test_numpy_ids_accepted(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("numpy ids 😀")
    assert tok.decode(np.array(ids, dtype=np.int64)) == "numpy ids 😀"


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------

def _write_tokenizer_json(tok_dir, dest, merges_as_lists):
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    lines = (tok_dir / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [m for m in lines[1:] if m]
    if merges_as_lists:
        merges = [m.split(" ") for m in merges]
    data = {
        "version": "1.0",
        "added_tokens": [{"id": EOT_ID, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": merges},
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return dest


@pytest.mark.parametrize("merges_as_lists", [False, True])
def test_from_tokenizer_json_matches(tok, ref, tok_dir, tmp_path, merges_as_lists):
    d = _write_tokenizer_json(tok_dir, tmp_path / "hf", merges_as_lists)
    tj = BPETokenizer.from_tokenizer_json(d / "tokenizer.json")
    assert (tj.n_vocab, tj.special_tokens, tj.eos_id, tj.bos_id) == (50257, {EOT: EOT_ID}, EOT_ID, EOT_ID)
    strings = adversarial_corpus()[::3] + stdlib_corpus()[::20]
    for special in (False, True):
        assert _first_mismatches(tj, ref, strings, special) == []
    # from_dir prefers tokenizer.json; tokenizer_config.json supplies add_bos_token.
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "eos_token": EOT}))
    fd = BPETokenizer.from_dir(d)
    assert fd.add_bos is True and fd.eos_id == EOT_ID
    assert fd.encode("hi" + EOT, special=True) == tok.encode("hi" + EOT, special=True)


def test_loader_errors(tok_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        BPETokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        BPETokenizer.from_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        BPETokenizer.from_vocab_merges(tok_dir / "vocab.json", tmp_path / "missing.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        BPETokenizer.from_vocab_merges(tmp_path / "bad.json", tok_dir / "merges.txt")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt:3"):
        BPETokenizer.from_vocab_merges(tok_dir / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match="tokenizer.json"):
        BPETokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")


def test_constructor_validation_and_small_vocab():
    tokens = [chr(c) for c in range(0x21, 0x7f)] + ["ab", "abc", "<s>", "<s><s>"]
    ab, abc, s1, s2 = (tokens.index(t) for t in ("ab", "abc", "<s>", "<s><s>"))
    t = BPETokenizer(tokens, ["a b", ["ab", "c"]], special_tokens={"<s>": s1, "<s><s>": s2})
    assert t.encode("abcab") == [abc, ab]
    assert t.encode("<s><s><s>", special=True) == [s2, s1]           # longest special token wins
    with pytest.raises(ValueError, match="byte 0x20"):                # ' ' has no single-byte token here
        t.encode("a b")
    with pytest.raises(ValueError, match="llama-bpe-typo"):
        BPETokenizer(tokens, [], pre="llama-bpe-typo")
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer(tokens, ["x yz"])
    with pytest.raises(ValueError, match="special token"):
        BPETokenizer(tokens, [], special_tokens={"<s>": len(tokens)})
