// top_k_positions (top_k.h): a heap of the k best (value, position) pairs, best = larger value, then lower
// position; blocks of 64 values whose maximum cannot enter the heap are skipped after one SIMD pass, which
// also catches NaN and +inf.  The Python spec is pyinfer.sampling.top_k_positions (the tests compare the two);
// top_k_biased's is apply_logit_bias then apply_top_k.
#include "top_k.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pyinfer {

// *mx = the largest of x (n); false if any is NaN or +inf.  float in SSE2 (every x86-64) where there is one: the
// scalar loop does not vectorize (a > b ? a : b keeps NaN semantics the compiler must honor).
template <typename T>
static bool block_max(T* mx, const T* x, int64_t n) {
    const T inf = std::numeric_limits<T>::infinity();
    int64_t i = 0;
    T m = -inf;
#if defined(__SSE2__)
    if constexpr (std::is_same<T, float>::value) {
        const __m128 infv = _mm_set1_ps(inf);
        __m128 mv = _mm_set1_ps(m), bad = _mm_setzero_ps();
        for (; i + 4 <= n; i += 4) {
            const __m128 v = _mm_loadu_ps(x + i);
            mv = _mm_max_ps(mv, v);
            bad = _mm_or_ps(bad, _mm_cmpnlt_ps(v, infv));  // not (v < inf): NaN or +inf
        }
        if (_mm_movemask_ps(bad)) return false;
        alignas(16) float t[4];
        _mm_store_ps(t, mv);
        m = std::max(std::max(t[0], t[1]), std::max(t[2], t[3]));
    }
#endif
    for (; i < n; i++) {
        if (!(x[i] < inf)) return false;
        m = std::max(m, x[i]);
    }
    *mx = m;
    return true;
}

template <typename T>
bool top_k_positions(int64_t* out, const T* x, int64_t n, int64_t k) {
    using Item = std::pair<T, int64_t>;  // (value, position)
    // a max-heap under "better" keeps the worst kept item on top (smallest value; among equal ones the last)
    auto better = [](const Item& a, const Item& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    const T inf = std::numeric_limits<T>::infinity();
    std::vector<Item> heap;
    heap.reserve(k);
    for (int64_t i = 0; i < k; i++) {
        if (!(x[i] < inf)) return false;
        heap.emplace_back(x[i], i);
    }
    std::make_heap(heap.begin(), heap.end(), better);
    constexpr int64_t B = 64;
    for (int64_t b0 = k; b0 < n; b0 += B) {
        const int64_t b1 = std::min(n, b0 + B);
        T mx;
        if (!block_max(&mx, x + b0, b1 - b0)) return false;
        if (mx <= heap.front().first) continue;  // nothing here beats the worst kept (equal values lose: later)
        for (int64_t i = b0; i < b1; i++) {
            if (x[i] <= heap.front().first) continue;
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = Item(x[i], i);
            std::push_heap(heap.begin(), heap.end(), better);
        }
    }
    for (int64_t i = 0; i < k; i++) out[i] = heap[i].second;
    std::sort(out, out + k);
    return true;
}

// The k + b largest raw values hold every unbiased member of the biased top k (at most b of them can be outranked by
// biased ids alone); those and the biased ids get the bias in float64, and the top k of them is the answer.
template <typename T>
TopK top_k_biased(std::vector<int64_t>* ids, std::vector<double>* vals, const T* x, int64_t n, int64_t k,
                  const int64_t* bias_ids, const double* bias_vals, int64_t n_bias,
                  const std::vector<int64_t>& biased) {
    std::vector<int64_t> keep(k + biased.size()), cand;
    if (!top_k_positions(keep.data(), x, n, (int64_t)keep.size())) return TopK::BAD_LOGITS;
    std::set_union(keep.begin(), keep.end(), biased.begin(), biased.end(), std::back_inserter(cand));
    std::vector<double> v(cand.size());  // (n_cand) float64 logits of the candidates, ascending ids
    for (size_t i = 0; i < cand.size(); i++) v[i] = (double)x[cand[i]];
    for (int64_t j = 0; j < n_bias; j++)  // in the listed order, as np.add.at: an id listed twice gets both
        v[std::lower_bound(cand.begin(), cand.end(), bias_ids[j]) - cand.begin()] += bias_vals[j];
    if (biased.empty()) {  // cand is the top k
        *ids = std::move(cand);
        *vals = std::move(v);
        return TopK::OK;
    }
    std::vector<int64_t> top(k);  // positions among the candidates
    if (!top_k_positions(top.data(), v.data(), (int64_t)v.size(), k))
        return TopK::BIAS_OVERFLOW;  // two huge biases on one id summed to +inf (x holds no NaN / +inf by now)
    ids->resize(k);
    vals->resize(k);
    for (int64_t i = 0; i < k; i++) (*ids)[i] = cand[top[i]], (*vals)[i] = v[top[i]];
    return TopK::OK;
}

template bool top_k_positions<float>(int64_t*, const float*, int64_t, int64_t);
template bool top_k_positions<double>(int64_t*, const double*, int64_t, int64_t);
template TopK top_k_biased<float>(std::vector<int64_t>*, std::vector<double>*, const float*, int64_t, int64_t,
                                  const int64_t*, const double*, int64_t, const std::vector<int64_t>&);
template TopK top_k_biased<double>(std::vector<int64_t>*, std::vector<double>*, const double*, int64_t, int64_t,
                                   const int64_t*, const double*, int64_t, const std::vector<int64_t>&);

}  // namespace pyinfer
