// Bindings for the sampler's C++ parts: pyinfer._ext.sampling.top_k (kernels/top_k.h), the pass over all the
// logits, and sampling.tail (kernels/sample_tail.h), the chain's end and the draw over the candidates.  Checked like
// every binding (C-contiguous 1-D arrays of the right dtype, parameters in range); the GIL is released.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../kernels/sample_tail.h"
#include "../kernels/top_k.h"
#include "common_bind.h"

namespace pyinfer {

template <typename T>
static py::object top_k_t(const py::array& x, int64_t k, const int64_t* bias_ids, const double* bias_vals,
                          int64_t n_bias, const std::vector<int64_t>& biased) {
    std::vector<int64_t> ids;
    std::vector<double> vals;
    TopK r;
    {
        py::gil_scoped_release nogil;
        r = top_k_biased(&ids, &vals, static_cast<const T*>(x.data()), x.shape(0), k, bias_ids, bias_vals, n_bias,
                         biased);
    }
    if (r == TopK::BAD_LOGITS) throw std::invalid_argument("logits contain NaN or +inf; the model produced invalid values");
    if (r == TopK::BIAS_OVERFLOW) return py::none();
    py::array_t<int64_t> i(ids.size());
    py::array_t<double> v(vals.size());
    std::copy(ids.begin(), ids.end(), i.mutable_data());
    std::copy(vals.begin(), vals.end(), v.mutable_data());
    return py::make_tuple(i, v);
}

// logits (n,) float32|float64, k, a logit bias (ids (b,) int64, values (b,) float64; None: none) -> (ids (k,) int64
// ascending, their biased logits (k,) float64): the k largest after the bias, ties keeping the lowest ids; None where
// biases summed to +inf on an id
static py::object top_k_py(const py::array& x, int64_t k, const py::object& bias_ids, const py::object& bias_vals) {
    check_arg(x.ndim() == 1 && (x.flags() & py::array::c_style), "logits must be a C-contiguous 1-D array");
    const int64_t n = x.shape(0);
    const int64_t* bi = nullptr;
    const double* bv = nullptr;
    int64_t nb = 0;
    std::vector<int64_t> distinct;  // the distinct bias ids, ascending
    if (!bias_ids.is_none() || !bias_vals.is_none()) {
        const py::array ids = bias_ids.cast<py::array>(), vals = bias_vals.cast<py::array>();
        checked<int64_t>(ids, "bias_ids", 1);
        checked<double>(vals, "bias_values", 1);
        check_arg(ids.shape(0) == vals.shape(0), "bias_ids and bias_values must have the same length");
        bi = static_cast<const int64_t*>(ids.data());
        bv = static_cast<const double*>(vals.data());
        nb = ids.shape(0);
        distinct.assign(bi, bi + nb);
        std::sort(distinct.begin(), distinct.end());
        check_arg(nb == 0 || (distinct.front() >= 0 && distinct.back() < n), "bias_ids must be in [0, n_vocab)");
        distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    }
    check_arg(k > 0 && k + (int64_t)distinct.size() < n, "k plus the distinct biased ids must be in (0, n_vocab)");
    if (x.dtype().is(py::dtype::of<float>())) return top_k_t<float>(x, k, bi, bv, nb, distinct);
    if (x.dtype().is(py::dtype::of<double>())) return top_k_t<double>(x, k, bi, bv, nb, distinct);
    throw std::invalid_argument("logits must be float32 or float64, got " + std::string(py::str(x.dtype())));
}

// candidates' logits (n,) float64 -> the position drawn after top-p, min-p and temperature with the uniform u, or -1
static int64_t tail_py(const py::array& x, double top_p, double min_p, double temperature, double u) {
    checked<double>(x, "logits", 1);
    check_arg(x.shape(0) > 0, "logits must not be empty");
    check_arg(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1]");
    check_arg(min_p >= 0.0 && min_p <= 1.0, "min_p must be in [0, 1]");
    check_arg(std::isfinite(temperature) && temperature > 0.0, "temperature must be a finite number > 0");
    check_arg(u >= 0.0 && u < 1.0, "u must be in [0, 1)");
    py::gil_scoped_release nogil;
    return sample_tail(static_cast<const double*>(x.data()), x.shape(0), top_p, min_p, temperature, u);
}

void register_sampling(py::module_& m) {
    py::module_ s = m.def_submodule("sampling", "the sampler's C++ parts: top-k over all the logits, the tail");
    s.def("top_k", &top_k_py, py::arg("logits"), py::arg("k"), py::arg("bias_ids") = py::none(),
          py::arg("bias_values") = py::none(),
          "(ids, float64 logits) of the k largest logits after the logit bias, ids ascending; ties at the k-th value "
          "keep the lowest ids; ValueError on NaN or +inf; None where biases on one id summed to +inf");
    s.def("tail", &tail_py, py::arg("logits"), py::arg("top_p"), py::arg("min_p"), py::arg("temperature"),
          py::arg("u"),
          "top-p -> min-p -> temperature on the candidates' float64 logits, then the draw with the uniform u: the "
          "drawn position, or -1 where the largest logit is not finite (sampling.py decides those)");
}

}  // namespace pyinfer
