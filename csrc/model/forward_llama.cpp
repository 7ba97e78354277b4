// The Llama family's forward pass: RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP; Qwen 2's q/k/v
// biases and Qwen 3's per-head q/k RMSNorm are optional tensors of the same pass.  The LM head is Context::lm_head.
#include "model.h"

#include <cmath>
#include <cstring>

namespace pyinfer {

void Context::forward_llama(const int32_t* tokens, int64_t T) {
    const Kernels& K = *k_;
    const int64_t C = cfg_.n_embd, H = cfg_.n_head, Hkv = cfg_.n_head_kv, hd = cfg_.head_dim();
    const int64_t q_dim = H * hd, kv_dim = Hkv * hd, F = cfg_.n_ff;
    const int64_t n_rot = cfg_.n_rot ? cfg_.n_rot : hd;
    float *x = x_.data(), *h = h_.data(), *q = q_.data(), *att = att_.data(), *g = ff_.data(), *u = ff2_.data();

    for (int64_t t = 0; t < T; t++) K.get_row(x + t * C, w_.tok_embd, tokens[t]);  // x (T, C)
    float* cs = rope_cs_.data();  // (T, n_rot/2, 2), shared by every layer
    rope_table(cs, T, n_rot, cfg_.rope_base);
    const float scale = 1.0f / std::sqrt((float)hd);
    for (int64_t l = 0; l < cfg_.n_layer; l++) {
        const LayerWeights& L = w_.layers[l];
        float* k_new = kv_dst(0);  // (T, kv_dim) f32 scratch: kv_store puts it in the cache
        float* v_new = kv_dst(1);
        // attention block
        K.rmsnorm(h, x, L.attn_norm, T, C, cfg_.norm_eps);  // (T, C)
        matmul_shared(h, T, {{q, &L.attn_q, L.attn_q_b},           // (T, C) -> (T, H hd)
                             {k_new, &L.attn_k, L.attn_k_b},       // (T, C) -> (T, Hkv hd)
                             {v_new, &L.attn_v, L.attn_v_b}});     // (T, C) -> (T, Hkv hd)
        if (L.attn_q_norm) K.rmsnorm(q, q, L.attn_q_norm, T * H, hd, cfg_.norm_eps);  // qwen3: per head, in place
        if (L.attn_k_norm) K.rmsnorm(k_new, k_new, L.attn_k_norm, T * Hkv, hd, cfg_.norm_eps);
        K.rope(q, T, H, hd, q_dim, n_rot, cs, cfg_.rope_neox);
        K.rope(k_new, T, Hkv, hd, kv_dim, n_rot, cs, cfg_.rope_neox);
        kv_store(l, T);
        attend(l, att, q, T, scale, 0);  // (T, H hd)
        matmul(h, att, L.attn_out, L.attn_out_b, T);  // (T, H hd) -> (T, C)
        K.add(x, x, h, T * C);
        // SwiGLU MLP block
        K.rmsnorm(h, x, L.ffn_norm, T, C, cfg_.norm_eps);
        matmul_shared(h, T, {{g, &L.ffn_gate, nullptr}, {u, &L.ffn_up, nullptr}});  // (T, C) -> (T, F) twice
        K.silu_mul(g, u, T * F);
        matmul(h, g, L.ffn_down, nullptr, T);  // (T, F) -> (T, C)
        K.add(x, x, h, T * C);
    }
}

}  // namespace pyinfer
