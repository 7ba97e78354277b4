"""Byte-level BPE tokenizer (GPT-2 family): text -> token ids, ids -> bytes/text, and an incremental decoder for
streaming. Pure Python (`regex` for pre-tokenization); reads GGUF-style token/merge lists, HF vocab.json+merges.txt
or tokenizer.json. It does not implement SentencePiece/unigram models, normalizers, chat templates, or BOS insertion
(`add_bos` is metadata for the caller that builds the prompt).
"""
import codecs
import heapq
import json
import operator
import os
import re

import regex

# ---------------------------------------------------------------------------------------------------------------
# Pre-tokenizers: name -> split regex. Names follow llama.cpp's `tokenizer.ggml.pre` values; add new ones here.
# ---------------------------------------------------------------------------------------------------------------

PRETOKENIZER_PATTERNS = {
    # GPT-2's encoder.py pattern (tiktoken's "gpt2" pat_str is the same set of alternatives).
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}

_CACHE_MAX_ENTRIES = 100_000  # pre-token -> ids cache; cleared when full
_CACHE_MAX_PIECE_LEN = 256    # longer pre-tokens (e.g. whitespace runs) are not cached
_HEAP_MIN_LEN = 128           # pre-tokens with more bytes than this use the O(n log n) heap merge


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
    special_tokens {content: id} are matched literally by encode(special=True) and decode to their content.
    ignore_merges (llama-3 style): a pre-token that is itself a vocab token maps to that token without merging.

    Lone surrogates in input text follow tiktoken: surrogate pairs are joined and lone surrogates become U+FFFD
    before pre-tokenization (a Python str can hold them; UTF-8 cannot).
    """

    def __init__(self, tokens, merges, special_tokens=None, pre="gpt2", bos_id=None, eos_id=None, add_bos=False,
                 *, ignore_merges=False):
        if pre not in PRETOKENIZER_PATTERNS:
            raise ValueError(f"unknown pre-tokenizer {pre!r}; known: {sorted(PRETOKENIZER_PATTERNS)}")
        tokens = list(tokens)
        n_vocab = len(tokens)
        if n_vocab == 0:
            raise ValueError("empty vocabulary")
        self.pre = pre
        self._pat = regex.compile(PRETOKENIZER_PATTERNS[pre])
        self._n_vocab = n_vocab
        self._ignore_merges = bool(ignore_merges)

        self.special_tokens = {}
        for content, i in (special_tokens or {}).items():
            if not isinstance(content, str) or not content:
                raise ValueError(f"special token {content!r}: content must be a non-empty str")
            self.special_tokens[content] = _check_id(i, n_vocab, f"special token {content!r}")
        special_tokens = self.special_tokens

        # str -> id for ordinary tokens (first occurrence wins if a vocabulary repeats a string).
        self._token_to_id = {}
        for i, t in enumerate(tokens):
            if t is None:
                continue
            if not isinstance(t, str):
                raise ValueError(f"token {i}: expected str, got {type(t).__name__}")
            self._token_to_id.setdefault(t, i)
        tok_id = self._token_to_id

        # byte value -> id of its single-byte token (None if the vocabulary lacks it).
        self._byte_ids = [tok_id.get(_BYTE_TO_CHAR[b]) for b in range(256)]
        self._all_bytes = None not in self._byte_ids

        # Merge table: key a * n_vocab + b -> rank * n_vocab + merged id. Comparing packed values compares ranks
        # (equal rank means the same pair, hence the same merged id).
        self._merges = {}
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
            ia, ib, ic = tok_id.get(a), tok_id.get(b), tok_id.get(a + b)
            if ia is None or ib is None or ic is None:
                missing = [s for s, i in ((a, ia), (b, ib), (a + b, ic)) if i is None]
                raise ValueError(f"merge {rank} {m!r}: token(s) {missing} not in the vocabulary")
            self._merges.setdefault(ia * n_vocab + ib, rank * n_vocab + ic)

        # id -> bytes. Special tokens decode to their content; ordinary tokens through the byte table, with chars
        # outside it falling back to their own UTF-8 (as HF's ByteLevel decoder does).
        id_bytes = [None] * n_vocab
        for i, t in enumerate(tokens):
            if t is not None:
                try:
                    id_bytes[i] = bytes([_CHAR_TO_BYTE[c] for c in t])
                except KeyError:
                    id_bytes[i] = b"".join(bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode("utf-8")
                                           for c in t)
        for content, i in special_tokens.items():
            id_bytes[i] = content.encode("utf-8")
        self._id_bytes = id_bytes

        # Longest first so that a special token that is a prefix of another never wins at the same position.
        self._special_re = None
        if special_tokens:
            alts = sorted(special_tokens, key=len, reverse=True)
            self._special_re = re.compile("|".join(re.escape(s) for s in alts))

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
        (tiktoken allowed_special="all"); special=False tokenizes them as ordinary text (disallowed_special=())."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        text = _fix_surrogates(text)
        out = []
        if not special or self._special_re is None:
            self._encode_ordinary(text, out)
            return out
        start = 0
        for m in self._special_re.finditer(text):
            self._encode_ordinary(text[start:m.start()], out)
            out.append(self.special_tokens[m.group()])
            start = m.end()
        self._encode_ordinary(text[start:], out)
        return out

    def _encode_ordinary(self, text, out):
        cache = self._cache
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._bpe(piece.encode("utf-8"))
                if len(piece) <= _CACHE_MAX_PIECE_LEN:
                    if len(cache) >= _CACHE_MAX_ENTRIES:
                        cache.clear()
                    cache[piece] = ids
            out.extend(ids)

    def _bpe(self, data: bytes) -> tuple:
        """Byte-level BPE of one pre-token: repeatedly merge the lowest-rank adjacent pair, leftmost on ties."""
        byte_ids = self._byte_ids
        parts = [byte_ids[b] for b in data]
        if not self._all_bytes and None in parts:
            b = data[parts.index(None)]
            raise ValueError(f"byte 0x{b:02x} has no token in the vocabulary (expected {_BYTE_TO_CHAR[b]!r})")
        if len(parts) < 2:
            return tuple(parts)
        if self._ignore_merges:
            whole = self._token_to_id.get("".join(_BYTE_TO_CHAR[b] for b in data))
            if whole is not None:
                return (whole,)
        if len(parts) > _HEAP_MIN_LEN:
            return self._bpe_heap(parts)
        n = self._n_vocab
        get = self._merges.get
        inf = float("inf")
        # ranks[i]: packed rank of the pair (parts[i], parts[i+1]), inf if no merge.   [len(parts) - 1]
        ranks = [get(a * n + b, inf) for a, b in zip(parts, parts[1:])]
        while True:
            best = min(ranks)
            if best == inf:
                return tuple(parts)
            i = ranks.index(best)
            new = best % n
            parts[i] = new
            del parts[i + 1]
            del ranks[i]
            if i > 0:
                ranks[i - 1] = get(parts[i - 1] * n + new, inf)
            if i < len(ranks):
                ranks[i] = get(new * n + parts[i + 1], inf)
            if not ranks:
                return tuple(parts)

    def _bpe_heap(self, parts: list) -> tuple:
        """Same result as the list merge in _bpe, O(n log n): a heap of candidate pairs over a linked list."""
        n = self._n_vocab
        get = self._merges.get
        sym = parts                                  # sym[i]: id at position i, -1 once merged away
        nxt = list(range(1, len(sym) + 1))
        nxt[-1] = -1
        prv = list(range(-1, len(sym) - 1))
        heap = []                                    # (packed rank, left position, left id, right id)
        for i in range(len(sym) - 1):
            r = get(sym[i] * n + sym[i + 1])
            if r is not None:
                heap.append((r, i, sym[i], sym[i + 1]))
        heapq.heapify(heap)
        while heap:
            r, i, a, b = heapq.heappop(heap)
            j = nxt[i]
            if sym[i] != a or j < 0 or sym[j] != b:
                continue                              # stale: one side was merged since this entry was pushed
            new = r % n
            sym[i] = new
            sym[j] = -1
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                r2 = get(new * n + sym[k])
                if r2 is not None:
                    heapq.heappush(heap, (r2, i, new, sym[k]))
            p = prv[i]
            if p >= 0:
                r2 = get(sym[p] * n + new)
                if r2 is not None:
                    heapq.heappush(heap, (r2, p, sym[p], new))
        return tuple(s for s in sym if s >= 0)

    # ----- decode ----------------------------------------------------------------------------------------------

    def token_bytes(self, id) -> bytes:
        try:
            i = operator.index(id)
        except TypeError:
            raise ValueError(f"invalid token id {id!r}: not an integer") from None
        if not 0 <= i < self._n_vocab or self._id_bytes[i] is None:
            raise ValueError(f"invalid token id {id!r} (n_vocab={self._n_vocab})")
        return self._id_bytes[i]

    def decode_bytes(self, ids) -> bytes:
        return b"".join([self.token_bytes(i) for i in ids])

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


def _detect_pre(pre_tokenizer, path) -> str:
    """Name in PRETOKENIZER_PATTERNS of a tokenizer.json pre_tokenizer (ByteLevel with its regex -> "gpt2")."""
    if isinstance(pre_tokenizer, dict):
        if pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True):
            if pre_tokenizer.get("add_prefix_space", False):
                raise ValueError(f"{path}: ByteLevel add_prefix_space=true is not supported")
            return "gpt2"
        if pre_tokenizer.get("type") == "Sequence":
            for p in pre_tokenizer.get("pretokenizers") or []:
                pattern = (p.get("pattern") or {}).get("Regex") if isinstance(p, dict) else None
                for name, pat in PRETOKENIZER_PATTERNS.items():
                    if pattern == pat:
                        return name
    kind = pre_tokenizer.get("type") if isinstance(pre_tokenizer, dict) else pre_tokenizer
    raise ValueError(f"{path}: unsupported pre_tokenizer {kind!r}; pass pre= one of {sorted(PRETOKENIZER_PATTERNS)}")
