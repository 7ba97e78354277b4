// The private extension module pyinfer._ext: build facts, then one register_* per area.
#include <chrono>
#include <cstdlib>

#include "../threads.h"
#include "common_bind.h"

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
    d["max_threads"] = default_threads();  // the default thread count: the cores this process may use
    d["threads"] = "pyinfer pool: workers spin " + std::to_string(pool_spin_us()) +
                   " us for the next job, then sleep (PYINFER_SPIN_US)";
#if defined(__VERSION__)
    d["compiler"] = __VERSION__;
#endif
    return d;
}

// For tests of the pool: parallel_for over n items on n_threads threads, each item busy for work_us; returns (tid
// that ran each item, times each item ran).
static py::tuple pool_probe(int64_t n, int n_threads, double work_us) {
    check_arg(n >= 0 && work_us >= 0, "n and work_us must be >= 0");
    py::array_t<int32_t> tids(n), visits(n);
    int32_t *tp = tids.mutable_data(), *vp = visits.mutable_data();
    for (int64_t i = 0; i < n; i++) tp[i] = -1, vp[i] = 0;
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads);
        parallel_for(n, [&](int64_t i0, int64_t i1, int tid) {
            for (int64_t i = i0; i < i1; i++) {
                const auto t0 = std::chrono::steady_clock::now();
                while (std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() <
                       work_us) {
                }
                tp[i] = tid;
                __atomic_fetch_add(&vp[i], 1, __ATOMIC_RELAXED);
            }
        });
    }
    return py::make_tuple(tids, visits);
}

static py::dict pool_stats_py() {
    const PoolStats s = pool_stats();
    py::dict d;
    d["jobs"] = s.jobs;
    d["worker_chunks"] = s.worker_chunks;
    d["workers"] = s.workers;
    d["sleeping"] = s.sleeping;
    return d;
}

}  // namespace pyinfer

PYBIND11_MODULE(_ext, m) {
    m.doc() = "pyinfer's C++ core (private; use the pyinfer package)";
    m.def("build_info", &pyinfer::build_info, "compiled/available/selected ISA, threads");
    m.def("pool_probe", &pyinfer::pool_probe, py::arg("n"), py::arg("n_threads"), py::arg("work_us") = 0.0);
    m.def("pool_stats", &pyinfer::pool_stats_py, "the thread pool's counters (jobs, worker_chunks, workers, sleeping)");
    pyinfer::register_kernels(m);
    pyinfer::register_model(m);
    pyinfer::register_gguf(m);
    pyinfer::register_sampling(m);
    pyinfer::register_tokenizer(m);
}
