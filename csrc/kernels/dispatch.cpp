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
    return dtype_is_quantized(w.dtype) ? (size_t)T * (size_t)(w.n_cols / QK) * sizeof(block_q8a) : 0;
}

const Kernels& kernels() {
    static const Kernels* k = kernels_for(isa_selected());
    return *k;
}

}  // namespace pyinfer
