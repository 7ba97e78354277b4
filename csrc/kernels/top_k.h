// The sampler's one pass over all n_vocab logits, in C++: the positions of the k largest (the default chain's top-k
// runs first, on the raw logits).  Generic code, one compilation: the result is the same on every CPU.
#pragma once
#include <cstdint>

namespace pyinfer {

// out (k) = positions of the k largest values of x (n), ascending; among values equal to the k-th largest the lowest
// positions are kept.  0 < k < n.  Returns false, writing nothing, if x holds NaN or +inf (-inf is a value).
template <typename T>
bool top_k_positions(int64_t* out, const T* x, int64_t n, int64_t k);

}  // namespace pyinfer
