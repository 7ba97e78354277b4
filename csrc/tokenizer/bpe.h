// Byte-level BPE's vocabulary and merge loop, below pyinfer/tokenizer.py (which pre-tokenizes, cuts out literal tokens
// and caches pieces): every token's bytes, the merge ranks, and the lowest-rank-first merge of one pre-token's bytes.
// Flat arrays: SmolLM2's 49k tokens and 49k merges take ~1.5 MB here, where Python dicts of them took ~15 MB.
// Knows no regexes, no special tokens' matching and no Python.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pyinfer {

class BpeVocab {
  public:
    BpeVocab() { std::fill(byte_id_, byte_id_ + 256, -1); }
    // Tokens are added in id order: their bytes, `pure` when every char of the token's text was in the byte-level
    // alphabet (so the bytes stand for the text one to one), or absent (an unused id).
    void add_token(std::string_view bytes, bool pure);
    void add_absent();
    // The merge of the next rank (0, 1, ... in call order): ids a, b -> ab.  A repeated pair keeps its lowest rank.
    void add_merge(int32_t a, int32_t b, int32_t ab);
    // What token `id` decodes to instead of its text (special and user-defined tokens: their content).
    void set_content(int32_t id, std::string_view bytes);
    // After the last add: sorts the merges; with whole_tokens, a pre-token's bytes can be looked up as one token
    // (whole_id, for ignore_merges).
    void finish(bool whole_tokens);

    struct Merge {
        uint64_t key;       // a << 32 | b
        int32_t rank, id;   // id: the merged token
    };
    int64_t n_vocab() const { return (int64_t)state_.size(); }
    size_t n_merges() const { return merges_.size(); }
    bool has(int64_t id) const { return id >= 0 && id < n_vocab() && state_[id] != ABSENT; }
    std::string_view token_bytes(int32_t id) const;  // the content if set, else the text's bytes; has(id) first
    int32_t byte_id(uint8_t b) const { return byte_id_[b]; }  // the first pure one-byte token of b, -1 if none
    bool all_bytes() const;                                   // every byte has a token
    int32_t whole_id(std::string_view bytes) const;           // the first pure token of these bytes, -1 if none
    const Merge* merge(int32_t a, int32_t b) const;           // nullptr if a, b do not merge

    // The BPE of one pre-token's bytes, appended to out: each byte's token, then the lowest-rank adjacent pair merged
    // (leftmost on ties) until none merges.  A byte without a token is dropped with skip_missing (the runs between
    // such bytes merge apart, as llama.cpp does); without it encode returns false with out untouched (the caller
    // names the byte).  ignore_merges: bytes that are themselves a token (whole_id) give that token without merging.
    bool encode(const uint8_t* data, size_t n, bool skip_missing, bool ignore_merges, std::vector<int32_t>& out) const;

  private:
    enum : uint8_t { ABSENT = 0, TEXT = 1, PURE = 2, CONTENT = 4 };  // TEXT or TEXT | PURE, | CONTENT if set
    void merge_run(const int32_t* ids, size_t n, std::vector<int32_t>& out) const;
    std::string_view text(int32_t id) const {  // the bytes of the token's text (not its content)
        return std::string_view(blob_).substr(off_[id], off_[id + 1] - off_[id]);
    }

    std::string blob_;                  // every token's bytes, in id order
    std::vector<uint32_t> off_{0};      // [n_vocab + 1]: token i is blob_[off_[i], off_[i + 1])
    std::vector<uint8_t> state_;        // [n_vocab]: ABSENT or bits of TEXT, PURE, CONTENT
    std::unordered_map<int32_t, std::string> content_;
    std::vector<Merge> merges_;         // sorted by key, one per pair
    int32_t next_rank_ = 0;
    int32_t byte_id_[256];              // byte -> the first pure one-byte token, -1 if none
    std::vector<int32_t> whole_;        // pure ids sorted by bytes, the first id of each bytes (finish(true) only)
};

}  // namespace pyinfer
