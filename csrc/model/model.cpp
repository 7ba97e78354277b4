// GPT-2 forward pass: learned positions, pre-LayerNorm blocks, fused QKV, GELU-tanh MLP, tied LM head.
// One call runs every layer for a batch of tokens and updates the KV cache; threads come from OpenMP.
#include "model.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <stdexcept>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace pyinfer {

static int max_threads_default() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

Context::Context(const ModelConfig& cfg, const ModelWeights& w, int64_t n_ctx, int n_threads)
    : cfg_(cfg), w_(w), k_(&kernels()), n_ctx_(n_ctx), n_threads_(1) {
    check_arg(n_ctx > 0, "n_ctx must be positive");
    if (cfg.arch == Arch::GPT2)
        check_arg(n_ctx <= cfg.n_ctx_train,
                  "n_ctx " + std::to_string(n_ctx) + " exceeds the model's " + std::to_string(cfg.n_ctx_train) +
                      " learned positions");
    set_n_threads(n_threads);
    const size_t kv = (size_t)cfg.n_layer * n_ctx * cfg.n_head_kv * cfg.head_dim();
    k_cache_.assign(kv, 0.0f);
    v_cache_.assign(kv, 0.0f);
}

void Context::set_n_threads(int n) {
    if (n <= 0) n = max_threads_default();
#if !defined(_OPENMP)
    n = 1;
#endif
    n_threads_ = n;
}

void Context::reserve(int64_t n) {
    if (n <= cap_) return;
    const int64_t C = cfg_.n_embd, F = cfg_.n_ff;
    x_.resize(n * C);
    h_.resize(n * C);
    qkv_.resize(n * 3 * C);
    q_.resize(n * C);
    att_.resize(n * C);
    ff_.resize(n * F);
    size_t q = 0;
    auto need = [&](const Tensor& t) { q = std::max(q, matmul_scratch_bytes(t, n)); };
    for (const LayerWeights& L : w_.layers) {
        need(L.attn_qkv);
        need(L.attn_out);
        need(L.ffn_up);
        need(L.ffn_down);
    }
    need(w_.output);
    mm_scratch_.resize(q);
    cap_ = n;
}

void Context::eval(const int32_t* tokens, int64_t n, bool all_logits, float* logits) {
    check_arg(n > 0, "eval needs at least one token");
    if (n_past_ + n > n_ctx_)
        throw std::invalid_argument("context overflow: " + std::to_string(n_past_) + " cached + " + std::to_string(n) +
                                    " new tokens exceed n_ctx = " + std::to_string(n_ctx_) +
                                    "; use a shorter prompt or a larger context (n_ctx)");
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg_.n_vocab)
            throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " out of range [0, " +
                                        std::to_string(cfg_.n_vocab) + ")");
#if defined(_OPENMP)
    omp_set_num_threads(n_threads_);
#endif
    reserve(n);
    forward_gpt2(tokens, n, all_logits, logits);
    n_past_ += n;
}

void Context::forward_gpt2(const int32_t* tokens, int64_t T, bool all_logits, float* logits) {
    const Kernels& K = *k_;
    const int64_t C = cfg_.n_embd, H = cfg_.n_head, hd = cfg_.head_dim();
    const int64_t kv_dim = cfg_.n_head_kv * hd;
    float *x = x_.data(), *h = h_.data(), *qkv = qkv_.data(), *q = q_.data(), *att = att_.data(), *ff = ff_.data();
    att_scratch_.resize((size_t)n_threads_ * (n_past_ + T));

    // token + position embeddings: x (T, C)
    for (int64_t t = 0; t < T; t++) {
        K.get_row(x + t * C, w_.tok_embd, tokens[t]);
        K.get_row(h, w_.pos_embd, n_past_ + t);
        K.add(x + t * C, x + t * C, h, C);
    }
    const float scale = 1.0f / std::sqrt((float)hd);
    for (int64_t l = 0; l < cfg_.n_layer; l++) {
        const LayerWeights& L = w_.layers[l];
        float* kc = k_cache_.data() + (size_t)l * n_ctx_ * kv_dim;  // (n_ctx, kv_dim)
        float* vc = v_cache_.data() + (size_t)l * n_ctx_ * kv_dim;
        // attention block
        K.layernorm(h, x, L.attn_norm, L.attn_norm_b, T, C, cfg_.norm_eps);   // (T, C)
        K.matmul(qkv, h, L.attn_qkv, L.attn_qkv_b, T, mm_scratch_.data());                        // (T, C) -> (T, 3C)
        for (int64_t t = 0; t < T; t++) {                                     // split into q and the cache
            std::memcpy(q + t * C, qkv + t * 3 * C, C * sizeof(float));
            std::memcpy(kc + (n_past_ + t) * kv_dim, qkv + t * 3 * C + C, kv_dim * sizeof(float));
            std::memcpy(vc + (n_past_ + t) * kv_dim, qkv + t * 3 * C + C + kv_dim, kv_dim * sizeof(float));
        }
        K.attention(att, q, kc, vc, att_scratch_.data(), T, n_past_, H, cfg_.n_head_kv, hd, kv_dim, scale);
        K.matmul(h, att, L.attn_out, L.attn_out_b, T, mm_scratch_.data());  // (T, C) -> (T, C)
        K.add(x, x, h, T * C);
        // MLP block
        K.layernorm(h, x, L.ffn_norm, L.ffn_norm_b, T, C, cfg_.norm_eps);
        K.matmul(ff, h, L.ffn_up, L.ffn_up_b, T, mm_scratch_.data());  // (T, C) -> (T, n_ff)
        K.gelu_tanh(ff, T * cfg_.n_ff);
        K.matmul(h, ff, L.ffn_down, L.ffn_down_b, T, mm_scratch_.data());  // (T, n_ff) -> (T, C)
        K.add(x, x, h, T * C);
    }
    // final norm and LM head: only the rows we return
    const int64_t first = all_logits ? 0 : T - 1, rows = T - first;
    K.layernorm(h, x + first * C, w_.out_norm, w_.out_norm_b, rows, C, cfg_.norm_eps);
    K.matmul(logits, h, w_.output, nullptr, rows, mm_scratch_.data());  // (rows, C) -> (rows, n_vocab)
}

}  // namespace pyinfer
