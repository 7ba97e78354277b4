"""SentencePiece-style GGUF vocabularies (`tokenizer.ggml.model` "llama"): pyinfer's SPMTokenizer, built by
gguf_file.tokenizer_from_gguf, must give llama.cpp's ids (llama-cpp-python, vocab_only) for every string of a corpus
with special=False and True, decode as llama_detokenize does, and stream to the same text. The real file is Gemma 3
270M (262144 tokens, byte fallback, no space prefix); small vocabularies written here with gguf's GGUFWriter pin
the merge order (score, then leftmost), byte fallback, unk, literal tokens and the space prefix against llama.cpp
without the big file. Needs gguf and llama_cpp; pyinfer.models fetches the Gemma file (cached).
"""
import ctypes
import os
import random
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llama.cpp reference) is an optional "
                                                    "test dependency")

from test_tokenizer_gguf import adversarial_corpus, stdlib_corpus  # noqa: E402
from pyinfer.generate import stop_token_ids, stream_text  # noqa: E402
from pyinfer.gguf_file import read_gguf, read_metadata, tokenizer_from_gguf  # noqa: E402
from pyinfer.tokenizer import IncrementalDecoder  # noqa: E402
from pyinfer.tokenizer_spm import SPMTokenizer  # noqa: E402

T_NORMAL, T_UNKNOWN, T_CONTROL, T_USER, T_UNUSED, T_BYTE = 1, 2, 3, 4, 5, 6


# ---------------------------------------------------------------------------------------------------------------
# llama.cpp through ctypes: detokenize, pieces, EOG set
# ---------------------------------------------------------------------------------------------------------------

def _load_reference(path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def ref_detokenize(ref, ids) -> bytes:
    """llama_detokenize(remove_special=False, unparse_special=True): the C function, not llama-cpp-python's
    Llama.detokenize (which drops a space after BOS itself and renders no special token)."""
    vocab = llama_cpp.llama_model_get_vocab(ref.model)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 * len(ids) + 64
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
    assert n >= 0
    return buf.raw[:n]


def ref_piece(ref, i) -> bytes:
    vocab = llama_cpp.llama_model_get_vocab(ref.model)
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, i, buf, 256, 0, True)
    assert n >= 0
    return buf.raw[:n]


def ref_eog_ids(ref, n_vocab) -> set:
    vocab = llama_cpp.llama_model_get_vocab(ref.model)
    return {i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)}


def mismatches(tok, ref, strings, special, k=5):
    bad = []
    for s in strings:
        want = ref.tokenize(s.encode("utf-8"), add_bos=False, special=special)
        got = tok.encode(s, special=special)
        if got != want:
            bad.append((s[:60], got[:16], want[:16]))
            if len(bad) >= k:
                break
    return bad


def decode_mismatches(tok, ref, id_lists, k=5):
    bad = []
    for ids in id_lists:
        want = ref_detokenize(ref, ids)
        if tok.decode_bytes(ids) != want or tok.decode(ids) != want.decode("utf-8", "replace"):
            bad.append((ids[:16], tok.decode_bytes(ids)[:60], want[:60]))
            if len(bad) >= k:
                break
    return bad


def streamed(tok, ids) -> str:
    dec = IncrementalDecoder(tok)
    return "".join(dec.add(i) for i in ids) + dec.flush()


# ---------------------------------------------------------------------------------------------------------------
# Gemma 3: the real file
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_path():
    from pyinfer.models import named_model_path
    return named_model_path("gemma3-270m", quiet=True)


@pytest.fixture(scope="module")
def gemma_fields(gemma_path):
    meta = read_metadata(read_gguf(gemma_path), gemma_path)
    return {k: v for k, v in meta.items() if k.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def gemma(gemma_fields):
    return tokenizer_from_gguf(gemma_fields, source="gemma.gguf")


@pytest.fixture(scope="module")
def gemma_ref(gemma_path):
    return _load_reference(gemma_path)


def gemma_corpus(fields, seed=11):
    """Gemma's literal tokens (control, user-defined whitespace runs and HTML tags) alone, broken and in text; text
    that spells a byte token or holds "▁" itself; and runs of random vocabulary texts glued together."""
    lits = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "[multimodal]",
            "<unused0>", "<unused98>", "</s>", "<s>", "<table>", "</td>", "<start_of_image>", "<end_of_image>",
            "\n", "\n\n\n", "\t\t", "  ", " " * 31, " " * 40, "\t" * 40, "\n" * 40]
    out = []
    for a in lits:
        out += [a, "x" + a + "y", " " + a + " ", a + a, a[:-1], a[1:], "<start_of_turn>user\n" + a + "<end_of_turn>\n"]
    out += ["<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there.<end_of_turn>\n",
            "<bos><start_of_turn>system", "<<start_of_turn>>", "<start_of_turn" * 3, "<0x41><0x0A>", "<0xZZ>",
            "\u2581", "a\u2581b", "\u2581\u2581 \u2581", " \u2581x", "[EMPTY_1]", "<unused6000>", "<unused99999>"]
    out += ["", " ", "  ", "   ", "\t \n \t", " leading", "trailing ", "  both  ", "a\n\n\nb", "a \n b", "x\r\ny",
            "1 22 333 4444 55555", "3.14159e-10", "0x7fffffff", "١٢٣ ४५६", "½ ⅔ ①"]
    out += ["漢字とかなカナ 한국어 中文", "مرحبا بالعالم", "שָׁלוֹם", "e\u0301\u0302 a\u0308", "👩‍👩‍👧‍👦 🇯🇵 👍🏽", "\U0010ffff\ue000",
            "Ελληνικά Русский ไทย Tiếng Việt"]
    rng = random.Random(seed)
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    normal = [i for i, t in enumerate(types) if t == T_NORMAL]
    literal = [i for i, t in enumerate(types) if t in (T_CONTROL, T_USER)]
    for _ in range(400):
        ids = [rng.choice(literal if rng.random() < 0.1 else normal) for _ in range(rng.randrange(1, 9))]
        out.append("".join(tokens[i] for i in ids).replace("\u2581", " " if rng.random() < 0.9 else "\u2581"))
    return out


def test_gemma_fields(gemma_fields, gemma, gemma_ref):
    assert (gemma_fields["tokenizer.ggml.model"], gemma_fields["tokenizer.ggml.pre"]) == ("llama", "default")
    assert isinstance(gemma, SPMTokenizer) and gemma.n_vocab == 262144
    assert (gemma.bos_id, gemma.eos_id, gemma.unk_id, gemma.pad_id) == (2, 1, 3, 0)
    assert gemma.add_bos and not gemma.add_space_prefix
    vocab = llama_cpp.llama_model_get_vocab(gemma_ref.model)
    assert gemma.eot_id == llama_cpp.llama_vocab_eot(vocab) == 106
    # llama.cpp ends a generation at <eos>, <end_of_turn> and (by its text list) </s>
    assert gemma.eog_ids == ref_eog_ids(gemma_ref, gemma.n_vocab) == {1, 106, 212}
    assert stop_token_ids(gemma) == {1, 106, 212}


def test_gemma_loads_fast(gemma_path):
    t0 = time.perf_counter()
    meta = read_metadata(read_gguf(gemma_path), gemma_path)
    t1 = time.perf_counter()
    tok = tokenizer_from_gguf({k: v for k, v in meta.items() if k.startswith("tokenizer.")})
    t2 = time.perf_counter()
    assert tok.n_vocab == 262144
    assert t1 - t0 < 5 and t2 - t1 < 3, (t1 - t0, t2 - t1)     # ~0.5 s and ~0.3 s on one idle core


@pytest.mark.parametrize("special", [False, True])
def test_gemma_matches_llama_cpp(gemma, gemma_ref, gemma_fields, special):
    corpus = stdlib_corpus() + adversarial_corpus() + gemma_corpus(gemma_fields)
    assert len(corpus) > 3000
    t0 = time.perf_counter()
    assert mismatches(gemma, gemma_ref, corpus, special) == []
    assert time.perf_counter() - t0 < 60


def test_gemma_bos_and_special_tokens(gemma, gemma_ref):
    chat = "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n"
    ids = gemma.encode(chat, special=True)
    assert ids[:3] == [105, 2364, 107] and ids.count(105) == 2 and ids.count(106) == 1
    assert 105 not in gemma.encode(chat) and 106 not in gemma.encode(chat)
    for s in ["Hello world", " x", chat, ""]:
        assert gemma_ref.tokenize(s.encode(), add_bos=True, special=True) == [gemma.bos_id] + gemma.encode(s, True)
    assert gemma.decode(ids) == chat == gemma.decode(gemma.encode(chat))
    assert gemma.encode("\n\n") == [108] and gemma.encode(" " * 31) == [167]     # user-defined, always matched


def test_gemma_pieces_match_llama_cpp(gemma, gemma_ref):
    """token_bytes of every id is llama_token_to_piece's (special tokens rendered)."""
    bad = [i for i in range(gemma.n_vocab) if gemma.token_bytes(i) != ref_piece(gemma_ref, i)]
    assert bad == []


def test_gemma_decode_matches_llama_cpp(gemma, gemma_ref, gemma_fields):
    corpus = adversarial_corpus()[:800] + gemma_corpus(gemma_fields)
    id_lists = [gemma.encode(s, special=sp) for s in corpus for sp in (False, True)]
    rng = random.Random(5)
    byte_ids = list(range(238, 238 + 256))
    for _ in range(300):   # random ids anywhere in the vocabulary, with stray byte tokens (broken UTF-8)
        id_lists.append([rng.choice(byte_ids) if rng.random() < 0.3 else rng.randrange(gemma.n_vocab)
                         for _ in range(rng.randrange(1, 12))])
    id_lists += [[2], [2, 9259], [1], [], [108, 2], [0, 3, 4, 5, 6]]
    assert decode_mismatches(gemma, gemma_ref, id_lists) == []


def test_gemma_round_trip_and_stream(gemma, gemma_fields):
    for s in adversarial_corpus()[:800] + gemma_corpus(gemma_fields):
        for special in (False, True):
            ids = gemma.encode(s, special=special)
            text = gemma.decode(ids)
            # byte fallback: every string survives, except that a "▁" of the text itself comes back as a space
            assert text == s.replace("\u2581", " ")
            assert streamed(gemma, ids) == text
            assert "".join(stream_text(iter(ids), gemma)) == text


# ---------------------------------------------------------------------------------------------------------------
# Small vocabularies written here
# ---------------------------------------------------------------------------------------------------------------

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def write_spm_gguf(dst, tokens, scores, types, **kv):
    """A tensor-free GGUF holding an SPM vocabulary: enough for llama.cpp's vocab_only load."""
    w = gguf.GGUFWriter(str(dst), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for key, value in kv.items():
        getattr(w, f"add_{key}")(value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def gguf_tokenizer(path):
    meta = read_metadata(read_gguf(path), path)
    return tokenizer_from_gguf({k: v for k, v in meta.items() if k.startswith("tokenizer.")}, source=path)


def hand_vocab():
    """<unk> <s> </s>, the 256 byte tokens, then ordinary pieces with chosen scores."""
    pieces = {"a": -1, "b": -1, "c": -1, "d": -1, "x": -1, "y": -1, "z": -1, "\u2581": -1, "\u00e9": -1,
              "ab": -3, "bc": -2, "cd": -2, "bcd": -6, "xy": -2, "yz": -2, "\u2581a": -4}
    tokens = ["<unk>", "<s>", "</s>"] + BYTE_TOKENS + list(pieces)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [float(v) for v in pieces.values()]
    types = [T_UNKNOWN, T_CONTROL, T_CONTROL] + [T_BYTE] * 256 + [T_NORMAL] * len(pieces)
    return tokens, scores, types


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    tokens, scores, types = hand_vocab()
    path = write_spm_gguf(tmp_path_factory.mktemp("spm") / "hand.gguf", tokens, scores, types,
                          bos_token_id=1, eos_token_id=2, unk_token_id=0, add_space_prefix=False)
    return gguf_tokenizer(path), _load_reference(path), tokens


def test_hand_vocab_merges_by_score(hand):
    tok, ref, tokens = hand
    name = lambda ids: [tokens[i] for i in ids]  # noqa: E731
    assert name(tok.encode("abc")) == ["a", "bc"]          # bc (-2) before ab (-3), though ab is further left
    assert name(tok.encode("xyz")) == ["xy", "z"]          # xy and yz tie at -2: the leftmost merges
    assert name(tok.encode("abcd")) == ["a", "bcd"]        # bc (leftmost of the -2 tie), then bc+d; ab is gone
    assert name(tok.encode(" a b")) == ["\u2581a", "\u2581", "b"]
    assert name(tok.encode("\u00e9\u00e8")) == ["\u00e9", "<0xC3>", "<0xA8>"]   # è has no piece: its UTF-8 bytes
    assert name(tok.encode("<s>a</s>", special=True)) == ["<s>", "a", "</s>"]
    for s in ["abc", "abcd", "xyz", " a b", "\u00e9\u00e8", "abcabc xyzyz", "<s>a</s>", "\U0001F600"]:
        for special in (False, True):
            assert tok.encode(s, special=special) == ref.tokenize(s.encode(), add_bos=False, special=special), s


def test_unknown_without_byte_tokens():
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "ab"]
    types = [T_UNKNOWN, T_CONTROL, T_CONTROL, T_NORMAL, T_NORMAL, T_NORMAL]
    tok = SPMTokenizer(tokens, [0, 0, 0, -1, -1, -0.5], types, unk_id=0, add_space_prefix=False)
    assert tok.encode("abxa\u00e9b") == [5, 0, 3, 0, 4]      # one <unk> per character without a piece or bytes
    strict = SPMTokenizer(tokens, [0, 0, 0, -1, -1, -0.5], types, add_space_prefix=False)
    with pytest.raises(ValueError, match="'x' has neither a token nor byte tokens"):
        strict.encode("ax")
    assert tok.decode([5, 0, 1]) == "ab<unk><s>"


def random_vocab(rng, n_pieces=300):
    """Byte tokens, literal tokens of every kind, single characters and random multi-character pieces over a small
    alphabet with scores from a short list (so that ties are common), plus an UNUSED token."""
    alphabet = ["a", "b", "c", "\u2581", "\u00e9", "\n", "\u65e5"]
    lit = [("<unk>", T_UNKNOWN), ("<s>", T_CONTROL), ("</s>", T_CONTROL), ("<end_of_turn>", T_CONTROL),
           ("<ctl>", T_CONTROL), ("<ud>", T_USER), ("\u2581\u2581", T_USER), ("<0x61>x", T_USER)]
    tokens = [t for t, _ in lit] + BYTE_TOKENS + alphabet[:-1]
    types = [ty for _, ty in lit] + [T_BYTE] * 256 + [T_NORMAL] * (len(alphabet) - 1)
    seen = set(tokens)
    while len(tokens) < len(lit) + 256 + n_pieces:
        p = "".join(rng.choice(alphabet) for _ in range(rng.randrange(2, 6)))
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(T_NORMAL)
    tokens.append("unused-piece")
    types.append(T_UNUSED)
    scores = [0.0 if ty != T_NORMAL else rng.choice([-1.0, -1.5, -2.0, -2.25, -3.0, -7.5]) for ty in types]
    return tokens, scores, types


def random_strings(rng, n=600):
    parts = ["a", "b", "c", " ", "  ", "\u00e9", "\n", "\u65e5", "x", "<s>", "</s>", "<ctl>", "<ud>", "<end_of_turn>",
             "\u2581", "<0x61>", "<0x61>x", "\U0001F600"]
    return [""] + ["".join(rng.choice(parts) for _ in range(rng.randrange(1, 40))) for _ in range(n)]


@pytest.mark.parametrize("add_space_prefix", [False, True])
def test_random_vocab_matches_llama_cpp(tmp_path, add_space_prefix):
    rng = random.Random(3 + add_space_prefix)
    tokens, scores, types = random_vocab(rng)
    path = write_spm_gguf(tmp_path / "rand.gguf", tokens, scores, types, bos_token_id=1, eos_token_id=2,
                          unk_token_id=0, add_space_prefix=add_space_prefix)
    tok, ref = gguf_tokenizer(path), _load_reference(path)
    assert tok.add_space_prefix is add_space_prefix and tok.eot_id == 3 and tok.eog_ids == {2, 3}
    assert ref_eog_ids(ref, len(tokens)) == {2, 3}
    strings = random_strings(rng)
    for special in (False, True):
        assert mismatches(tok, ref, strings, special) == []
    id_lists = [tok.encode(s, special=sp) for s in strings for sp in (False, True)]
    id_lists += [[rng.randrange(len(tokens)) for _ in range(rng.randrange(1, 10))] for _ in range(300)]
    id_lists += [[len(tokens) - 1], [1, len(tokens) - 1], [0]]
    assert decode_mismatches(tok, ref, id_lists) == []
    assert [tok.token_bytes(i) for i in range(len(tokens))] == [ref_piece(ref, i) for i in range(len(tokens))]
    if not add_space_prefix:
        for ids in id_lists[:200]:
            assert streamed(tok, ids) == tok.decode(ids)


def test_llama_cpp_defaults(tmp_path):
    """No ids and no add_* keys in the file: llama.cpp's SPM defaults (BOS 1, EOS 2, UNK 0, add_bos, space prefix)."""
    tokens, scores, types = hand_vocab()
    tok = gguf_tokenizer(write_spm_gguf(tmp_path / "bare.gguf", tokens, scores, types))
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.add_bos, tok.add_space_prefix) == (1, 2, 0, True, True)
    assert [tokens[i] for i in tok.encode("a")] == ["\u2581a"]
    assert tok.decode(tok.encode("a b")) == "a b"


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

def test_dispatch_and_errors(gemma_fields):
    from pyinfer.tokenizer import BPETokenizer
    assert isinstance(tokenizer_from_gguf(gemma_fields), SPMTokenizer)
    with pytest.raises(ValueError, match=r"^t.gguf: tokenizer model 'bert' is not supported"):
        tokenizer_from_gguf(dict(gemma_fields, **{"tokenizer.ggml.model": "bert"}), source="t.gguf")
    small = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
             "tokenizer.ggml.merges": ["a b"]}
    assert isinstance(tokenizer_from_gguf(small), BPETokenizer)
    tokens, scores, types = hand_vocab()
    base = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types}
    bad = [({"tokenizer.ggml.scores": scores[:5]}, "tokenizer.ggml.scores has 5 entries"),
           ({"tokenizer.ggml.token_type": types[:5]}, "token_type has 5 entries"),
           ({"tokenizer.ggml.eos_token_id": 10 ** 6}, "eos_token_id 1000000 is outside the vocabulary"),
           ({"tokenizer.ggml.add_bos_token": 1}, "add_bos_token' should be bool"),
           ({"tokenizer.ggml.token_type": [T_BYTE] * len(types)}, "'<unk>' has type BYTE but is not of the form"),
           ({"tokenizer.ggml.scores": [float("nan")] * len(types)}, "score of token 0 is not finite")]
    for edit, msg in bad:
        with pytest.raises(ValueError, match=msg):
            tokenizer_from_gguf(dict(base, **edit), source="t.gguf")
    tok = tokenizer_from_gguf(base)
    for bad_id in (-1, tok.n_vocab, "3", 1.0):
        with pytest.raises(ValueError, match="invalid token id"):
            tok.token_bytes(bad_id)
    with pytest.raises(TypeError, match="encode expects str"):
        tok.encode(b"abc")


# ---------------------------------------------------------------------------------------------------------------
# Gemma 3 chat: pyinfer's fallback template against llama.cpp's built-in "gemma" template
# ---------------------------------------------------------------------------------------------------------------

GEMMA_CHATS = [
    ([{"role": "user", "content": "Hello"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "user", "content": "  Hi \n"}, {"role": "assistant", "content": "\nHello! How can I help?\n"},
      {"role": "user", "content": "Tell me a joke.\n\nA short one."}], True),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], False),
    ([{"role": "system", "content": "Answer in Japanese."}, {"role": "user", "content": "日本語で答えて 😀"},
      {"role": "assistant", "content": "はい。"}, {"role": "user", "content": "<start_of_turn> is a token"}], True),
]


def ref_chat(messages, add_generation_prompt, template=b"gemma") -> str:
    """llama_chat_apply_template with a built-in template name (or a Jinja source llama.cpp recognizes)."""
    msgs = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for m, src in zip(msgs, messages):
        keep += [src["role"].encode(), src["content"].encode()]
        m.role, m.content = keep[-2], keep[-1]
    size = 4096
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template, msgs, len(messages), add_generation_prompt, buf, size)
    assert 0 <= n <= size
    return buf.raw[:n].decode("utf-8")


@pytest.mark.parametrize("k", range(len(GEMMA_CHATS)))
def test_gemma_chat_template_matches_llama_cpp(gemma, gemma_ref, k):
    from pyinfer.chat import GEMMA3_CHAT_TEMPLATE, ChatTemplate, default_chat_template
    assert default_chat_template("gemma3") is GEMMA3_CHAT_TEMPLATE and default_chat_template("llama") is None
    messages, gen = GEMMA_CHATS[k]
    template = ChatTemplate(GEMMA3_CHAT_TEMPLATE, bos_token=gemma.decode([gemma.bos_id]))
    text = template.render(messages, add_generation_prompt=gen)
    # llama.cpp's template prints no BOS (its tokenizer adds one); it also knows ours for a Gemma template
    assert text == "<bos>" + ref_chat(messages, gen)
    assert text == "<bos>" + ref_chat(messages, gen, GEMMA3_CHAT_TEMPLATE.encode())
    ids = gemma.encode(text, special=True)
    assert ids[:2] == [gemma.bos_id, 105] and ids == gemma_ref.tokenize(text.encode(), add_bos=False, special=True)
    assert ids.count(106) == len([m for m in messages if m["role"] != "system"])


def test_gemma_chat_template_refuses_bad_roles():
    from pyinfer.chat import GEMMA3_CHAT_TEMPLATE, render_chat
    with pytest.raises(ValueError, match="roles must alternate"):
        render_chat(GEMMA3_CHAT_TEMPLATE, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
