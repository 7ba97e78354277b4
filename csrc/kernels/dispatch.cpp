// Fills the kernel table once from the ISA chosen in cpu_isa.cpp. Compiled without ISA flags.
#include "kernels.h"

#include "../quant_blocks.h"

namespace pyinfer {
namespace ref { extern const Kernels table; }
#if defined(PYINFER_HAVE_AVX2)
namespace avx2 { extern const Kernels table; }
#endif
#if defined(PYINFER_HAVE_AVX512)
namespace avx512 { extern const Kernels table; }
#endif

const Kernels* kernels_for(Isa isa) {
    switch (isa) {
        case Isa::REF: return &ref::table;
#if defined(PYINFER_HAVE_AVX2)
        case Isa::AVX2: return &avx2::table;
#endif
#if defined(PYINFER_HAVE_AVX512)
        case Isa::AVX512: return &avx512::table;
#endif
        default: return nullptr;
    }
}

size_t matmul_scratch_bytes(const Tensor& w, int64_t T) {
    if (!dtype_is_quantized(w.dtype)) return 0;
    // block_q8a rows (32-block weights), then block_q8_K16 rows (K-quants) where K allows them
    const size_t a = (size_t)T * (size_t)(w.n_cols / QK) * sizeof(block_q8a);
    return a + (w.n_cols % QK_K == 0 ? (size_t)T * (size_t)(w.n_cols / QK_K) * sizeof(block_q8_K16) : 0);
}

size_t matmul_exact_scratch_bytes(const Tensor& w, int n_threads) {
    return dtype_is_quantized(w.dtype) ? (size_t)(n_threads > 0 ? n_threads : 1) * (size_t)w.n_cols * sizeof(float) : 0;
}

bool quantize_supported(DType t) {
    switch (t) {
        case DType::F32: case DType::F16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_1: case DType::Q5_0:
        case DType::Q5_1: case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
            return true;
        default: return false;
    }
}

const Kernels& kernels() {
    static const Kernels* k = kernels_for(isa_selected());
    return *k;
}

}  // namespace pyinfer
