// GPT-2's forward pass: learned positions, pre-LayerNorm blocks, fused QKV, GELU-tanh MLP (the LM head is
// Context::lm_head).  Writes this batch's K/V into the cache; x_ holds the residual stream afterwards.
#include "model.h"

#include <cmath>
#include <cstring>

namespace pyinfer {

void Context::forward_gpt2(const int32_t* tokens, int64_t T) {
    const Kernels& K = *k_;
    const int64_t C = cfg_.n_embd, hd = cfg_.head_dim();
    const int64_t kv_dim = cfg_.n_head_kv * hd;
    float *x = x_.data(), *h = h_.data(), *qkv = qkv_.data(), *q = q_.data(), *att = att_.data(), *ff = ff_.data();

    // token + position embeddings: x (T, C)
    for (int64_t t = 0; t < T; t++) {
        K.get_row(x + t * C, w_.tok_embd, tokens[t]);
        K.get_row(h, w_.pos_embd, n_past_ + t);
        K.add(x + t * C, x + t * C, h, C);
    }
    const float scale = 1.0f / std::sqrt((float)hd);
    for (int64_t l = 0; l < cfg_.n_layer; l++) {
        const LayerWeights& L = w_.layers[l];
        // attention block
        K.layernorm(h, x, L.attn_norm, L.attn_norm_b, T, C, cfg_.norm_eps);  // (T, C)
        matmul(qkv, h, L.attn_qkv, L.attn_qkv_b, T);                   // (T, C) -> (T, 3C)
        for (int64_t t = 0; t < T; t++) std::memcpy(q + t * C, qkv + t * 3 * C, C * sizeof(float));  // (T, C)
        kv_store(l, T, qkv + C, qkv + C + kv_dim, 3 * C);  // k, v: the rest of each qkv row
        attend(l, att, q, T, scale, 0);
        matmul(h, att, L.attn_out, L.attn_out_b, T);  // (T, C) -> (T, C)
        K.add(x, x, h, T * C);
        // MLP block
        K.layernorm(h, x, L.ffn_norm, L.ffn_norm_b, T, C, cfg_.norm_eps);
        matmul(ff, h, L.ffn_up, L.ffn_up_b, T);  // (T, C) -> (T, n_ff)
        K.gelu_tanh(ff, T * cfg_.n_ff);
        matmul(h, ff, L.ffn_down, L.ffn_down_b, T);  // (T, n_ff) -> (T, C)
        K.add(x, x, h, T * C);
    }
}

}  // namespace pyinfer
