// The sampler's tail over a few candidates, in C++: top-p -> min-p -> temperature -> one draw, the end of the
// default chain after top-k.  Its spec is pyinfer.sampling (apply_top_p, apply_min_p, apply_temperature, select_dist);
// the tests hold the two to the same draws.  Generic code, float64, one compilation.
#pragma once
#include <cstdint>

namespace pyinfer {

// x (n) float64 logits of the candidates (ascending ids), n >= 1.  Runs top-p (top_p < 1), min-p (min_p > 0) and
// temperature (temperature != 1), in that order, on them, then draws with the uniform u in [0, 1) as select_dist
// does.  Returns the drawn candidate's position in x, or -1 (nothing decided) where the largest logit before the draw
// is not finite: the Python spec then handles that distribution.
int64_t sample_tail(const double* x, int64_t n, double top_p, double min_p, double temperature, double u);

// numpy's float64 sum of a contiguous array (pairwise, 8 accumulators per block of <= 128), bit for bit: the
// spec's softmax divides by np.sum.
double numpy_sum(const double* a, int64_t n);

}  // namespace pyinfer
