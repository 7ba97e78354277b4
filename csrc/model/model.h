// The transformer forward pass over a weights struct and a KV cache: prefill of many tokens and decode of one
// are the same call.  Knows nothing of files, tokenizers or Python: loaders hand it named 2-D tensor views.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "../common.h"
#include "../kernels/kernels.h"

namespace pyinfer {

// LLAMA also runs Qwen 2 (q/k/v biases) and Qwen 3 (per-head q/k RMSNorm): optional tensors of the same pass.
enum class Arch : int { GPT2 = 0, LLAMA = 1, GEMMA3 = 2 };

struct ModelConfig {
    Arch arch = Arch::GPT2;
    int64_t n_vocab = 0, n_ctx_train = 0, n_embd = 0, n_head = 0, n_head_kv = 0, n_layer = 0, n_ff = 0;
    int64_t n_embd_head = 0;  // head_dim; 0 -> n_embd / n_head
    float norm_eps = 1e-5f;    // LayerNorm (gpt2) or RMSNorm (llama) epsilon
    float rope_base = 10000.0f;
    int64_t n_rot = 0;         // rotary dims per head; 0 -> head_dim
    bool rope_neox = false;    // true: rotate (i, i + n_rot/2) pairs (HF layout); false: adjacent pairs (GGUF)
    // gemma3: layers with swa[l] attend to the last n_swa positions only and rotate with rope_base_swa
    int64_t n_swa = 0;
    std::vector<bool> swa;     // (n_layer) or empty: no sliding-window layers
    float rope_base_swa = 10000.0f;
    float attn_scale = 0.0f;   // q . k scale; 0 -> 1 / sqrt(head_dim)
    float logit_softcap = 0.0f;  // > 0: logits = softcap * tanh(logits / softcap)
    bool exact = false;        // activations stay f32 against dequantized weights (Kernels::matmul_exact)
    int64_t head_dim() const { return n_embd_head ? n_embd_head : n_embd / n_head; }
    bool layer_swa(int64_t l) const { return n_swa > 0 && (size_t)l < swa.size() && swa[l]; }
};

struct LayerWeights {
    const float *attn_norm = nullptr, *attn_norm_b = nullptr;  // (n_embd); no bias for RMSNorm
    Tensor attn_qkv;                                            // gpt2: (3 n_embd, n_embd)
    const float* attn_qkv_b = nullptr;                          // gpt2: (3 n_embd)
    Tensor attn_q, attn_k, attn_v;                              // llama: (n_head hd | n_head_kv hd, n_embd)
    const float *attn_q_b = nullptr, *attn_k_b = nullptr, *attn_v_b = nullptr;  // optional (Qwen2-style)
    const float *attn_q_norm = nullptr, *attn_k_norm = nullptr;  // (head_dim): per-head RMSNorm (Qwen3, Gemma3)
    const float *attn_post_norm = nullptr, *ffn_post_norm = nullptr;  // gemma3: (n_embd) after each block
    Tensor attn_out;                                            // (n_embd, n_head hd)
    const float* attn_out_b = nullptr;                          // (n_embd)
    const float *ffn_norm = nullptr, *ffn_norm_b = nullptr;     // (n_embd)
    Tensor ffn_gate;                                            // llama: (n_ff, n_embd)
    Tensor ffn_up;                                              // (n_ff, n_embd)
    const float* ffn_up_b = nullptr;                            // (n_ff)
    Tensor ffn_down;                                            // (n_embd, n_ff)
    const float* ffn_down_b = nullptr;                          // (n_embd)
};

struct ModelWeights {
    Tensor tok_embd;                                         // (n_vocab, n_embd)
    Tensor pos_embd;                                         // gpt2: (n_ctx_train, n_embd)
    std::vector<LayerWeights> layers;                        // (n_layer)
    const float *out_norm = nullptr, *out_norm_b = nullptr;  // (n_embd)
    Tensor output;                                           // (n_vocab, n_embd); == tok_embd when tied
};

// One sequence's state: the KV cache plus scratch buffers, bound to a model's weights.
class Context {
public:
    // kv_f16: the KV cache holds IEEE half (half the memory, llama.cpp's default), else f32
    Context(const ModelConfig& cfg, const ModelWeights& w, int64_t n_ctx, int n_threads, bool kv_f16 = false);
    // A child sequence that reads the first n_shared cached positions of `parent` in place (no copy) and keeps its own
    // cache after them: beams over one prompt.  The parent must be a root context, outlive the child and keep those
    // positions unchanged.  The child's cache has the parent's type.
    Context(const Context& parent, int64_t n_shared, int n_threads);

    // Runs `n` tokens at positions n_past .. n_past+n-1, appends their K/V to the cache and writes logits:
    // all positions (n, n_vocab) when all_logits, else the last position only (1, n_vocab).
    // Throws std::invalid_argument on a bad token id or context overflow.
    void eval(const int32_t* tokens, int64_t n, bool all_logits, float* logits);

    void reset() { n_past_ = n_shared_; }
    // Keep only the first n cached positions (n_shared <= n <= n_past): later positions are recomputed on demand.
    void truncate(int64_t n);
    // Copy another child's own positions [n_shared, other.n_past) into this one (same parent and n_shared).
    void copy_own_from(const Context& other);
    // The cache as bytes: a header, then K and V rows [0, n_past) of every layer (shared rows included).
    size_t state_bytes() const;
    void save_state(uint8_t* dst) const;
    // Restores a saved state (root contexts only); throws std::invalid_argument if it does not fit this model.
    void load_state(const uint8_t* src, size_t n);
    int64_t n_shared() const { return n_shared_; }
    int64_t n_past() const { return n_past_; }
    int64_t n_ctx() const { return n_ctx_; }
    int n_threads() const { return n_threads_; }
    bool kv_f16() const { return kv_f16_; }
    void set_n_threads(int n);
    const ModelConfig& config() const { return cfg_; }

private:
    void forward_gpt2(const int32_t* tokens, int64_t n);
    void forward_llama(const int32_t* tokens, int64_t n);
    void forward_gemma3(const int32_t* tokens, int64_t n);
    // cos/sin of pos * base^(-2i/n_rot) for positions n_past .. n_past+T-1: cs (T, n_rot/2, 2)
    void rope_table(float* cs, int64_t T, int64_t n_rot, float base) const;
    void lm_head(int64_t n, bool all_logits, float* logits);
    // out (T, w.n_rows) = x (T, w.n_cols) . w^T (+ bias): the quantized-activation matmul, or the exact one
    void matmul(float* out, const float* x, const Tensor& w, const float* bias, int64_t T) {
        (cfg_.exact ? k_->matmul_exact : k_->matmul)(out, x, w, bias, T, mm_scratch_.data());
    }
    // several products of one input x (T, n_cols) in one parallel region (q, k, v; gate, up): each job's out as matmul
    void matmul_shared(const float* x, int64_t T, std::initializer_list<MatmulJob> jobs) {
        if (cfg_.exact) {
            for (const MatmulJob& j : jobs) k_->matmul_exact(j.out, x, *j.w, j.bias, T, mm_scratch_.data());
            return;
        }
        k_->matmul_multi(jobs.begin(), (int)jobs.size(), x, T, mm_scratch_.data());
    }
    void reserve(int64_t n);

    ModelConfig cfg_;
    ModelWeights w_;
    const Kernels* k_;
    // layer l's own cache (bytes), head-major: kv head h's rows, then h + 1's (each head's keys are one contiguous
    // stream for attention); position p at row p - n_shared, head_dim values of kv_elt() bytes
    const uint8_t* layer_k(int64_t l) const { return k_cache_.data() + l * layer_bytes(); }
    const uint8_t* layer_v(int64_t l) const { return v_cache_.data() + l * layer_bytes(); }
    size_t layer_bytes() const { return (size_t)(n_ctx_ - n_shared_) * kv_dim() * kv_elt(); }
    size_t kv_elt() const { return kv_f16_ ? sizeof(fp16_t) : sizeof(float); }
    int64_t kv_dim() const { return cfg_.n_head_kv * cfg_.head_dim(); }
    size_t head_row_bytes() const { return (size_t)cfg_.head_dim() * kv_elt(); }
    // row r of kv head h, in bytes from a layer's base
    size_t kv_offset(int64_t r, int64_t h) const { return ((size_t)h * (n_ctx_ - n_shared_) + r) * head_row_bytes(); }
    // Where the forward pass writes this batch's K (which = 0) or V (1) as f32 (T, kv_dim): scratch that kv_store
    // then copies (f32 cache) or rounds (f16) into layer l's cache.
    float* kv_dst(int which);
    void kv_store(int64_t l, int64_t T);
    // the same from k and v given as (T, kv_dim) rows ld floats apart (GPT-2: inside the fused qkv rows)
    void kv_store(int64_t l, int64_t T, const float* k, const float* v, int64_t ld);
    // out (T, n_head hd) = attention of q (T, n_head hd) over layer l's cache (shared prefix + own rows)
    void attend(int64_t l, float* out, const float* q, int64_t T, float scale, int64_t n_window);

    int64_t n_ctx_, n_past_ = 0;
    const Context* parent_ = nullptr;
    int64_t n_shared_ = 0;  // positions [0, n_shared) live in parent_'s cache
    int n_threads_;
    bool kv_f16_ = false;
    std::vector<uint8_t> k_cache_, v_cache_;  // (n_layer, n_head_kv, n_ctx - n_shared, head_dim): own positions
    std::vector<float> k_new_, v_new_;        // this batch's K/V (T, kv_dim) before kv_store
    // scratch, sized for the largest batch seen
    int64_t cap_ = 0;
    std::vector<float> x_, h_, qkv_, q_, att_, ff_, ff2_, rope_cs_, rope_cs_swa_, att_scratch_;
    std::vector<uint8_t> mm_scratch_;  // quantized activations for matmul
};

}  // namespace pyinfer
