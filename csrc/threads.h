// pyinfer's threads: parallel_for hands out chunks of an index range to the calling thread and up to n - 1
// persistent workers, first come first served.  Workers spin a short while between jobs, then sleep on a futex;
// the caller never waits for a worker that has not started a chunk.  Below the kernels: knows no math.
#pragma once
#include <cstdint>

namespace pyinfer {

// The threads parallel_for may use when called from this OS thread (per calling thread, like
// omp_set_num_threads); n <= 0 -> default_threads().
void set_num_threads(int n);
int num_threads();
// The cores this process may run on (its CPU affinity mask).
int default_threads();

// body(ctx, i0, i1, tid) over [i0, i1) for ranges that tile [0, n): see parallel_for.
using RangeFn = void (*)(void* ctx, int64_t i0, int64_t i1, int tid);
void parallel_for_fn(int64_t n, RangeFn fn, void* ctx);

// Runs body(i0, i1, tid) on ranges [i0, i1) that tile [0, n) exactly once, on up to num_threads() threads; tid is in
// [0, num_threads()) and no two concurrent ranges share it (per-thread scratch).  Which thread gets which range, and
// how [0, n) is cut, varies from call to call: bodies whose items do not depend on each other give the same result
// whatever the split.  Runs in the caller alone (tid 0, one range) when n < 2, one thread is set, it is called
// from a worker, or another thread is using the pool (two sequences evaluated at once share the cores, not the pool).
template <class F>
inline void parallel_for(int64_t n, const F& body) {
    parallel_for_fn(
        n, [](void* c, int64_t i0, int64_t i1, int tid) { (*static_cast<const F*>(c))(i0, i1, tid); },
        const_cast<F*>(&body));
}

// How the pool has run, for tests and benchmarks: jobs run in parallel, chunks the workers (not the caller) ran,
// workers started, workers asleep now.
struct PoolStats {
    int64_t jobs, worker_chunks;
    int workers, sleeping;
};
PoolStats pool_stats();
// Microseconds a worker spins for the next job before it sleeps (PYINFER_SPIN_US, default in threads.cpp).
int pool_spin_us();

}  // namespace pyinfer
