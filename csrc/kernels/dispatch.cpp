// Fills the kernel table once from the ISA chosen in cpu_isa.cpp. Compiled without ISA flags.
#include "kernels.h"

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

const Kernels& kernels() {
    static const Kernels* k = kernels_for(isa_selected());
    return *k;
}

}  // namespace pyinfer
