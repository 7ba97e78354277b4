// CPU feature probe and the PYINFER_ISA override, decided once per process (CTranslate2's cpu_isa.cc idea).
#include "cpu_isa.h"

#include <cstdlib>
#include <stdexcept>

namespace pyinfer {

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::REF: return "ref";
        case Isa::AVX2: return "avx2";
        case Isa::AVX512: return "avx512";
    }
    return "?";
}

bool isa_compiled(Isa isa) {
    switch (isa) {
        case Isa::REF: return true;
#if defined(PYINFER_HAVE_AVX2)
        case Isa::AVX2: return true;
#endif
#if defined(PYINFER_HAVE_AVX512)
        case Isa::AVX512: return true;
#endif
        default: return false;
    }
}

bool isa_cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (isa) {
        case Isa::REF: return true;
        case Isa::AVX2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        case Isa::AVX512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                   __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return false;
#else
    return isa == Isa::REF;
#endif
}

std::vector<Isa> isa_available() {
    std::vector<Isa> out;
    for (Isa i : {Isa::REF, Isa::AVX2, Isa::AVX512})
        if (isa_compiled(i) && isa_cpu_supports(i)) out.push_back(i);
    return out;
}

Isa isa_from_name(const std::string& name) {
    if (name == "ref") return Isa::REF;
    if (name == "avx2") return Isa::AVX2;
    if (name == "avx512") return Isa::AVX512;
    throw std::invalid_argument("unknown ISA '" + name + "': choose one of ref, avx2, avx512");
}

static Isa decide() {
    const char* env = std::getenv("PYINFER_ISA");
    if (env && *env) {
        Isa isa = isa_from_name(env);
        if (!isa_compiled(isa))
            throw std::runtime_error(std::string("PYINFER_ISA=") + env +
                                     ": this build of pyinfer has no kernels for it; unset PYINFER_ISA");
        if (!isa_cpu_supports(isa))
            throw std::runtime_error(std::string("PYINFER_ISA=") + env +
                                     ": this CPU does not support it; use PYINFER_ISA=ref or unset it");
        return isa;
    }
    return isa_available().back();
}

Isa isa_selected() {
    static const Isa isa = decide();  // thrown again on every call while the override is bad
    return isa;
}

}  // namespace pyinfer
