// Bindings for single kernels, by ISA name, for tests and benchmarks (each ISA's table is reachable so that
// every SIMD kernel can be compared with its scalar twin).  Inputs are checked, outputs freshly allocated.
#include "../fp16.h"
#include "common_bind.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "../threads.h"

namespace pyinfer {

static py::array_t<float> matmul_py(const std::string& isa, const py::array& x, const py::object& w,
                                    py::object bias, int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    Tensor t = tensor_from_object(w, "w");
    check_arg(x.shape(1) == t.n_cols, "x has " + std::to_string(x.shape(1)) + " columns but w has " +
                                          std::to_string(t.n_cols));
    const float* b = nullptr;
    py::array bias_arr;
    if (!bias.is_none()) {
        bias_arr = bias.cast<py::array>();
        checked<float>(bias_arr, "bias", 1);
        check_arg(bias_arr.shape(0) == t.n_rows, "bias must have n_rows of w elements");
        b = static_cast<const float*>(bias_arr.data());
    }
    const int64_t T = x.shape(0);
    py::array_t<float> out({(py::ssize_t)T, (py::ssize_t)t.n_rows});
    float* o = out.mutable_data();
    const float* xp = static_cast<const float*>(x.data());
    std::vector<uint8_t> scratch(matmul_scratch_bytes(t, T));
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        if (T > 0 && t.n_rows > 0) K.matmul(o, xp, t, b, T, scratch.data());
    }
    return out;
}

// matmul_multi: x (T, K) times every weight in ws (each as matmul's w, all with K columns) in one fused call
static py::list matmul_multi_py(const std::string& isa, const py::array& x, const py::list& ws, int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    check_arg(ws.size() >= 1 && ws.size() <= (size_t)PI_MAX_JOBS,
              "ws must hold 1 to " + std::to_string(PI_MAX_JOBS) + " weights");
    const int64_t T = x.shape(0);
    std::vector<Tensor> ts;
    size_t scratch_bytes = 0;
    for (size_t i = 0; i < ws.size(); i++) {
        ts.push_back(tensor_from_object(ws[i], "ws[" + std::to_string(i) + "]"));
        check_arg(ts.back().n_cols == x.shape(1), "ws[" + std::to_string(i) + "] has " +
                                                      std::to_string(ts.back().n_cols) + " columns but x has " +
                                                      std::to_string(x.shape(1)));
        check_arg(ts.back().n_rows > 0, "ws[" + std::to_string(i) + "] has no rows");
        scratch_bytes = std::max(scratch_bytes, matmul_scratch_bytes(ts.back(), T));
    }
    py::list outs;
    std::vector<MatmulJob> jobs;
    for (const Tensor& t : ts) {
        py::array_t<float> o({(py::ssize_t)T, (py::ssize_t)t.n_rows});
        jobs.push_back({o.mutable_data(), &t, nullptr});
        outs.append(o);
    }
    std::vector<uint8_t> scratch(scratch_bytes);
    const float* xp = static_cast<const float*>(x.data());
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        if (T > 0) K.matmul_multi(jobs.data(), (int)jobs.size(), xp, T, scratch.data());
    }
    return outs;
}

static py::array_t<float> get_row_py(const std::string& isa, const py::object& w, int64_t row) {
    const Kernels& K = kernels_named(isa);
    Tensor t = tensor_from_object(w, "w");
    check_arg(row >= 0 && row < t.n_rows, "row out of range");
    py::array_t<float> out(t.n_cols);
    K.get_row(out.mutable_data(), t, row);
    return out;
}

static py::array_t<float> layernorm_py(const std::string& isa, const py::array& x, const py::array& g,
                                       py::object b, float eps) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    checked<float>(g, "g", 1);
    const int64_t T = x.shape(0), C = x.shape(1);
    check_arg(g.shape(0) == C, "g must have x.shape[1] elements");
    const float* bp = nullptr;
    py::array ba;
    if (!b.is_none()) {
        ba = b.cast<py::array>();
        checked<float>(ba, "b", 1);
        check_arg(ba.shape(0) == C, "b must have x.shape[1] elements");
        bp = static_cast<const float*>(ba.data());
    }
    py::array_t<float> out({(py::ssize_t)T, (py::ssize_t)C});
    float* o = out.mutable_data();
    const float *xp = static_cast<const float*>(x.data()), *gp = static_cast<const float*>(g.data());
    {
        py::gil_scoped_release nogil;
        K.layernorm(o, xp, gp, bp, T, C, eps);
    }
    return out;
}

// Elementwise in-place kernels applied to a copy of a 1-D array.
static py::array_t<float> unary_py(const std::string& isa, const py::array& x, const char* which, int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 1);
    py::array_t<float> out(x.shape(0));
    float* o = out.mutable_data();
    std::memcpy(o, x.data(), x.shape(0) * sizeof(float));
    const bool gelu = std::string(which) == "gelu";
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        if (gelu)
            K.gelu_tanh(o, x.shape(0));
        else
            K.softmax(o, x.shape(0));
    }
    return out;
}

static py::array_t<float> add_py(const std::string& isa, const py::array& a, const py::array& b, int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(a, "a", 1);
    checked<float>(b, "b", 1);
    check_arg(a.shape(0) == b.shape(0), "a and b must have the same length");
    py::array_t<float> out(a.shape(0));
    float* o = out.mutable_data();
    const float *ap = static_cast<const float*>(a.data()), *bp = static_cast<const float*>(b.data());
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        K.add(o, ap, bp, a.shape(0));
    }
    return out;
}

// q (T, n_head*hd), k/v (n_past+T, n_head_kv*hd) (position-major) or (n_head_kv, n_past+T, hd) (head-major, as the
// model's cache), float32 or uint16 (IEEE half bits: the f16 cache's kernel) -> (T, n_head*hd)
static py::array_t<float> attention_py(const std::string& isa, const py::array& q, const py::array& k,
                                       const py::array& v, int64_t n_past, int64_t n_head, int64_t n_head_kv,
                                       int n_threads, int64_t n_shared, int64_t n_window) {
    const Kernels& K = kernels_named(isa);
    checked<float>(q, "q", 2);
    const bool f16 = py::isinstance<py::array_t<uint16_t>>(k) && k.dtype().is(py::dtype::of<uint16_t>());
    const int nd = k.ndim() == 3 ? 3 : 2;
    if (f16) {
        checked<uint16_t>(k, "k", nd);
        checked<uint16_t>(v, "v", nd);
    } else {
        checked<float>(k, "k", nd);
        checked<float>(v, "v", nd);
    }
    check_arg(n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0, "n_head must be a multiple of n_head_kv");
    const int64_t T = q.shape(0);
    check_arg(q.shape(1) % n_head == 0, "q.shape[1] must be a multiple of n_head");
    const int64_t hd = q.shape(1) / n_head, rows = n_past + T;
    for (const py::array* a : {&k, &v}) {
        const bool ok = nd == 2 ? a->shape(0) == rows && a->shape(1) == n_head_kv * hd
                                : a->shape(0) == n_head_kv && a->shape(1) == rows && a->shape(2) == hd;
        check_arg(ok, std::string(a == &k ? "k" : "v") + " has shape " + shape_str(*a) +
                          "; expected (n_past + T, n_head_kv * hd) or (n_head_kv, n_past + T, hd)");
    }
    if (n_threads <= 0) n_threads = 1;
    check_arg(n_shared >= 0 && n_shared <= n_past + T, "n_shared must be in [0, n_past + T]");
    check_arg(n_window >= 0, "n_window must be >= 0 (0: no sliding window)");
    py::array_t<float> out({(py::ssize_t)T, (py::ssize_t)(n_head * hd)});
    std::vector<float> scratch((size_t)n_threads * ATTN_QUERY_BLOCK * (n_past + T) + 1);
    float* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads);
        // split the cache at n_shared to exercise both spans: rows [0, n_shared) and [n_shared, n_past + T)
        const int64_t kvs = nd == 2 ? n_head_kv * hd : hd, hs = nd == 2 ? hd : rows * hd;  // row, head strides
        const float* qp = static_cast<const float*>(q.data());
        const float sc = 1.0f / std::sqrt((float)hd);
        if (f16) {
            const fp16_t *kp = static_cast<const fp16_t*>(k.data()), *vp = static_cast<const fp16_t*>(v.data());
            K.attention_f16(o, qp, kp, vp, n_shared, kp + n_shared * kvs, vp + n_shared * kvs, scratch.data(), T,
                            n_past, n_head, n_head_kv, hd, kvs, hs, hs, sc, n_window);
        } else {
            const float *kp = static_cast<const float*>(k.data()), *vp = static_cast<const float*>(v.data());
            K.attention(o, qp, kp, vp, n_shared, kp + n_shared * kvs, vp + n_shared * kvs, scratch.data(), T, n_past,
                        n_head, n_head_kv, hd, kvs, hs, hs, sc, n_window);
        }
    }
    return out;
}

// x (n,) float32 -> (n,) uint16 IEEE half bits through the ISA's to_f16 (the f16 KV cache's writes)
static py::array_t<uint16_t> to_f16_py(const std::string& isa, const py::array& x) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 1);
    py::array_t<uint16_t> out(x.shape(0));
    K.to_f16(out.mutable_data(), static_cast<const float*>(x.data()), x.shape(0));
    return out;
}

static py::array_t<uint16_t> fp16_from_fp32_py(const py::array& x) {
    checked<float>(x, "x", 1);
    py::array_t<uint16_t> out(x.shape(0));
    const float* p = static_cast<const float*>(x.data());
    for (py::ssize_t i = 0; i < x.shape(0); i++) out.mutable_data()[i] = fp32_to_fp16(p[i]);
    return out;
}

static py::array_t<float> fp32_from_fp16_py(const py::array& x) {
    checked<uint16_t>(x, "x", 1);
    py::array_t<float> out(x.shape(0));
    const uint16_t* p = static_cast<const uint16_t*>(x.data());
    for (py::ssize_t i = 0; i < x.shape(0); i++) out.mutable_data()[i] = fp16_to_fp32(p[i]);
    return out;
}

// x (n_rows, n) float32 -> raw (n_rows, row_bytes) uint8 in ggml type `type_id`
static py::array_t<uint8_t> quantize_py(const std::string& isa, const py::array& x, int type_id) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    const DType t = dtype_from_id(type_id);
    check_arg(quantize_supported(t), std::string("quantizing to ") + dtype_name(t) +
                                         " is not supported (supported: F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)");
    const int64_t rows = x.shape(0), n = x.shape(1);
    const size_t rb = dtype_row_bytes(t, n);
    py::array_t<uint8_t> out({(py::ssize_t)rows, (py::ssize_t)rb});
    uint8_t* o = out.mutable_data();
    const float* xp = static_cast<const float*>(x.data());
    {
        py::gil_scoped_release nogil;
        // rows are independent: the bytes do not depend on the thread count (the K-quant fits are slow)
        parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; r++) K.quantize_row(o + r * rb, xp + r * n, n, t);
        });
    }
    return out;
}

// raw (n_rows, row_bytes) of ggml type `type_id` -> (n_rows, n_cols) float32
static py::array_t<float> dequantize_py(const std::string& isa, const py::array& raw, int type_id, int64_t n_cols) {
    const Kernels& K = kernels_named(isa);
    Tensor t = tensor_from_object(py::make_tuple(raw, type_id, n_cols), "raw");
    py::array_t<float> out({(py::ssize_t)t.n_rows, (py::ssize_t)n_cols});
    for (int64_t r = 0; r < t.n_rows; r++) K.get_row(out.mutable_data() + r * n_cols, t, r);
    return out;
}

static py::array_t<float> rmsnorm_py(const std::string& isa, const py::array& x, const py::array& g, float eps) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    checked<float>(g, "g", 1);
    const int64_t T = x.shape(0), C = x.shape(1);
    check_arg(g.shape(0) == C, "g must have x.shape[1] elements");
    py::array_t<float> out({(py::ssize_t)T, (py::ssize_t)C});
    K.rmsnorm(out.mutable_data(), static_cast<const float*>(x.data()), static_cast<const float*>(g.data()), T, C, eps);
    return out;
}

// x (T, n_heads * hd); cos_sin (T, n_rot/2, 2) -> rotated copy
static py::array_t<float> rope_py(const std::string& isa, const py::array& x, int64_t n_heads, int64_t n_rot,
                                  const py::array& cos_sin, bool neox, int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    checked<float>(cos_sin, "cos_sin", 3);
    const int64_t T = x.shape(0);
    check_arg(n_heads > 0 && x.shape(1) % n_heads == 0, "x.shape[1] must be a multiple of n_heads");
    const int64_t hd = x.shape(1) / n_heads;
    check_arg(n_rot > 0 && n_rot % 2 == 0 && n_rot <= hd, "n_rot must be even, positive and <= head_dim");
    check_arg(cos_sin.shape(0) == T && cos_sin.shape(1) == n_rot / 2 && cos_sin.shape(2) == 2,
              "cos_sin must have shape (T, n_rot/2, 2)");
    py::array_t<float> out({(py::ssize_t)T, (py::ssize_t)x.shape(1)});
    float* o = out.mutable_data();
    std::memcpy(o, x.data(), T * x.shape(1) * sizeof(float));
    const float* cs = static_cast<const float*>(cos_sin.data());
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        K.rope(o, T, n_heads, hd, x.shape(1), n_rot, cs, neox);
    }
    return out;
}

// g, u (n) -> silu(g) * u (SwiGLU) or, with gelu, gelu_tanh(g) * u (GeGLU)
static py::array_t<float> glu_py(const std::string& isa, const py::array& g, const py::array& u, bool gelu,
                                 int n_threads) {
    const Kernels& K = kernels_named(isa);
    checked<float>(g, "g", 1);
    checked<float>(u, "u", 1);
    check_arg(g.shape(0) == u.shape(0), "g and u must have the same length");
    py::array_t<float> out(g.shape(0));
    float* o = out.mutable_data();
    std::memcpy(o, g.data(), g.shape(0) * sizeof(float));
    const float* up = static_cast<const float*>(u.data());
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        (gelu ? K.gelu_mul : K.silu_mul)(o, up, g.shape(0));
    }
    return out;
}

// Benchmark helpers (benchmarks/bench_kernels.py): C++-side timings so that the Python call overhead is not measured.
static double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Times `repeats` matmuls, call i using ws[i % len(ws)] (several copies of a matrix defeat the caches).
// Returns the seconds of each call.
static std::vector<double> bench_matmul_py(const std::string& isa, const py::array& x, const py::list& ws,
                                           int n_threads, int repeats) {
    const Kernels& K = kernels_named(isa);
    checked<float>(x, "x", 2);
    check_arg(ws.size() > 0, "ws must hold at least one weight");
    check_arg(repeats > 0, "repeats must be positive");
    std::vector<Tensor> ts;
    for (const py::handle& w : ws) {
        ts.push_back(tensor_from_object(py::reinterpret_borrow<py::object>(w), "w"));
        check_arg(ts.back().n_cols == x.shape(1) && ts.back().n_rows == ts[0].n_rows && ts.back().dtype == ts[0].dtype,
                  "every weight must have the same shape and type, with x.shape[1] columns");
    }
    const int64_t T = x.shape(0);
    std::vector<float> out((size_t)T * ts[0].n_rows);
    std::vector<uint8_t> scratch(matmul_scratch_bytes(ts[0], T));
    std::vector<double> times(repeats);
    const float* xp = static_cast<const float*>(x.data());
    {
        py::gil_scoped_release nogil;
        set_num_threads(n_threads > 0 ? n_threads : 1);
        for (int i = 0; i < repeats; i++) {
            const double t0 = seconds_now();
            K.matmul(out.data(), xp, ts[i % ts.size()], nullptr, T, scratch.data());
            times[i] = seconds_now() - t0;
        }
    }
    return times;
}

// Runs f(tid) on nt threads at once (the caller is tid 0) and returns the seconds from the start signal to the last
// thread's end: benchmark references need every thread busy for the whole pass, which parallel_for does not promise
// (its caller takes every range when the workers are slow to start).  Thread start-up is not timed.
template <class F>
static double timed_on_threads(int nt, const F& f) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 1; i < nt; i++)
        threads.emplace_back([&, i] {
            ready.fetch_add(1);
            while (!go.load()) std::this_thread::yield();
            f(i);
        });
    while (ready.load() < nt - 1) std::this_thread::yield();
    const double t0 = seconds_now();
    go.store(true);
    f(0);
    for (std::thread& t : threads) t.join();
    return seconds_now() - t0;
}

// The reference for bandwidth: the fastest plain read of a buffer (xor of 64-bit words, n_threads threads, each
// a contiguous part).  Returns (seconds of each pass, checksum).
static py::tuple bench_stream_read_py(const py::array& buf, int n_threads, int repeats) {
    checked<uint8_t>(buf, "buf", 1);
    check_arg(repeats > 0, "repeats must be positive");
    const uint64_t* p = static_cast<const uint64_t*>(buf.data());
    const int64_t n_lines = buf.shape(0) / 64;  // whole 64-byte lines of 8 words
    const int nt = n_threads > 0 ? n_threads : 1;
    std::vector<double> times(repeats);
    std::vector<uint64_t> part(nt);
    uint64_t acc = 0;
    {
        py::gil_scoped_release nogil;
        for (int r = 0; r < repeats; r++) {
            times[r] = timed_on_threads(nt, [&](int tid) {
                uint64_t a = 0;
                for (int64_t i = n_lines * tid / nt * 8; i < n_lines * (tid + 1) / nt * 8; i += 8) {
                    uint64_t l = 0;
                    for (int j = 0; j < 8; j++) l ^= p[i + j];
                    a ^= l;
                }
                part[tid] = a;
            });
            for (uint64_t a : part) acc ^= a;
        }
    }
    return py::make_tuple(times, acc);
}

// The ISA's int8 peak on n_threads cores (each running int8_peak): (seconds of each pass, int8 ops per pass).
static py::tuple bench_int8_peak_py(const std::string& isa, int n_threads, int repeats, int64_t n_iter) {
    const Kernels& K = kernels_named(isa);
    check_arg(repeats > 0 && n_iter > 0, "repeats and n_iter must be positive");
    const int nt = n_threads > 0 ? n_threads : 1;
    std::vector<double> times(repeats), part(nt);
    double ops = 0;
    {
        py::gil_scoped_release nogil;
        for (int r = 0; r < repeats; r++) {
            times[r] = timed_on_threads(nt, [&](int tid) { part[tid] = K.int8_peak(n_iter); });
            ops = 0;
            for (double o : part) ops += o;
        }
    }
    return py::make_tuple(times, ops);
}

void register_kernels(py::module_& m) {
    py::module_ k = m.def_submodule("kernels", "single kernels by ISA name, for tests and benchmarks");
    k.def("matmul", &matmul_py, py::arg("isa"), py::arg("x"), py::arg("w"), py::arg("bias") = py::none(),
          py::arg("n_threads") = 1,
          "x (T, K) float32, w (N, K) float32|float16 or (raw uint8, ggml type, K) -> x @ w.T + bias, (T, N)");
    k.def("matmul_multi", &matmul_multi_py, py::arg("isa"), py::arg("x"), py::arg("ws"), py::arg("n_threads") = 1);
    k.def("quantize", &quantize_py, py::arg("isa"), py::arg("x"), py::arg("type"),
          "rows of x (float32) -> raw bytes in a ggml block type, bit-identical to ggml's reference quantizers");
    k.def("dequantize", &dequantize_py, py::arg("isa"), py::arg("raw"), py::arg("type"), py::arg("n_cols"));
    k.def("get_row", &get_row_py, py::arg("isa"), py::arg("w"), py::arg("row"));
    k.def("layernorm", &layernorm_py, py::arg("isa"), py::arg("x"), py::arg("g"), py::arg("b") = py::none(),
          py::arg("eps") = 1e-5f);
    k.def("rmsnorm", &rmsnorm_py, py::arg("isa"), py::arg("x"), py::arg("g"), py::arg("eps") = 1e-5f);
    // the elementwise kernels and rope: n_threads for their parallel paths (taken from PAR_MIN_ELEMS elements)
    k.def("rope", &rope_py, py::arg("isa"), py::arg("x"), py::arg("n_heads"), py::arg("n_rot"), py::arg("cos_sin"),
          py::arg("neox"), py::arg("n_threads") = 1);
    k.def(
        "silu_mul",
        [](const std::string& isa, const py::array& g, const py::array& u, int nt) { return glu_py(isa, g, u, false, nt); },
        py::arg("isa"), py::arg("g"), py::arg("u"), py::arg("n_threads") = 1);
    k.def(
        "gelu_mul",
        [](const std::string& isa, const py::array& g, const py::array& u, int nt) { return glu_py(isa, g, u, true, nt); },
        py::arg("isa"), py::arg("g"), py::arg("u"), py::arg("n_threads") = 1);
    k.def(
        "gelu_tanh", [](const std::string& isa, const py::array& x, int nt) { return unary_py(isa, x, "gelu", nt); },
        py::arg("isa"), py::arg("x"), py::arg("n_threads") = 1);
    k.def(
        "softmax", [](const std::string& isa, const py::array& x) { return unary_py(isa, x, "softmax", 1); },
        py::arg("isa"), py::arg("x"));
    k.def("add", &add_py, py::arg("isa"), py::arg("a"), py::arg("b"), py::arg("n_threads") = 1);
    k.def("attention", &attention_py, py::arg("isa"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_past"),
          py::arg("n_head"), py::arg("n_head_kv"), py::arg("n_threads") = 1, py::arg("n_shared") = 0,
          py::arg("n_window") = 0);
    k.def("to_f16", &to_f16_py, py::arg("isa"), py::arg("x"));
    k.def("bench_matmul", &bench_matmul_py, py::arg("isa"), py::arg("x"), py::arg("ws"), py::arg("n_threads") = 1,
          py::arg("repeats") = 10, "seconds of each of `repeats` matmuls, call i with ws[i % len(ws)]");
    k.def("bench_int8_peak", &bench_int8_peak_py, py::arg("isa"), py::arg("n_threads") = 1, py::arg("repeats") = 5,
          py::arg("n_iter") = 20000000, "int8 peak reference: (seconds of each pass, int8 ops per pass)");
    k.def("bench_stream_read", &bench_stream_read_py, py::arg("buf"), py::arg("n_threads") = 1,
          py::arg("repeats") = 10, "read bandwidth reference: (seconds of each pass over buf, checksum)");
    k.def("fp16_from_fp32", &fp16_from_fp32_py, "scalar reference conversion (bits as uint16)");
    k.def("fp32_from_fp16", &fp32_from_fp16_py, "scalar reference conversion (bits as uint16)");
}

}  // namespace pyinfer
