"""SentencePiece-style tokenizer (GGUF `tokenizer.ggml.model` "llama": Gemma, Llama 1/2, Mistral v0.1, ...) as
llama.cpp's llm_tokenizer_spm runs it: literal tokens cut out first, spaces -> "▁", adjacent UTF-8 characters merged
best score first, byte fallback to <0xXX> tokens; and ids -> text as llama_detokenize does. Same interface as
tokenizer.BPETokenizer, so generation, chat, streaming and sessions use it unchanged. It reads the GGUF form of the
vocabulary only: no SentencePiece .model files, no unigram (UGM) models or normalizers.
"""
import heapq
import operator

import numpy as np

from .tokenizer import TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_USER_DEFINED, BPETokenizer, \
    _check_id, _fix_surrogates, gguf_special_tokens

TOKEN_TYPE_BYTE = 6         # GGUF token type of the <0xXX> byte-fallback tokens
SPACE = "\u2581"            # "▁", SentencePiece's escaped space


class SPMTokenizer:
    """llama.cpp's SPM tokenizer over a GGUF vocabulary.

    tokens[i] is the text of id i, scores[i] its score (merges take the highest-scoring token first), token_types[i]
    its GGUF token type (None: all NORMAL). Literal tokens are split out of the text first as llama.cpp does it
    (tokenizer.gguf_special_tokens: CONTROL/UNKNOWN only by encode(special=True), USER_DEFINED always; longest
    first). Every other stretch of text has spaces escaped to "▁" (after a leading space when add_space_prefix and
    the stretch starts the text or follows a literal token) and is merged character pair by character pair:
    always the pair whose joined text is the highest-scoring token, leftmost on ties. A character that ends up in
    no token becomes its UTF-8 bytes' <0xXX> tokens, or unk_id where the vocabulary has no byte token (llama.cpp
    aborts there; SentencePiece without byte fallback gives unk).

    Decoding follows llama_token_to_piece with special tokens rendered: NORMAL tokens with "▁" -> " ", BYTE tokens
    their byte, CONTROL/UNKNOWN/USER_DEFINED tokens their text, UNUSED/UNDEFINED tokens nothing. decode() also drops
    one leading space of the first piece when add_space_prefix (llama_detokenize); token_bytes() never does.

    eog_ids: the ids that end a generation (tokenizer.llama_cpp_eog_ids); eot_id/eom_id the end-of-turn/-message
    tokens. add_bos is metadata for the caller that builds the prompt, as for BPETokenizer.
    """

    def __init__(self, tokens, scores=None, token_types=None, *, bos_id=None, eos_id=None, unk_id=None, eot_id=None,
                 eom_id=None, pad_id=None, eog_ids=(), add_bos=True, add_space_prefix=True):
        tokens = list(tokens)
        n_vocab = len(tokens)
        if n_vocab == 0:
            raise ValueError("empty vocabulary")
        if not set(map(type, tokens)) <= {str}:
            i = next(i for i, t in enumerate(tokens) if not isinstance(t, str))
            raise ValueError(f"token {i}: expected str, got {type(tokens[i]).__name__}")
        if "" in tokens:
            for i in [i for i, t in enumerate(tokens) if not t]:
                tokens[i] = f"[EMPTY_{i}]"      # llama.cpp's name for an empty token
        self._n_vocab = n_vocab
        self._tokens = tokens
        if scores is None:
            scores = np.zeros(n_vocab, np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (n_vocab,):
            raise ValueError(f"scores has shape {scores.shape}, expected ({n_vocab},): one per token")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"score of token {int(np.flatnonzero(~np.isfinite(scores))[0])} is not finite")
        # negated float32 scores as Python floats: the merge heap pops the smallest (-score, position) first.
        self._neg_scores = (-scores.astype(np.float64)).tolist()
        if token_types is None:
            token_types = [TOKEN_TYPE_NORMAL] * n_vocab
        types = np.asarray(token_types, dtype=np.int64)
        if types.shape != (n_vocab,):
            raise ValueError(f"token_type has {len(types)} entries for {n_vocab} tokens")
        self._types = token_types = types.tolist()

        # text -> id over every token, whatever its type (llama.cpp's token_to_id: a repeated text, last id wins).
        self._token_to_id = dict(zip(tokens, range(n_vocab)))
        self._max_token_len = max(map(len, tokens))

        self.special_tokens, self.user_defined_tokens = gguf_special_tokens(tokens, token_types)
        self._literal_ids = frozenset(self.special_tokens.values()) | frozenset(self.user_defined_tokens.values())
        for i in np.flatnonzero(types == TOKEN_TYPE_BYTE).tolist():
            if _byte_of(tokens[i]) is None:
                raise ValueError(f"token {i} {tokens[i]!r} has type BYTE but is not of the form <0xXX>")

        self.unk_id = None if unk_id is None else _check_id(unk_id, n_vocab, "unk_id")
        # byte value -> id of its byte token ("<0xXX>", else the one-character token of that byte, as llama.cpp's
        # byte_to_token falls back), None if neither exists.
        get = self._token_to_id.get
        self._byte_ids = [get(f"<0x{b:02X}>", get(chr(b)) if b < 0x80 else None) for b in range(256)]

        # Literal tokens in llama.cpp's matching order (longest UTF-8 first, ties by id), grouped by their first two
        # characters so that encode() only tries the ones whose start occurs in the text.
        order = sorted({**self.special_tokens, **self.user_defined_tokens}.items(),
                       key=lambda kv: (-len(kv[0].encode("utf-8")), kv[1]))
        user = set(self.user_defined_tokens.values())
        self._literals_special = _group_literals(order)
        self._literals_always = _group_literals([(t, i) for t, i in order if i in user])

        self.bos_id = None if bos_id is None else _check_id(bos_id, n_vocab, "bos_id")
        self.eos_id = None if eos_id is None else _check_id(eos_id, n_vocab, "eos_id")
        self.eot_id = None if eot_id is None else _check_id(eot_id, n_vocab, "eot_id")
        self.eom_id = None if eom_id is None else _check_id(eom_id, n_vocab, "eom_id")
        self.pad_id = None if pad_id is None else _check_id(pad_id, n_vocab, "pad_id")
        self.eog_ids = frozenset(_check_id(i, n_vocab, "eog id") for i in eog_ids)
        self.add_bos = bool(add_bos)
        self.add_space_prefix = bool(add_space_prefix)
        self._id_bytes = [None] * n_vocab        # token_bytes, filled on first use

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    # ----- encode ----------------------------------------------------------------------------------------------

    def encode(self, text: str, special: bool = False) -> list:
        """Token ids of `text` (no BOS added). special=True maps CONTROL-token strings in the text (<start_of_turn>,
        <bos>, ...) to their ids (llama.cpp parse_special); special=False tokenizes them as ordinary text.
        USER_DEFINED tokens are matched either way."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        text = _fix_surrogates(text)
        out = []
        prev_literal = True                      # the text start counts as "after a literal" for the space prefix
        for frag in _split_literals(text, self._literals_special if special else self._literals_always):
            if isinstance(frag, int):
                out.append(frag)
                prev_literal = True
                continue
            if self.add_space_prefix and prev_literal:
                frag = " " + frag
            self._merge(frag.replace(" ", SPACE), out)
            prev_literal = False
        return out

    def _merge(self, text: str, out: list):
        """llm_tokenizer_spm_session::tokenize over one escaped stretch: start from one symbol per character, merge
        the adjacent pair whose joined text is the best token (highest score, then leftmost) until none is left.
        A symbol is named by the position of its first character; symbols stay contiguous, so the symbol after the
        one at i starts at i + size[i]."""
        n = len(text)
        if n == 0:
            return
        get = self._token_to_id.get
        neg = self._neg_scores
        max_len = self._max_token_len
        size = [1] * n                           # size[i]: characters of the symbol starting at i; 0 once merged away
        prev = list(range(-1, n - 1))            # prev[i]: start of the symbol before the one at i (-1: none)
        heap = []                                # candidate merges (-score, left start, joined length)
        for i in range(n - 1):
            t = get(text[i:i + 2])
            if t is not None:
                heap.append((neg[t], i, 2))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            _, left, total = pop(heap)
            ln = size[left]
            right = left + ln
            # stale: the left symbol was merged away or grew, or the right one grew, since this entry was pushed
            if ln == 0 or right >= n or ln + size[right] != total:
                continue
            size[left] = total
            size[right] = 0
            end = left + total                   # start of the symbol after the merged one
            if end < n:
                prev[end] = left
                j = end + size[end] - left
                if j <= max_len:
                    t = get(text[left:left + j])
                    if t is not None:
                        push(heap, (neg[t], left, j))
            p = prev[left]
            if p >= 0 and end - p <= max_len:
                t = get(text[p:end])
                if t is not None:
                    push(heap, (neg[t], p, end - p))
        i = 0
        while i < n:
            s = text[i:i + size[i]]
            t = get(s)
            if t is not None:
                out.append(t)
            else:                                # only a single character can be no token: its bytes, or unk
                ids = [self._byte_ids[b] for b in s.encode("utf-8")]
                if None in ids:
                    if self.unk_id is None:
                        raise ValueError(f"character {s!r} has neither a token nor byte tokens, and the vocabulary "
                                         "names no unknown token")
                    ids = [self.unk_id]
                out.extend(ids)
            i += size[i]

    # ----- decode ----------------------------------------------------------------------------------------------

    def token_bytes(self, id) -> bytes:
        """The bytes token `id` stands for (llama_token_to_piece with special tokens rendered)."""
        try:
            i = operator.index(id)
        except TypeError:
            raise ValueError(f"invalid token id {id!r}: not an integer") from None
        if not 0 <= i < self._n_vocab:
            raise ValueError(f"invalid token id {id!r} (n_vocab={self._n_vocab})")
        b = self._id_bytes[i]
        if b is None:
            t, ty = self._tokens[i], self._types[i]
            if i in self._literal_ids or ty in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_USER_DEFINED):
                b = t.encode("utf-8")
            elif ty == TOKEN_TYPE_NORMAL:
                b = t.replace(SPACE, " ").encode("utf-8")
            elif ty == TOKEN_TYPE_BYTE:
                b = bytes([_byte_of(t)])
            else:                                # UNUSED, UNDEFINED and unknown types render as nothing
                b = b""
            self._id_bytes[i] = b
        return b

    def decode_bytes(self, ids) -> bytes:
        parts = [self.token_bytes(i) for i in ids]
        if self.add_space_prefix and parts and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]              # the space encode() put before the text
        return b"".join(parts)

    def decode(self, ids) -> str:
        """UTF-8 text of ids; invalid byte sequences become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self):
        return (f"SPMTokenizer(n_vocab={self._n_vocab}, bos_id={self.bos_id}, eos_id={self.eos_id}, "
                f"eog_ids={sorted(self.eog_ids)}, add_bos={self.add_bos}, add_space_prefix={self.add_space_prefix})")


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def _byte_of(text: str):
    """0xXX of a byte token's text "<0xXX>", else None."""
    if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
        try:
            return int(text[3:5], 16)
        except ValueError:
            return None
    return None


def _group_literals(ordered) -> list:
    """[(content, id)] in matching order -> [(key, [(rank, content, id)])]: literals grouped by their first two
    characters (a one-character literal by itself)."""
    groups = {}
    for rank, (content, i) in enumerate(ordered):
        groups.setdefault(content[:2], []).append((rank, content, i))
    return list(groups.items())


def _split_literals(text, groups) -> list:
    """text -> fragments: str (still to tokenize) or int (a literal token's id). Each literal in matching order is
    cut out of every remaining str fragment (leftmost, non-overlapping), as llama.cpp's tokenizer_st_partition does;
    only literals whose first two characters occur in the text can match, so only those are tried."""
    cands = []
    for key, lits in groups:
        if key in text:
            cands.extend(lits)
    if not cands:
        return [text] if text else []
    cands.sort()
    return BPETokenizer._split_literals(text, [(content, i) for _, content, i in cands])
