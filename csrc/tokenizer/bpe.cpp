// Byte-level BPE's tables and merge loop (bpe.h).  The merge is a heap of candidate pairs over a linked list of
// symbols, O(n log n) in the pre-token's length: a run of 10k spaces merges as fast as a word.
#include "bpe.h"

#include <algorithm>
#include <stdexcept>

namespace pyinfer {

void BpeVocab::add_token(std::string_view bytes, bool pure) {
    if (blob_.size() + bytes.size() > UINT32_MAX) throw std::length_error("vocabulary over 4 GB of token bytes");
    const int32_t id = (int32_t)state_.size();
    blob_.append(bytes);
    off_.push_back((uint32_t)blob_.size());
    state_.push_back(pure ? TEXT | PURE : TEXT);
    if (pure && bytes.size() == 1 && byte_id_[(uint8_t)bytes[0]] < 0) byte_id_[(uint8_t)bytes[0]] = id;
}

void BpeVocab::add_absent() {
    off_.push_back((uint32_t)blob_.size());
    state_.push_back(ABSENT);
}

void BpeVocab::add_merge(int32_t a, int32_t b, int32_t ab) {
    merges_.push_back({(uint64_t)(uint32_t)a << 32 | (uint32_t)b, next_rank_++, ab});
}

void BpeVocab::set_content(int32_t id, std::string_view bytes) {
    content_[id] = std::string(bytes);
    state_.at(id) |= CONTENT;
}

void BpeVocab::finish(bool whole_tokens) {
    // stable: among equal keys the lowest rank (added first) comes first and stays
    std::stable_sort(merges_.begin(), merges_.end(), [](const Merge& x, const Merge& y) { return x.key < y.key; });
    merges_.erase(std::unique(merges_.begin(), merges_.end(),
                              [](const Merge& x, const Merge& y) { return x.key == y.key; }),
                  merges_.end());
    merges_.shrink_to_fit();
    whole_.clear();
    if (whole_tokens) {
        for (int32_t i = 0; i < (int32_t)state_.size(); i++)
            if (state_[i] & PURE) whole_.push_back(i);
        std::stable_sort(whole_.begin(), whole_.end(), [&](int32_t x, int32_t y) { return text(x) < text(y); });
        whole_.erase(std::unique(whole_.begin(), whole_.end(),
                                 [&](int32_t x, int32_t y) { return text(x) == text(y); }),
                     whole_.end());
    }
    whole_.shrink_to_fit();
}

std::string_view BpeVocab::token_bytes(int32_t id) const {
    if (state_[id] & CONTENT) return content_.find(id)->second;
    return text(id);
}

bool BpeVocab::all_bytes() const {
    return std::none_of(byte_id_, byte_id_ + 256, [](int32_t x) { return x < 0; });
}

int32_t BpeVocab::whole_id(std::string_view bytes) const {
    const auto it = std::lower_bound(whole_.begin(), whole_.end(), bytes,
                                     [&](int32_t i, std::string_view s) { return text(i) < s; });
    if (it == whole_.end() || text(*it) != bytes) return -1;
    return *it;
}

const BpeVocab::Merge* BpeVocab::merge(int32_t a, int32_t b) const {
    const uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    const auto it = std::lower_bound(merges_.begin(), merges_.end(), key,
                                     [](const Merge& m, uint64_t k) { return m.key < k; });
    return it != merges_.end() && it->key == key ? &*it : nullptr;
}

// ids [n] (byte tokens) merged, appended to out.
void BpeVocab::merge_run(const int32_t* ids, size_t n, std::vector<int32_t>& out) const {
    if (n < 2) {
        out.insert(out.end(), ids, ids + n);
        return;
    }
    struct Cand {
        int32_t rank, pos, a, b, id;  // the pair (a, b) at positions pos and the next, merging into id
    };
    const auto after = [](const Cand& x, const Cand& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
    std::vector<int32_t> sym(ids, ids + n), nxt(n), prv(n);  // sym[i]: -1 once merged into its left neighbour
    for (size_t i = 0; i < n; i++) nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1, prv[i] = (int32_t)i - 1;
    std::vector<Cand> heap;
    auto push = [&](int32_t i, int32_t j) {
        if (const Merge* m = merge(sym[i], sym[j])) {
            heap.push_back({m->rank, i, sym[i], sym[j], m->id});
            std::push_heap(heap.begin(), heap.end(), after);
        }
    };
    for (size_t i = 0; i + 1 < n; i++) push((int32_t)i, (int32_t)i + 1);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), after);
        const Cand c = heap.back();
        heap.pop_back();
        const int32_t i = c.pos, j = nxt[i];
        if (sym[i] != c.a || j < 0 || sym[j] != c.b) continue;  // stale: a side was merged since it was pushed
        sym[i] = c.id;
        sym[j] = -1;
        const int32_t k = nxt[j];
        nxt[i] = k;
        if (k >= 0) prv[k] = i, push(i, k);
        if (prv[i] >= 0) push(prv[i], i);
    }
    for (int32_t s : sym)
        if (s >= 0) out.push_back(s);
}

bool BpeVocab::encode(const uint8_t* data, size_t n, bool skip_missing, bool ignore_merges,
                      std::vector<int32_t>& out) const {
    std::vector<int32_t> parts(n);
    for (size_t i = 0; i < n; i++) parts[i] = byte_id_[data[i]];
    const auto gap = std::find(parts.begin(), parts.end(), -1);
    if (gap != parts.end()) {
        if (!skip_missing) return false;
        for (size_t start = 0, k = 0; k <= n; k++)  // the runs between bytes without a token, each merged alone
            if (k == n || parts[k] < 0) {
                merge_run(parts.data() + start, k - start, out);
                start = k + 1;
            }
        return true;
    }
    if (n >= 2 && ignore_merges) {
        const int32_t whole = whole_id(std::string_view((const char*)data, n));
        if (whole >= 0) {
            out.push_back(whole);
            return true;
        }
    }
    merge_run(parts.data(), n, out);
    return true;
}

}  // namespace pyinfer
