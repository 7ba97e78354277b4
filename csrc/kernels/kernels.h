// The kernel table: one function pointer per op, filled from one ISA's compilation of kernels_impl.inc.
// Kernels take raw pointers and sizes, outputs first; they never allocate or throw (callers check shapes).
// Threading: kernels marked [par] split their outer loop with parallel_for (threads.h) so that every output element
// is computed by one thread in a fixed order: results are bit-identical for any thread count and any split.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../common.h"
#include "../cpu_isa.h"
#include "../fp16.h"

namespace pyinfer {

// One product of a fused matmul call (Kernels::matmul_multi): out (T, w->n_rows) = x (T, w->n_cols) . w^T (+ bias)
struct MatmulJob {
    float* out;
    const Tensor* w;
    const float* bias;  // (w->n_rows) or nullptr
};
constexpr int PI_MAX_JOBS = 4;
// attention works on blocks of this many consecutive queries of one head (its scratch holds a row per query)
constexpr int ATTN_QUERY_BLOCK = 4;
// elementwise work below this many elements (a decode step's) runs in the caller: waking the threads costs more
constexpr int64_t PAR_MIN_ELEMS = 16384;

struct Kernels {
    Isa isa;
    // [par] out[t, n] = sum_k x[t, k] * w[n, k] (+ bias[n]).  out (T, N), x (T, K), w (N, K) rows of `w.dtype`,
    // bias (N) or nullptr.  Each out element is the same dot product whatever T is (decode == prefill).
    // Quantized weights: x is first quantized to 8-bit blocks in `scratch` (matmul_scratch_bytes(w, T) bytes).
    void (*matmul)(float* out, const float* x, const Tensor& w, const float* bias, int64_t T, void* scratch);
    // [par] matmul of one input x (T, K) by up to PI_MAX_JOBS weights (all K columns, any types: q, k, v; gate, up)
    // in one parallel region: x is rounded once for all of them and their rows are split among the threads as one
    // list.  Each output equals matmul's.  scratch: the largest matmul_scratch_bytes of the jobs' weights.
    void (*matmul_multi)(const MatmulJob* jobs, int n_jobs, const float* x, int64_t T, void* scratch);
    // [par] matmul with the activations kept in f32 (the exact model of a quantized file): each weight row is
    // dequantized (get_row) into `scratch` (n_threads * K floats, matmul_exact_scratch_bytes) and dotted with every
    // token in f32.  Float weights: matmul.  Every out element is one dot product: thread- and T-invariant.
    void (*matmul_exact)(float* out, const float* x, const Tensor& w, const float* bias, int64_t T, void* scratch);
    // out (n) = row `row` of w as float (embedding lookup / dequantization for any weight type)
    void (*get_row)(float* out, const Tensor& w, int64_t row);
    // [par] out (T, C) = (x - mean) / sqrt(var + eps) * g + b, per row; g, b (C); b may be nullptr
    void (*layernorm)(float* out, const float* x, const float* g, const float* b, int64_t T, int64_t C, float eps);
    // [par] out (T, C) = x / sqrt(mean(x^2) + eps) * g, per row (RMSNorm)
    void (*rmsnorm)(float* out, const float* x, const float* g, int64_t T, int64_t C, float eps);
    // [par] x (T, n_heads * hd) rows of `stride` floats, in place: rotary embedding of the first n_rot dims of each
    // head.  cos_sin (T, n_rot/2, 2) holds cos and sin of pos_t * theta_i.  neox=false rotates adjacent pairs
    // (2i, 2i+1) (GGUF's permuted q/k); neox=true rotates (i, i + n_rot/2) (HF's rotate_half on unpermuted weights).
    void (*rope)(float* x, int64_t T, int64_t n_heads, int64_t hd, int64_t stride, int64_t n_rot,
                 const float* cos_sin, bool neox);
    // [par] g (n) in place: silu(g) * u = g / (1 + exp(-g)) * u   (SwiGLU)
    void (*silu_mul)(float* g, const float* u, int64_t n);
    // [par] g (n) in place: gelu_tanh(g) * u   (GeGLU, Gemma)
    void (*gelu_mul)(float* g, const float* u, int64_t n);
    // [par] x (n) in place: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's GELU)
    void (*gelu_tanh)(float* x, int64_t n);
    // x (n) in place: exp(x - max) / sum
    void (*softmax)(float* x, int64_t n);
    // [par] out (n) = a + b   (out may alias a or b).  The elementwise [par] kernels run in the caller alone
    // below PAR_MIN_ELEMS (decode) and split at multiples of 4096 above, so each element's arithmetic is the same.
    void (*add)(float* out, const float* a, const float* b, int64_t n);
    // [par] causal multi-head attention of T new queries over a KV cache holding n_past + T positions, kept in
    // two spans: positions j < n_shared from (k_shared, v_shared) (a prefix shared with other sequences, e.g.
    // beams), positions j >= n_shared from (k, v) at row j - n_shared.  Row r's hd values of kv head h are at
    // r * row_stride + h * head_stride elements from the span's base (shared_head_stride in the shared span):
    // the strides are (n_head_kv hd, hd) for position-major rows, (hd, rows hd) for a head-major cache.
    // out (T, n_head*hd); q (T, n_head*hd); scratch: n_threads * ATTN_QUERY_BLOCK * (n_past + T) floats.  Query t
    // (position p = n_past + t) sees positions 0 .. p, or with n_window > 0 (sliding-window attention) only
    // p - n_window + 1 .. p.
    void (*attention)(float* out, const float* q, const float* k_shared, const float* v_shared, int64_t n_shared,
                      const float* k, const float* v, float* scratch, int64_t T, int64_t n_past, int64_t n_head,
                      int64_t n_head_kv, int64_t hd, int64_t row_stride, int64_t head_stride,
                      int64_t shared_head_stride, float scale, int64_t n_window);
    // [par] attention over an f16 KV cache (kv_type "f16"): the same as attention on the rows widened to float
    void (*attention_f16)(float* out, const float* q, const fp16_t* k_shared, const fp16_t* v_shared,
                          int64_t n_shared, const fp16_t* k, const fp16_t* v, float* scratch, int64_t T,
                          int64_t n_past, int64_t n_head, int64_t n_head_kv, int64_t hd, int64_t row_stride,
                          int64_t head_stride, int64_t shared_head_stride, float scale, int64_t n_window);
    // out (n) = x (n) as IEEE half, round to nearest even (fp32_to_fp16): the f16 KV cache's writes
    void (*to_f16)(fp16_t* out, const float* x, int64_t n);
    // out = x (n) stored as type t (n % 32 == 0 for block types); bit-identical to ggml's reference quantizers.
    // Only the types of quantize_supported(); any other type writes nothing.
    void (*quantize_row)(void* out, const float* x, int64_t n, DType t);
    // Benchmark reference, not a kernel: n_iter rounds of this ISA's int8 block dot instructions (AVX2
    // maddubs + madd + add; VNNI vpdpbusd) on registers only, as the quantized matmul issues them.  Returns the int8
    // operations done (2 per multiply-add), so ops / seconds is the ISA's int8 peak on one core.
    double (*int8_peak)(int64_t n_iter);
};

// Scratch bytes matmul needs for weight w and T activation rows (0 for float weights; room for both activation formats,
// block_q8a then block_q8_K16, so that one buffer serves every matmul_multi over the same input).
size_t matmul_scratch_bytes(const Tensor& w, int64_t T);
// Scratch bytes matmul_exact needs for weight w with n_threads threads.
size_t matmul_exact_scratch_bytes(const Tensor& w, int n_threads);

// Whether quantize_row writes type t (it leaves the output alone for any other type); keep in step with its switch.
bool quantize_supported(DType t);

// The table for one ISA (nullptr if that ISA was not compiled in).
const Kernels* kernels_for(Isa isa);
// The table for isa_selected().
const Kernels& kernels();

}  // namespace pyinfer
