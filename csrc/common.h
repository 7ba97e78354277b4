// Shared C++ helpers for pyinfer: checks that throw (turned into ValueError/RuntimeError at the binding),
// the ggml type ids we use for weights, and a tensor view. No kernels and no model logic live here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#define PYINFER_RESTRICT __restrict__

namespace pyinfer {

// Weight storage types; the numbers are ggml's `enum ggml_type` values so GGUF ids pass straight through.
enum class DType : int {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
};

const char* dtype_name(DType t);
DType dtype_from_id(int id);  // throws std::invalid_argument naming the supported ids
bool dtype_is_quantized(DType t);
// Weights per block: 1 for F32/F16, 32 for Q4_0..Q8_0, 256 for the K-quants (QK_K).
int64_t dtype_block_size(DType t);
// Bytes needed for one row of n elements (throws if n does not fit the type's block size).
size_t dtype_row_bytes(DType t, int64_t n);

// A 2-D weight view: n_rows x n_cols, each row stored contiguously as `dtype` (row stride = row_bytes).
struct Tensor {
    const void* data = nullptr;
    DType dtype = DType::F32;
    int64_t n_rows = 0;  // output features (ggml ne1)
    int64_t n_cols = 0;  // input features (ggml ne0)
    bool empty() const { return data == nullptr; }
    size_t row_bytes() const { return dtype_row_bytes(dtype, n_cols); }
    const uint8_t* row(int64_t i) const { return static_cast<const uint8_t*>(data) + i * row_bytes(); }
};

inline void check_arg(bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
}

}  // namespace pyinfer
