// The thread pool behind parallel_for (threads.h).  One job at a time: the caller publishes it under a new
// generation, wakes sleeping workers, and every thread claims ranges from one atomic word until none are left.
// Why not OpenMP: its static split waits at every region's end for each thread's share (a descheduled thread stalls
// all of them), and its passive wait costs a futex wake-up per region (~10 us; a decode step has ~120 regions).
#include "threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <ctime>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace pyinfer {

namespace {

constexpr int SPIN_US_DEFAULT = 100;  // covers the gaps between a decode step's jobs; a token's sampling sleeps
constexpr int MAX_THREADS = 256;
// A worker that waited for a core (runnable, not running) more than 1 / WAITED_MAX_PART of a WINDOW_MS window sleeps
// between jobs for the next PASSIVE_MS.  On an idle machine a spinning worker waits ~1 % of the time; beside a busy
// process, ~half.  (Counting involuntary switches instead, 4 per 100 ms, could not tell the two apart on a VM: idle
// windows saw 1-4 switches, busy ones 0-8; a false alarm made decode at -t 2 ~13 % slower for half a second.)
constexpr int WAITED_MAX_PART = 5, WINDOW_MS = 100, PASSIVE_MS = 500;

thread_local int t_num_threads = 0;   // 0: default_threads()
thread_local bool t_in_worker = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
    (void)word, (void)expected;
    std::this_thread::sleep_for(std::chrono::microseconds(50));  // no futex: poll
#endif
}

void futex_wake_all(std::atomic<uint32_t>* word) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
    (void)word;
#endif
}

// One job.  Its fields are atomics because a late worker may read a slot while the caller fills it for a later
// generation; such a worker's claim then fails (the claim word holds the generation), so it never runs those items.
struct Job {
    std::atomic<RangeFn> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int64_t> n{0};
    std::atomic<int> n_threads{1};  // the caller is tid 0; workers 1 .. n_threads - 1 take part
    std::atomic<int64_t> done{0};   // items finished
};

struct Pool {
    std::atomic<uint64_t> claim{0};  // (generation << 32) | next unclaimed item
    std::atomic<uint32_t> gen{0};    // the published generation: the futex word idle workers sleep on
    std::atomic<int> sleeping{0};
    std::atomic<int> n_workers{0};
    std::atomic<int64_t> jobs{0}, worker_chunks{0};
    Job slot[2];                     // generation g's job is slot[g & 1]
    std::mutex mu;                   // one caller at a time
    uint32_t last_gen = 0;           // under mu
};

std::atomic<Pool*> g_pool{nullptr};

// Claims and runs ranges of generation g's items until none are left (guided: a claim takes 1 / n_threads of what
// remains, so early claims are long and the last ones short; long ranges stream the weights faster than 1 / (2
// n_threads) did: SmolLM2 decode at -t 2, 148 -> 168 tok/s).  Returns the number of ranges run.
int64_t run_items(Pool* p, uint32_t g, Job& j, int tid) {
    const RangeFn fn = j.fn.load();
    void* const ctx = j.ctx.load();
    const int64_t n = j.n.load(), parts = (int64_t)j.n_threads.load();
    int64_t ran = 0, ranges = 0;
    uint64_t c = p->claim.load();
    for (;;) {
        if ((uint32_t)(c >> 32) != g) break;  // a later job: this one is over
        const int64_t i = (int64_t)(uint32_t)c;
        if (i >= n) break;
        const int64_t len = std::max<int64_t>(1, (n - i) / parts);
        if (!p->claim.compare_exchange_weak(c, c + (uint64_t)len)) continue;  // c reloaded
        fn(ctx, i, i + len, tid);
        ran += len;
        ranges++;
        c = p->claim.load();
    }
    if (ran) j.done.fetch_add(ran);
    return ranges;
}

// CPU time the calling thread has used, in ns (-1 where unknown).
int64_t thread_cpu_ns() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
    return -1;
}

// seen: the last generation before this worker started (it joins the job that started it).
// Between jobs a worker spins for spin_us, then sleeps.  A spinning thread uses up its share of a core that another
// process also wants, and the scheduler then takes the core away for a whole time slice, often while the thread holds
// a range the caller waits for: beside a busy process, spinning made -t 2 slower than -t 1.  So a worker that waits
// for a core often (wall time - CPU time - time asleep) sleeps at once between jobs for a while; woken, it preempts
// the busy process instead.
void worker_main(Pool* p, int tid, uint32_t seen) {
    using clock = std::chrono::steady_clock;
    using ns = std::chrono::nanoseconds;
    t_in_worker = true;
    const auto spin = std::chrono::microseconds(pool_spin_us());
    clock::time_point passive_until = clock::now(), window = passive_until;
    int64_t cpu0 = thread_cpu_ns(), slept = 0;  // the window's start in CPU time; ns asleep in it (wake-ups included)
    auto check_waited = [&] {  // after each job and before each sleep; a syscall once per window
        const clock::time_point now = clock::now();
        const int64_t wall = std::chrono::duration_cast<ns>(now - window).count();
        if (wall < (int64_t)WINDOW_MS * 1000000) return;
        const int64_t cpu = thread_cpu_ns();
        if (cpu >= 0 && cpu0 >= 0 && (wall - (cpu - cpu0) - slept) * WAITED_MAX_PART > wall)
            passive_until = now + std::chrono::milliseconds(PASSIVE_MS);
        window = now;
        cpu0 = cpu;
        slept = 0;
    };
    for (;;) {
        uint32_t g;
        auto t0 = clock::now();
        bool passive = t0 < passive_until;
        int it = 0;
        while ((g = p->gen.load(std::memory_order_acquire)) == seen) {
            cpu_relax();
            if (passive || (++it % 64 == 0 && clock::now() - t0 > spin)) {
                check_waited();
                p->sleeping.fetch_add(1);
                const clock::time_point s0 = clock::now();
                if (p->gen.load() == seen) futex_wait(&p->gen, seen);  // the caller wakes us if it saw sleeping > 0
                t0 = clock::now();
                slept += std::chrono::duration_cast<ns>(t0 - s0).count();
                p->sleeping.fetch_sub(1);
                passive = t0 < passive_until;
            }
        }
        seen = g;
        Job& j = p->slot[g & 1];
        if (tid < j.n_threads.load()) {
            const int64_t r = run_items(p, g, j, tid);
            if (r) p->worker_chunks.fetch_add(r, std::memory_order_relaxed);
        }
        check_waited();
    }
}

void reset_after_fork() { g_pool.store(new Pool); }  // the child has none of the parent's workers (old pool leaked)

Pool* pool() {
    static Pool* first = [] {
        Pool* p = new Pool;  // never freed: workers sleep in it until the process exits
        g_pool.store(p);
#if defined(__unix__) || defined(__APPLE__)
        pthread_atfork(nullptr, nullptr, reset_after_fork);
#endif
        return p;
    }();
    (void)first;
    return g_pool.load();
}

}  // namespace

int default_threads() {
    static const int n = [] {
#if defined(__linux__)
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
        return std::max(1, (int)std::thread::hardware_concurrency());
    }();
    return n;
}

void set_num_threads(int n) { t_num_threads = n > 0 ? std::min(n, MAX_THREADS) : 0; }

int num_threads() { return t_num_threads > 0 ? t_num_threads : default_threads(); }

int pool_spin_us() {
    static const int us = [] {
        const char* s = std::getenv("PYINFER_SPIN_US");
        return s && *s ? std::max(0, std::atoi(s)) : SPIN_US_DEFAULT;
    }();
    return us;
}

void parallel_for_fn(int64_t n, RangeFn fn, void* ctx) {
    if (n <= 0) return;
    const int nt = (int)std::min<int64_t>(num_threads(), n);
    if (nt < 2 || t_in_worker || n >= INT32_MAX) return fn(ctx, 0, n, 0);
    Pool* p = pool();
    std::unique_lock<std::mutex> lock(p->mu, std::try_to_lock);
    if (!lock.owns_lock()) return fn(ctx, 0, n, 0);  // another thread's job is running: not worth waiting for
    for (int w = p->n_workers.load(); w < nt - 1; w++) {
        try {
            std::thread(worker_main, p, w + 1, p->last_gen).detach();
        } catch (const std::system_error&) {  // no more threads allowed here: run with the workers there are
            break;
        }
        p->n_workers.store(w + 1);
    }
    const int nt_run = std::min(nt, p->n_workers.load() + 1);
    if (nt_run < 2) return fn(ctx, 0, n, 0);
    const uint32_t g = ++p->last_gen;
    Job& j = p->slot[g & 1];  // last used by generation g - 2, finished: no worker writes it any more
    j.fn.store(fn);
    j.ctx.store(ctx);
    j.n.store(n);
    j.n_threads.store(nt_run);
    j.done.store(0);
    p->claim.store((uint64_t)g << 32);
    p->gen.store(g);
    if (p->sleeping.load() > 0) futex_wake_all(&p->gen);
    run_items(p, g, j, 0);
    // the ranges other threads hold: a descheduled holder gets the core back sooner if we yield ours
    for (int spins = 0; j.done.load(std::memory_order_acquire) < n; spins++) {
        cpu_relax();
        if (spins > 2048) std::this_thread::yield();
    }
    p->jobs.fetch_add(1, std::memory_order_relaxed);
}

PoolStats pool_stats() {
    Pool* p = pool();
    return {p->jobs.load(), p->worker_chunks.load(), p->n_workers.load(), p->sleeping.load()};
}

}  // namespace pyinfer
