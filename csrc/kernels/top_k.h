// The sampler's one pass over all n_vocab logits, in C++: the positions of the k largest (the default chain's top-k
// runs first, on the raw logits).  Generic code, one compilation: the result is the same on every CPU.
#pragma once
#include <cstdint>
#include <vector>

namespace pyinfer {

// out (k) = positions of the k largest values of x (n), ascending; among values equal to the k-th largest the lowest
// positions are kept.  0 < k < n.  Returns false, writing nothing, if x holds NaN or +inf (-inf is a value).
template <typename T>
bool top_k_positions(int64_t* out, const T* x, int64_t n, int64_t k);

// The default chain's head: the k largest of x (n) after a logit bias (bias_vals[j] added to x[bias_ids[j]] in
// float64, each entry in turn; -inf bans): k ids ascending and their float64 values; ties keep the lowest ids.
// biased: the distinct bias ids, ascending.  0 < k, k + biased.size() < n, bias ids in [0, n).  Writes nothing
// unless it returns OK: BAD_LOGITS if x holds NaN or +inf, BIAS_OVERFLOW if biases summed to +inf on some id (the
// caller then runs the general chain).
enum class TopK { OK, BAD_LOGITS, BIAS_OVERFLOW };
template <typename T>
TopK top_k_biased(std::vector<int64_t>* ids, std::vector<double>* vals, const T* x, int64_t n, int64_t k,
                  const int64_t* bias_ids, const double* bias_vals, int64_t n_bias,
                  const std::vector<int64_t>& biased);

}  // namespace pyinfer
