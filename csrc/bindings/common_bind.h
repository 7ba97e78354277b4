// Checks at the Python boundary: every array is validated (dtype, ndim, shape, C order) before a pointer is
// taken, and a failure raises ValueError naming the argument.  Shared by the register_* files.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "../common.h"
#include "../cpu_isa.h"
#include "../kernels/kernels.h"

namespace py = pybind11;

namespace pyinfer {

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); i++) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype, C-contiguity and ndim; returns the array.  The messages are built only on failure: str() of a dtype
// runs numpy's Python code (~5 us a call, on every token's eval).
template <typename T>
inline const py::array& checked(const py::array& a, const char* name, int ndim) {
    if (!(py::isinstance<py::array_t<T>>(a) && a.dtype().is(py::dtype::of<T>())))
        throw std::invalid_argument(std::string(name) + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                                    ", got " + std::string(py::str(a.dtype())));
    if (a.ndim() != ndim)
        throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(ndim) +
                                    " dimensions, got shape " + shape_str(a));
    if (!(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string(name) + ": must be C-contiguous (use numpy.ascontiguousarray)");
    return a;
}

inline const Kernels& kernels_named(const std::string& isa_name_) {
    Isa isa = isa_from_name(isa_name_);
    const Kernels* k = kernels_for(isa);
    check_arg(k != nullptr, "ISA '" + isa_name_ + "' is not compiled into this build");
    check_arg(isa_cpu_supports(isa), "ISA '" + isa_name_ + "' is not supported by this CPU");
    return *k;
}

// A 2-D weight view over a float32 / float16 array (n_rows, n_cols).
inline Tensor tensor_from_array(const py::array& a, const std::string& name) {
    check_arg(a.ndim() == 2, name + ": expected a 2-D weight, got shape " + shape_str(a));
    check_arg(a.flags() & py::array::c_style, name + ": must be C-contiguous");
    Tensor t;
    if (a.dtype().is(py::dtype::of<float>()))
        t.dtype = DType::F32;
    else if (a.dtype().kind() == 'f' && a.itemsize() == 2)
        t.dtype = DType::F16;
    else
        throw std::invalid_argument(name + ": unsupported dtype " + std::string(py::str(a.dtype())) +
                                    " (expected float32 or float16)");
    t.data = a.data();
    t.n_rows = a.shape(0);
    t.n_cols = a.shape(1);
    return t;
}

// A 2-D weight from either a float32/float16 array (n_rows, n_cols) or a tuple (raw, ggml_type, n_cols) where raw is
// a C-contiguous uint8 array (n_rows, row_bytes) holding the rows in that type's layout (GGUF's bytes as they are).
inline Tensor tensor_from_object(const py::handle& obj, const std::string& name) {
    if (!py::isinstance<py::tuple>(obj)) return tensor_from_array(obj.cast<py::array>(), name);
    py::tuple tup = obj.cast<py::tuple>();
    check_arg(tup.size() == 3, name + ": a quantized weight is a tuple (raw uint8 array, ggml type id, n_cols)");
    py::array raw = tup[0].cast<py::array>();
    Tensor t;
    t.dtype = dtype_from_id(tup[1].cast<int>());
    t.n_cols = tup[2].cast<int64_t>();
    check_arg(t.n_cols > 0, name + ": n_cols must be positive");
    check_arg(raw.dtype().is(py::dtype::of<uint8_t>()) && raw.ndim() == 2 && (raw.flags() & py::array::c_style),
              name + ": raw data must be a C-contiguous 2-D uint8 array (n_rows, row_bytes)");
    size_t rb;
    try {
        rb = dtype_row_bytes(t.dtype, t.n_cols);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(name + ": " + e.what());
    }
    check_arg((size_t)raw.shape(1) == rb, name + ": " + dtype_name(t.dtype) + " rows of " + std::to_string(t.n_cols) +
                                              " elements take " + std::to_string(rb) + " bytes, got " +
                                              std::to_string(raw.shape(1)));
    t.n_rows = raw.shape(0);
    t.data = raw.data();
    return t;
}

void register_kernels(py::module_& m);
void register_model(py::module_& m);
void register_gguf(py::module_& m);
void register_sampling(py::module_& m);
void register_tokenizer(py::module_& m);

}  // namespace pyinfer
