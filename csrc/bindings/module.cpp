// The private extension module pyinfer._ext: build facts, then one register_* per area.
#include <cstdlib>

#include "common_bind.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace pyinfer {

static py::dict build_info() {
    py::dict d;
    py::list compiled, available;
    for (Isa i : {Isa::REF, Isa::AVX2, Isa::AVX512})
        if (isa_compiled(i)) compiled.append(isa_name(i));
    for (Isa i : isa_available()) available.append(isa_name(i));
    d["isa_compiled"] = compiled;
    d["isa_available"] = available;
    d["isa_selected"] = isa_name(isa_selected());
#if defined(_OPENMP)
    d["openmp"] = true;
    d["max_threads"] = omp_get_max_threads();
#else
    d["openmp"] = false;
    d["max_threads"] = 1;
#endif
#if defined(__VERSION__)
    d["compiler"] = __VERSION__;
#endif
    return d;
}

}  // namespace pyinfer

PYBIND11_MODULE(_ext, m) {
    m.doc() = "pyinfer's C++ core (private; use the pyinfer package)";
    m.def("build_info", &pyinfer::build_info, "compiled/available/selected ISA, OpenMP, threads");
    pyinfer::register_kernels(m);
    pyinfer::register_model(m);
    pyinfer::register_gguf(m);
}
