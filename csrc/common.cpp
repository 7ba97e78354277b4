// Facts about weight storage types (names, bytes per row), shared by the model and the bindings.
#include "common.h"

#include "quant_blocks.h"

namespace pyinfer {

const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::Q4_0: return "Q4_0";
        case DType::Q4_1: return "Q4_1";
        case DType::Q8_0: return "Q8_0";
    }
    return "?";
}

DType dtype_from_id(int id) {
    switch (id) {
        case 0: return DType::F32;
        case 1: return DType::F16;
        case 2: return DType::Q4_0;
        case 3: return DType::Q4_1;
        case 8: return DType::Q8_0;
        default:
            throw std::invalid_argument("unsupported ggml type id " + std::to_string(id) +
                                        " (supported: F32=0, F16=1, Q4_0=2, Q4_1=3, Q8_0=8)");
    }
}

bool dtype_is_quantized(DType t) { return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q8_0; }

size_t dtype_row_bytes(DType t, int64_t n) {
    if (dtype_is_quantized(t) && n % QK != 0)
        throw std::invalid_argument(std::string(dtype_name(t)) + " rows must be a multiple of 32 elements, got " +
                                    std::to_string(n));
    switch (t) {
        case DType::F32: return 4 * n;
        case DType::F16: return 2 * n;
        case DType::Q8_0: return sizeof(block_q8_0) * (n / QK);
        case DType::Q4_0: return sizeof(block_q4_0) * (n / QK);
        case DType::Q4_1: return sizeof(block_q4_1) * (n / QK);
    }
    throw std::invalid_argument("unknown weight type");
}

}  // namespace pyinfer
