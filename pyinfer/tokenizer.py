"""Byte-level BPE tokenizer (GPT-2, SmolLM, Llama 3, Qwen2 families): text -> token ids, ids -> bytes/text, and an
incremental decoder for streaming. Python (`regex` for pre-tokenization) over a C++ vocabulary (csrc/tokenizer/bpe.h:
token bytes, merge ranks, the merge loop), tokenizing as llama.cpp does for the GGUF pre-tokenizer names it knows;
reads GGUF-style token/merge lists, HF vocab.json+merges.txt or tokenizer.json. It does not implement
SentencePiece-style vocabularies (tokenizer_spm.py), unigram models, normalizers, chat templates (chat.py), or BOS
insertion (`add_bos` is metadata for the caller that builds the prompt).
"""
import codecs
import itertools
import json
import operator
import os

import numpy as np
import regex

from . import _ext

# ---------------------------------------------------------------------------------------------------------------
# Pre-tokenizers: name -> a sequence of split regexes. Each regex splits every piece the previous one produced;
# text between two matches is kept as a piece of its own (llama.cpp's unicode_regex_split, HF's "Isolated").
# Names are llama.cpp's `tokenizer.ggml.pre` values, plus "gpt2" (GPT-2/tiktoken's own regex); add new ones here.
# ---------------------------------------------------------------------------------------------------------------

# llama.cpp classifies code points with its own table (src/unicode-data.cpp), generated from Unicode 15.1, while
# `regex` follows the Unicode version it was built with (17.0 for regex 2025+). \p{L} and \p{N} in a llama.cpp
# pattern are therefore rewritten to the Unicode 15.1 sets: `regex`'s own class, plus what 15.0/15.1 added (for a
# `regex` on Unicode 14), minus what 16.0/17.0 added (llama.cpp sees those code points as unassigned: neither letter
# nor number). The tables below are the differences between Unicode 14.0, 15.0, 15.1 (Python's unicodedata) and
# 17.0 (`regex`), checked equal to llama.cpp's own table. \s needs nothing: llama.cpp's whitespace set is Unicode's
# White_Space property, which is `regex`'s \s. A `regex` on Unicode 18 or later may know letters that llama.cpp
# does not; extend the *_16_17 tables then.
_LETTERS_15 = (   # general category L*, assigned in Unicode 15.0 or 15.1
    (0x1123F, 0x11240), (0x11F02, 0x11F02), (0x11F04, 0x11F10), (0x11F12, 0x11F33),
    (0x1342F, 0x1342F), (0x13441, 0x13446), (0x1B132, 0x1B132), (0x1B155, 0x1B155),
    (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E4D0, 0x1E4EB), (0x2B739, 0x2B739),
    (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
)
_LETTERS_16_17 = (   # general category L*, assigned in Unicode 16.0 or 17.0
    (0x0088F, 0x0088F), (0x00C5C, 0x00C5C), (0x00CDC, 0x00CDC), (0x01C89, 0x01C8A),
    (0x0A7CB, 0x0A7CF), (0x0A7D2, 0x0A7D2), (0x0A7D4, 0x0A7D4), (0x0A7DA, 0x0A7DC),
    (0x0A7F1, 0x0A7F1), (0x105C0, 0x105F3), (0x10940, 0x10959), (0x10D4A, 0x10D65),
    (0x10D6F, 0x10D85), (0x10EC2, 0x10EC7), (0x11380, 0x11389), (0x1138B, 0x1138B),
    (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113B7), (0x113D1, 0x113D1),
    (0x113D3, 0x113D3), (0x11BC0, 0x11BE0), (0x11DB0, 0x11DDB), (0x13460, 0x143FA),
    (0x16100, 0x1611D), (0x16D40, 0x16D6C), (0x16EA0, 0x16EB8), (0x16EBB, 0x16ED3),
    (0x16FF2, 0x16FF3), (0x187F8, 0x187FF), (0x18CFF, 0x18CFF), (0x18D09, 0x18D1E),
    (0x18D80, 0x18DF2), (0x1E5D0, 0x1E5ED), (0x1E5F0, 0x1E5F0), (0x1E6C0, 0x1E6DE),
    (0x1E6E0, 0x1E6E2), (0x1E6E4, 0x1E6E5), (0x1E6E7, 0x1E6ED), (0x1E6F0, 0x1E6F4),
    (0x1E6FE, 0x1E6FF), (0x2B73A, 0x2B73F), (0x2CEA2, 0x2CEAD), (0x323B0, 0x33479),
)
_NUMBERS_15 = ((0x11F50, 0x11F59), (0x1D2C0, 0x1D2D3), (0x1E4F0, 0x1E4F9))   # N*, new in 15.0/15.1
_NUMBERS_16_17 = (   # N*, new in 16.0/17.0
    (0x10D40, 0x10D49), (0x116D0, 0x116E3), (0x11BF0, 0x11BF9), (0x11DE0, 0x11DE9),
    (0x16130, 0x16139), (0x16D70, 0x16D79), (0x16FF4, 0x16FF6), (0x1CCF0, 0x1CCF9),
    (0x1E5F1, 0x1E5FA),
)


def _ranges_class(ranges) -> str:
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


# regex.V1 set syntax: [[A--B]C] is (A minus B) union C.
_LLAMA_CPP_CLASSES = {
    r"\p{L}": rf"[[\p{{L}}--[{_ranges_class(_LETTERS_16_17)}]]{_ranges_class(_LETTERS_15)}]",
    r"\p{N}": rf"[[\p{{N}}--[{_ranges_class(_NUMBERS_16_17)}]]{_ranges_class(_NUMBERS_15)}]",
}


def _llama_cpp_regex(pattern: str) -> str:
    """A llama.cpp regex_exprs entry as a `regex` (V1) pattern with llama.cpp's Unicode 15.1 classes."""
    for name, cls in _LLAMA_CPP_CLASSES.items():
        pattern = pattern.replace(name, cls)
    return pattern


# llama.cpp's regex_exprs (src/llama-vocab.cpp, llm_tokenizer_bpe), in the order it applies them. llama.cpp runs
# the GPT-2, Llama-3 and Qwen2 expressions through hand-written scanners (src/unicode.cpp) that behave as these
# regexes do on its character classes; the GPT-2 one lacks a final `|\s+` because the scanner (and the piece-between-
# matches rule) supplies it. Contractions are spelled '[sS] as llama.cpp adapts them, not (?i:'s), which would also
# fold 'ſ' (U+017F) to s.
_LLAMA_CPP_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""
_LLAMA_CPP_LLAMA3 = (r"""(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"""
                     r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
_LLAMA_CPP_QWEN2 = _LLAMA_CPP_LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_LLAMA_CPP_DIGIT = r"\p{N}"   # every digit (any script) a piece of its own

_GPT2_SEQ = (_llama_cpp_regex(_LLAMA_CPP_GPT2),)
_SMOLLM_SEQ = (_llama_cpp_regex(_LLAMA_CPP_DIGIT), _llama_cpp_regex(_LLAMA_CPP_GPT2))
_LLAMA3_SEQ = (_llama_cpp_regex(_LLAMA_CPP_LLAMA3),)
_QWEN2_SEQ = (_llama_cpp_regex(_LLAMA_CPP_QWEN2),)

# LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM (DeepSeek LLM 7B/67B): newlines, cased-letter runs, ASCII/fullwidth punctuation
# runs, trailing whitespace, CJK/Hangul runs, number runs. llama.cpp runs the first five through std::wregex after
# mapping every non-ASCII whitespace code point to \v, so U+3000 never matches the punctuation class and the CJK
# ranges (U+0800-U+4E00 spans U+1680, U+2000-U+200A, ...) never match whitespace; its `$` is the end of the piece.
_DEEPSEEK_LLM_SEQ = (
    r"[\r\n]",
    r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    r"\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f"
    r"\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77"
    r"\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d"
    r"\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4"
    r"\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    r"\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    r"\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a"
    r"\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
    r"\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
    r"\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3001-\u3002]+",
    r"\s+\Z",
    r"[[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]--\s]+",
    _llama_cpp_regex(r"\p{N}+"),
)

PRETOKENIZER_PATTERNS = {
    # GPT-2's encoder.py pattern with `regex`'s own Unicode tables: what tiktoken and HF's ByteLevel run.
    "gpt2": (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",),
    # llama.cpp LLAMA_VOCAB_PRE_TYPE_GPT2 (GPT-2, Phi-2, MPT, OLMo): the same splits on Unicode 15.1 classes.
    "gpt-2": _GPT2_SEQ, "phi-2": _GPT2_SEQ, "mpt": _GPT2_SEQ, "olmo": _GPT2_SEQ,
    # LLAMA_VOCAB_PRE_TYPE_SMOLLM (SmolLM, StarCoder, Refact, CodeShell): digits one by one, then GPT-2.
    "smollm": _SMOLLM_SEQ, "starcoder": _SMOLLM_SEQ, "refact": _SMOLLM_SEQ, "codeshell": _SMOLLM_SEQ,
    # LLAMA_VOCAB_PRE_TYPE_LLAMA3 (Llama 3.x, Falcon 3): numbers in groups of up to 3; DBRX and Smaug share the
    # regex but not ignore_merges.
    "llama-bpe": _LLAMA3_SEQ, "llama3": _LLAMA3_SEQ, "llama-v3": _LLAMA3_SEQ, "falcon3": _LLAMA3_SEQ,
    "dbrx": _LLAMA3_SEQ, "smaug-bpe": _LLAMA3_SEQ,
    # LLAMA_VOCAB_PRE_TYPE_QWEN2 (Qwen2/2.5/3, DeepSeek-R1 distills of Qwen, StableLM 2): single digits.
    "qwen2": _QWEN2_SEQ, "deepseek-r1-qwen": _QWEN2_SEQ, "stablelm2": _QWEN2_SEQ,
    "deepseek-llm": _DEEPSEEK_LLM_SEQ,
}

# Pre-tokenizers whose pieces map straight to a vocabulary token when there is one, skipping the merges
# (llama.cpp's ignore_merges, HF's BPE.ignore_merges): BPE would not always rebuild such a token from its merges.
PRETOKENIZER_IGNORE_MERGES = frozenset({"llama-bpe", "llama3", "llama-v3", "falcon3"})
# Pre-tokenizers for which llama.cpp adds BOS when the GGUF has no `tokenizer.ggml.add_bos_token` (Llama 3 family);
# for every other byte-level BPE model its default is not to.
PRETOKENIZER_ADD_BOS = frozenset({"llama-bpe", "llama3", "llama-v3", "falcon3"})

# Texts llama.cpp treats as control tokens whatever their GGUF token type: end-of-generation markers, and
# fill-in-the-middle markers (those only while the GGUF names no id for that role, in practice always CONTROL
# anyway). From llama_vocab::impl::load's name lists.
LLAMA_CPP_CONTROL_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "[EOT]", "[EOS]", "<|eom_id|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
    "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
    "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
    "▁<MID>", "<|code_middle|>", "<|middle|>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
})
# Texts it always treats as user-defined (gpt-oss's channel markers).
LLAMA_CPP_USER_DEFINED_TEXTS = frozenset({"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})

# GGUF `tokenizer.ggml.token_type` values (llama.cpp llama_token_type).
TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 2, 3, 4


def gguf_special_tokens(tokens, token_types) -> tuple:
    """(special_tokens, user_defined_tokens), each {text: id}, from GGUF token texts and token types, as llama.cpp
    sorts them: CONTROL and UNKNOWN tokens, and any token named in LLAMA_CPP_CONTROL_TEXTS, are special (recognized
    in text only by encode(special=True)); USER_DEFINED tokens are recognized in text always. Where a text repeats,
    the last id wins (llama.cpp's token_to_id)."""
    tokens = list(tokens)
    token_types = list(token_types) if token_types is not None else [TOKEN_TYPE_NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise ValueError(f"token_type has {len(token_types)} entries for {len(tokens)} tokens")
    special, user = {}, {}
    named = LLAMA_CPP_USER_DEFINED_TEXTS | LLAMA_CPP_CONTROL_TEXTS  # a NORMAL token with another text is neither
    ids = range(len(tokens))
    for i in sorted({*itertools.compress(ids, map(TOKEN_TYPE_NORMAL.__ne__, token_types)),
                     *itertools.compress(ids, map(named.__contains__, tokens))}):
        t, ty = tokens[i], token_types[i]
        if not t:
            continue
        if t in LLAMA_CPP_USER_DEFINED_TEXTS or (ty == TOKEN_TYPE_USER_DEFINED and t not in LLAMA_CPP_CONTROL_TEXTS):
            user[t] = i
            special.pop(t, None)
        elif ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN) or t in LLAMA_CPP_CONTROL_TEXTS:
            special[t] = i
            user.pop(t, None)
    return special, user


# End-of-generation texts (llama_vocab::impl::load, "maintain a list of tokens that cause end-of-generation"): every
# token with one of these texts ends a generation, besides EOS/EOT/EOM and the FIM pad/repo/separator tokens.
LLAMA_CPP_EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
})
# Roles llama.cpp finds by text when the GGUF names no id for them (role -> candidate texts).
LLAMA_CPP_ROLE_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}


def llama_cpp_eog_ids(tokens, ids: dict) -> tuple:
    """(roles, eog_ids) as llama.cpp sets them for a vocabulary: roles is `ids` ({"eos": id or None, "eot": ...,
    "eom": ..., "fim_pad"/"fim_rep"/"fim_sep": ...}, the ids the GGUF names) with the EOT/EOM/FIM roles it names
    not filled in by text (llama.cpp takes whichever candidate its hash map yields first; here the lowest id);
    eog_ids the frozenset of ids that end a generation: FIM pad/repo/sep, every LLAMA_CPP_EOG_TEXTS token, EOS, EOT
    and EOM, less "<|end|>" when <|return|>/<|call|> (or <|calls|>/<|flush|>) are there too (gpt-oss, solar-open)
    and "</s>" when <|tool_response> or <|plamo:eos|> is (gemma4, plamo)."""
    wanted = LLAMA_CPP_EOG_TEXTS.union(*LLAMA_CPP_ROLE_TEXTS.values())
    # a repeated text: the last id wins (llama.cpp's token_to_id)
    by_text = {tokens[i]: i for i in itertools.compress(range(len(tokens)), map(wanted.__contains__, tokens))}
    roles = dict(ids)
    for role, texts in LLAMA_CPP_ROLE_TEXTS.items():
        if roles.get(role) is None:
            found = [by_text[t] for t in texts if t in by_text]
            roles[role] = min(found) if found else None
    eog = {roles[r] for r in ("fim_pad", "fim_rep", "fim_sep")}
    eog.update(by_text[t] for t in LLAMA_CPP_EOG_TEXTS if t in by_text)
    eog.update(roles.get(r) for r in ("eos", "eot", "eom"))
    eog.discard(None)
    texts = {tokens[i]: i for i in eog}
    has_call = "<|call|>" in texts or "<|calls|>" in texts
    if "<|end|>" in texts and has_call and ("<|return|>" in texts or "<|flush|>" in texts):
        eog.discard(texts["<|end|>"])
    if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        eog.discard(texts["</s>"])
    return roles, frozenset(eog)


_CACHE_MAX_ENTRIES = 100_000  # pre-token -> ids cache; cleared when full
_CACHE_MAX_PIECE_LEN = 256    # longer pre-tokens (e.g. whitespace runs) are not cached


def bytes_to_unicode() -> dict:
    """GPT-2's table {byte: printable char}: the alphabet that byte-level vocab/merges strings are written in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}

# The byte-level alphabet as a lookup table for _ext.tokenizer.BpeVocab: code point -> byte, -1 outside it.
_BYTE_LEVEL_TABLE = np.full(max(map(ord, _CHAR_TO_BYTE)) + 1, -1, np.int32)
_BYTE_LEVEL_TABLE[list(map(ord, _CHAR_TO_BYTE))] = list(_CHAR_TO_BYTE.values())


def _merge_ids(merges, tokens: list) -> tuple:
    """(a, b, ab), int64 [len(merges)] each: the ids of each merge's two tokens and of their concatenation (a text's
    first id), for merges "a b" strings or [a, b] pairs over tokens; a ValueError naming the first bad merge."""
    merges = list(merges)
    ids = _ext.tokenizer.merge_ids(tokens, merges)  # the usual case, in C++: every merge "a b" of known tokens
    if ids is not None and all(x.min(initial=0) >= 0 for x in ids):
        return ids
    tok_id = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))  # text -> first id (the last written wins)
    ia, ib, ic = [], [], []
    for rank, m in enumerate(merges):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, (list, tuple)):
            parts = list(m)
        else:
            raise ValueError(f"merge {rank}: expected 'a b' or [a, b], got {m!r}")
        if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"merge {rank}: expected 'a b' or [a, b], got {m!r}")
        a, b = parts
        ids = tok_id.get(a), tok_id.get(b), tok_id.get(a + b)
        if None in ids:
            missing = [x for x, i in zip((a, b, a + b), ids) if i is None]
            raise ValueError(f"merge {rank} {m!r}: token(s) {missing} not in the vocabulary")
        ia.append(ids[0])
        ib.append(ids[1])
        ic.append(ids[2])
    return tuple(np.asarray(x, np.int64) for x in (ia, ib, ic))


def _fix_surrogates(text: str) -> str:
    """Make `text` encodable as UTF-8 exactly as tiktoken does: join surrogate pairs, lone surrogates -> U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------

class BPETokenizer:
    """Byte-level BPE over a vocabulary written in GPT-2's bytes_to_unicode alphabet.

    tokens[i] is the string of id i (None marks an unused id); merges[r] is the merge of rank r, "a b" or (a, b).
    pre names a PRETOKENIZER_PATTERNS entry. Literal tokens are cut out of the text before pre-tokenization, as
    llama.cpp's tokenizer_st_partition does it (longest token first, over the whole text): special_tokens {content:
    id} (GGUF CONTROL/UNKNOWN) only by encode(special=True), user_defined_tokens {content: id} (GGUF USER_DEFINED)
    always. Both decode to their content.
    ignore_merges (llama-3 style): a pre-token that is itself a vocab token maps to that token without merging;
    None takes the pre-tokenizer's default (PRETOKENIZER_IGNORE_MERGES).
    A byte whose single-byte token the vocabulary lacks (SmolLM2 has no token for 0x04, 0xF1, ...) is an error, or
    with skip_missing_bytes=True is dropped, as llama.cpp and HF's BPE (no unk_token) drop it.

    Lone surrogates in input text follow tiktoken: surrogate pairs are joined and lone surrogates become U+FFFD
    before pre-tokenization (a Python str can hold them; UTF-8 cannot).
    """

    def __init__(self, tokens, merges, special_tokens=None, pre="gpt2", bos_id=None, eos_id=None, add_bos=False,
                 *, ignore_merges=None, user_defined_tokens=None, skip_missing_bytes=False):
        if pre not in PRETOKENIZER_PATTERNS:
            raise ValueError(f"unknown pre-tokenizer {pre!r}; known: {', '.join(sorted(PRETOKENIZER_PATTERNS))}")
        tokens = list(tokens)
        n_vocab = len(tokens)
        if n_vocab == 0:
            raise ValueError("empty vocabulary")
        self.pre = pre
        # One split per regex of the sequence; the capture group makes split() return the matches too.
        self._splitters = [regex.compile(f"({p})", regex.V1) for p in PRETOKENIZER_PATTERNS[pre]]
        self._n_vocab = n_vocab
        self._ignore_merges = pre in PRETOKENIZER_IGNORE_MERGES if ignore_merges is None else bool(ignore_merges)
        self._skip_missing_bytes = bool(skip_missing_bytes)

        self.special_tokens = _check_literal_tokens(special_tokens, n_vocab, "special token")
        self.user_defined_tokens = _check_literal_tokens(user_defined_tokens, n_vocab, "user-defined token")
        both = set(self.special_tokens) & set(self.user_defined_tokens)
        if both:
            raise ValueError(f"token(s) {sorted(both)[:5]} are both special and user-defined")
        special_tokens = self.special_tokens

        # The vocabulary's tables, in C++ (a GGUF vocabulary holds 50k-260k tokens and as many merges: load time and
        # memory): each id's bytes (special and user-defined tokens decode to their content; an ordinary token's chars
        # go through the byte table, a char outside it as its own UTF-8, as HF's ByteLevel decoder does), each
        # byte's token, the merge ranks (the first of a repeated pair wins), and with ignore_merges each token's
        # bytes -> its first id.
        if not set(map(type, tokens)) <= {str, type(None)}:
            i = next(i for i, t in enumerate(tokens) if t is not None and not isinstance(t, str))
            raise ValueError(f"token {i}: expected str, got {type(tokens[i]).__name__}")
        contents = {i: c.encode("utf-8") for c, i in (*special_tokens.items(), *self.user_defined_tokens.items())}
        self._vocab = _ext.tokenizer.BpeVocab(tokens, _BYTE_LEVEL_TABLE, *_merge_ids(merges, tokens), contents,
                                              whole=self._ignore_merges)

        # Literal tokens in llama.cpp's matching order: longest UTF-8 first (ties by id; llama.cpp leaves their
        # order unspecified). [(content, id)]
        def by_length(d):
            return sorted(d.items(), key=lambda kv: (-len(kv[0].encode("utf-8")), kv[1]))
        self._literals_special = by_length({**special_tokens, **self.user_defined_tokens})
        self._literals_always = by_length(self.user_defined_tokens)

        self.bos_id = None if bos_id is None else _check_id(bos_id, n_vocab, "bos_id")
        self.eos_id = None if eos_id is None else _check_id(eos_id, n_vocab, "eos_id")
        self.add_bos = bool(add_bos)
        self._cache = {}

    # ----- loaders ---------------------------------------------------------------------------------------------

    @classmethod
    def from_vocab_merges(cls, vocab_json_path, merges_txt_path):
        """HF slow-tokenizer files. Vocab entries shaped like <...> that no merge or byte can produce are special;
        <|endoftext|>, if special, is both BOS and EOS (GPT-2)."""
        tokens, merges, kwargs = _load_vocab_merges(vocab_json_path, merges_txt_path)
        _default_bos_eos(kwargs)
        return cls(tokens, merges, **kwargs)

    @classmethod
    def from_tokenizer_json(cls, path):
        """HF tokenizer.json with a BPE model; every entry of added_tokens becomes a special token."""
        tokens, merges, kwargs = _load_tokenizer_json(path)
        _default_bos_eos(kwargs)
        return cls(tokens, merges, **kwargs)

    @classmethod
    def from_dir(cls, path):
        """An HF model folder: tokenizer.json if present, else vocab.json + merges.txt. tokenizer_config.json and
        added_tokens.json, when present, supply extra special tokens, bos_token/eos_token and add_bos_token."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer folder not found: {path}")
        tj = os.path.join(path, "tokenizer.json")
        if os.path.exists(tj):
            tokens, merges, kwargs = _load_tokenizer_json(tj)
        else:
            vj, mt = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
            missing = [p for p in (vj, mt) if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(f"{path}: no tokenizer.json, and missing {', '.join(missing)}")
            tokens, merges, kwargs = _load_vocab_merges(vj, mt)
        special = kwargs["special_tokens"]
        cfg_path = os.path.join(path, "tokenizer_config.json")
        cfg = _read_json(cfg_path) if os.path.exists(cfg_path) else {}
        if not isinstance(cfg, dict):
            raise ValueError(f"{cfg_path}: expected a JSON object")
        # Extra special tokens: added_tokens.json {content: id}; tokenizer_config added_tokens_decoder {id: {...}}.
        at_path = os.path.join(path, "added_tokens.json")
        added = _read_json(at_path) if os.path.exists(at_path) else {}
        if not isinstance(added, dict):
            raise ValueError(f"{at_path}: expected a JSON object {{token: id}}")
        for k, v in (cfg.get("added_tokens_decoder") or {}).items():
            if isinstance(v, dict) and isinstance(v.get("content"), str) and str(k).isdigit():
                added[v["content"]] = int(k)
        for content, i in added.items():
            if not isinstance(content, str) or not isinstance(i, int) or i < 0:
                raise ValueError(f"{path}: added token {content!r} has invalid id {i!r}")
            tokens.extend([None] * (i + 1 - len(tokens)))
            if tokens[i] is None:
                tokens[i] = content
            special[content] = i
        kwargs["add_bos"] = bool(cfg.get("add_bos_token", False))
        for key in ("bos", "eos"):
            t = cfg.get(f"{key}_token")
            t = t.get("content") if isinstance(t, dict) else t
            if isinstance(t, str):
                i = special.get(t)
                if i is None:
                    i = next((j for j, s in enumerate(tokens) if s == t), None)
                if i is None:
                    raise ValueError(f"{cfg_path}: {key}_token {t!r} is not in the vocabulary")
                kwargs[f"{key}_id"] = i
        _default_bos_eos(kwargs)
        return cls(tokens, merges, **kwargs)

    # ----- properties ------------------------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    # ----- encode ----------------------------------------------------------------------------------------------

    def encode(self, text: str, special: bool = False) -> list:
        """Token ids of `text` (no BOS added). special=True maps special-token strings in the text to their ids
        (tiktoken allowed_special="all", llama.cpp parse_special); special=False tokenizes them as ordinary text
        (disallowed_special=()). User-defined tokens are matched either way."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        text = _fix_surrogates(text)
        out = []
        for frag in self._split_literals(text, self._literals_special if special else self._literals_always):
            if isinstance(frag, str):
                self._encode_ordinary(frag, out)
            else:
                out.append(frag)
        return out

    @staticmethod
    def _split_literals(text, literals) -> list:
        """text -> fragments: str (still to tokenize) or int (a literal token's id). Each literal in turn, longest
        first, is cut out of every remaining str fragment (leftmost, non-overlapping), as llama.cpp does it."""
        frags = [text]
        for content, i in literals:
            if content not in text:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or content not in f:
                    out.append(f)
                    continue
                parts = f.split(content)
                out.append(parts[0])
                for p in parts[1:]:
                    out.append(i)
                    out.append(p)
            frags = [f for f in out if f != ""]
        return frags

    def pretokenize(self, text: str) -> list:
        """The pieces BPE runs on (no literal-token handling): every regex of the pre-tokenizer splits the pieces
        of the one before; text between two matches is a piece of its own."""
        pieces = [text] if text else []
        for splitter in self._splitters:
            pieces = [p for piece in pieces for p in splitter.split(piece) if p]
        return pieces

    def _encode_ordinary(self, text, out):
        cache = self._cache
        for piece in self.pretokenize(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(piece) <= _CACHE_MAX_PIECE_LEN:
                    if len(cache) >= _CACHE_MAX_ENTRIES:
                        cache.clear()
                    cache[piece] = ids
            out.extend(ids)

    def _bpe(self, data: bytes) -> tuple:
        """Byte-level BPE of one pre-token: repeatedly merge the lowest-rank adjacent pair, leftmost on ties (in
        C++, BpeVocab.bpe)."""
        ids = self._vocab.bpe(data, self._skip_missing_bytes, self._ignore_merges)
        if ids is None:
            b = next(b for b in data if self._vocab.byte_id(b) < 0)
            raise ValueError(f"byte 0x{b:02x} has no token in the vocabulary (expected {_BYTE_TO_CHAR[b]!r})")
        return ids

    # ----- decode ----------------------------------------------------------------------------------------------

    def token_bytes(self, id) -> bytes:
        try:
            i = operator.index(id)
        except TypeError:
            raise ValueError(f"invalid token id {id!r}: not an integer") from None
        b = self._vocab.token_bytes(i) if 0 <= i < self._n_vocab else None
        if b is None:
            raise ValueError(f"invalid token id {id!r} (n_vocab={self._n_vocab})")
        return b

    def decode_bytes(self, ids) -> bytes:
        ids = ids if isinstance(ids, list) else list(ids)
        out = self._vocab.decode(ids)  # None if an id is not a token: token_bytes names it
        return b"".join([self.token_bytes(i) for i in ids]) if out is None else out

    def decode(self, ids) -> str:
        """UTF-8 text of ids; invalid byte sequences become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class IncrementalDecoder:
    """Streams text token by token: add() returns only complete UTF-8 characters and holds back a trailing partial
    one; flush() returns the rest. "".join(add(i) for i in ids) + flush() == tokenizer.decode(ids)."""

    def __init__(self, tokenizer: BPETokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, id) -> str:
        return self._decoder.decode(self._tokenizer.token_bytes(id))

    def flush(self) -> str:
        out = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return out


# ---------------------------------------------------------------------------------------------------------------
# File helpers
# ---------------------------------------------------------------------------------------------------------------

def _check_literal_tokens(tokens, n_vocab, what) -> dict:
    """{content: id} checked: non-empty str contents, ids in range."""
    out = {}
    for content, i in (tokens or {}).items():
        if not isinstance(content, str) or not content:
            raise ValueError(f"{what} {content!r}: content must be a non-empty str")
        out[content] = _check_id(i, n_vocab, f"{what} {content!r}")
    return out


def _check_id(v, n_vocab, what) -> int:
    """v as a plain int in [0, n_vocab), else ValueError naming `what`."""
    try:
        i = operator.index(v)
    except TypeError:
        raise ValueError(f"{what}: id {v!r} is not an integer") from None
    if not 0 <= i < n_vocab:
        raise ValueError(f"{what}: id {v!r} outside [0, {n_vocab})")
    return i


def _read_json(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e})") from None


def _read_merges_txt(path):
    """merges.txt: one "a b" per line; a leading '#version' line and blank lines are skipped."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e})") from None
    merges = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        if line.count(" ") != 1:
            raise ValueError(f"{path}:{lineno}: expected 'a b', got {line!r}")
        merges.append(line)
    return merges


def _load_vocab_merges(vocab_json_path, merges_txt_path):
    """vocab.json + merges.txt -> (tokens, merges, constructor kwargs)."""
    vocab = _read_json(vocab_json_path)
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise ValueError(f"{vocab_json_path}: expected a JSON object {{token: id}}")
    merges = _read_merges_txt(merges_txt_path)
    tokens = _tokens_from_vocab(vocab, vocab_json_path)
    reachable = set(_BYTE_TO_CHAR.values())
    reachable.update(m.replace(" ", "", 1) for m in merges)
    special = {t: i for t, i in vocab.items() if t not in reachable and _looks_special(t)}
    return tokens, merges, {"special_tokens": special}


def _load_tokenizer_json(path):
    """HF tokenizer.json (BPE model) -> (tokens, merges, constructor kwargs)."""
    data = _read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("vocab"), dict) or \
            not isinstance(model.get("merges"), list):
        raise ValueError(f"{path}: expected model.vocab (object) and model.merges (list)")
    if model.get("type", "BPE") != "BPE":
        raise ValueError(f"{path}: model.type is {model.get('type')!r}; only BPE is supported")
    vocab = dict(model["vocab"])
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise ValueError(f"{path}: model.vocab must map token strings to integer ids")
    special = {}
    for t in data.get("added_tokens") or []:
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or not isinstance(t.get("id"), int):
            raise ValueError(f"{path}: malformed added_tokens entry {t!r}")
        special[t["content"]] = t["id"]
        if vocab.get(t["content"], t["id"]) != t["id"]:
            raise ValueError(f"{path}: added token {t['content']!r} has id {t['id']}, vocab says {vocab[t['content']]}")
        vocab[t["content"]] = t["id"]
    tokens = _tokens_from_vocab(vocab, path)
    kwargs = {"special_tokens": special, "pre": _detect_pre(data.get("pre_tokenizer"), path),
              "ignore_merges": bool(model.get("ignore_merges", False))}
    return tokens, model["merges"], kwargs


def _tokens_from_vocab(vocab: dict, path) -> list:
    """{token: id} -> tokens list indexed by id (None for unused ids)."""
    if not vocab:
        raise ValueError(f"{path}: empty vocabulary")
    n = max(vocab.values()) + 1
    if min(vocab.values()) < 0:
        raise ValueError(f"{path}: negative token id")
    tokens = [None] * n
    for t, i in vocab.items():
        if tokens[i] is not None and tokens[i] != t:
            raise ValueError(f"{path}: id {i} assigned to both {tokens[i]!r} and {t!r}")
        tokens[i] = t
    return tokens


def _looks_special(t: str) -> bool:
    return len(t) > 2 and t[0] == "<" and t[-1] == ">"


def _default_bos_eos(kwargs: dict):
    """GPT-2 convention: <|endoftext|> is both BOS and EOS unless told otherwise."""
    eot = kwargs["special_tokens"].get("<|endoftext|>")
    if eot is not None:
        kwargs.setdefault("bos_id", eot)
        kwargs.setdefault("eos_id", eot)


# tokenizer.json Split regexes (as HF writes them) -> the llama.cpp pre-tokenizer that runs them.
_HF_SPLIT_REGEX_TO_PRE = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "qwen2",
}


def _detect_pre(pre_tokenizer, path) -> str:
    """Name in PRETOKENIZER_PATTERNS of a tokenizer.json pre_tokenizer: ByteLevel with its regex -> "gpt2";
    Digits(individual) + ByteLevel -> "smollm"; Split(Llama-3 or Qwen2 regex) + ByteLevel(no regex) -> "llama-bpe" or
    "qwen2" (llama.cpp's flavour of them, on its Unicode 15.1 classes)."""
    def byte_level(p, use_regex):
        if not (isinstance(p, dict) and p.get("type") == "ByteLevel" and p.get("use_regex", True) == use_regex):
            return False
        if p.get("add_prefix_space", False):
            raise ValueError(f"{path}: ByteLevel add_prefix_space=true is not supported")
        return True

    if byte_level(pre_tokenizer, True):
        return "gpt2"
    if isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "Sequence":
        seq = pre_tokenizer.get("pretokenizers") or []
        first = seq[0] if seq and isinstance(seq[0], dict) else {}
        if len(seq) == 2 and first.get("type") == "Digits" and first.get("individual_digits") and \
                byte_level(seq[1], True):
            return "smollm"
        pattern = (first.get("pattern") or {}).get("Regex") if first.get("type") == "Split" else None
        if len(seq) == 2 and pattern in _HF_SPLIT_REGEX_TO_PRE and first.get("behavior") == "Isolated" and \
                not first.get("invert") and byte_level(seq[1], False):
            return _HF_SPLIT_REGEX_TO_PRE[pattern]
        for p in seq:
            pattern = (p.get("pattern") or {}).get("Regex") if isinstance(p, dict) else None
            for name, pats in PRETOKENIZER_PATTERNS.items():
                if (pattern,) == pats:
                    return name
    kind = pre_tokenizer.get("type") if isinstance(pre_tokenizer, dict) else pre_tokenizer
    raise ValueError(f"{path}: unsupported pre_tokenizer {kind!r}; pass pre= one of "
                     f"{', '.join(sorted(PRETOKENIZER_PATTERNS))}")
