// Bindings for the sampler's C++ pass over the logits (kernels/top_k.h): pyinfer._ext.sampling.top_k.
// Checked like every binding: a C-contiguous 1-D float32 or float64 array and 0 < k < n; the GIL is released.
#include "../kernels/top_k.h"
#include "common_bind.h"

namespace pyinfer {

template <typename T>
static py::array_t<int64_t> top_k_t(const py::array& x, int64_t k) {
    const int64_t n = x.shape(0);
    py::array_t<int64_t> out(k);
    int64_t* o = out.mutable_data();
    const T* p = static_cast<const T*>(x.data());
    bool ok;
    {
        py::gil_scoped_release nogil;
        ok = top_k_positions(o, p, n, k);
    }
    if (!ok) throw std::invalid_argument("logits contain NaN or +inf; the model produced invalid values");
    return out;
}

// logits (n,) float32|float64 -> positions (k,) int64 of the k largest, ascending (ties: the lowest positions)
static py::array_t<int64_t> top_k_py(const py::array& x, int64_t k) {
    check_arg(x.ndim() == 1 && (x.flags() & py::array::c_style), "logits must be a C-contiguous 1-D array");
    check_arg(k > 0 && k < x.shape(0), "k must be in (0, n_vocab)");
    if (x.dtype().is(py::dtype::of<float>())) return top_k_t<float>(x, k);
    if (x.dtype().is(py::dtype::of<double>())) return top_k_t<double>(x, k);
    throw std::invalid_argument("logits must be float32 or float64, got " + std::string(py::str(x.dtype())));
}

void register_sampling(py::module_& m) {
    py::module_ s = m.def_submodule("sampling", "the sampler's passes over all the logits");
    s.def("top_k", &top_k_py, py::arg("logits"), py::arg("k"),
          "positions of the k largest logits, ascending; ties at the k-th value keep the lowest positions; "
          "ValueError on NaN or +inf");
}

}  // namespace pyinfer
