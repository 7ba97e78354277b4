// Gemma 3's forward pass: embeddings scaled by sqrt(n_embd); RMSNorm before and after each block (GGUF norm weights
// already hold Gemma's 1 + w); per-head q/k RMSNorm; rotate-half RoPE with one base for sliding-window (local)
// layers and another for global ones; local layers attend to the last n_swa positions; GeGLU (gelu-tanh gate) MLP.
// The LM head (with the optional final logit soft-cap) is Context::lm_head.
#include "model.h"

#include <cmath>
#include <cstring>

namespace pyinfer {

void Context::forward_gemma3(const int32_t* tokens, int64_t T) {
    const Kernels& K = *k_;
    const int64_t C = cfg_.n_embd, H = cfg_.n_head, Hkv = cfg_.n_head_kv, hd = cfg_.head_dim();
    const int64_t kv_dim = Hkv * hd, F = cfg_.n_ff;
    const int64_t n_rot = cfg_.n_rot ? cfg_.n_rot : hd;
    const float eps = cfg_.norm_eps;
    float *x = x_.data(), *h = h_.data(), *q = q_.data(), *att = att_.data(), *g = ff_.data(), *u = ff2_.data();

    const float embd_scale = std::sqrt((float)C);
    for (int64_t t = 0; t < T; t++) {  // x (T, C)
        K.get_row(x + t * C, w_.tok_embd, tokens[t]);
        for (int64_t i = 0; i < C; i++) x[t * C + i] *= embd_scale;
    }
    float* cs_global = rope_cs_.data();  // (T, n_rot/2, 2) each
    float* cs_local = rope_cs_swa_.data();
    rope_table(cs_global, T, n_rot, cfg_.rope_base);
    rope_table(cs_local, T, n_rot, cfg_.rope_base_swa);
    const float scale = cfg_.attn_scale > 0.0f ? cfg_.attn_scale : 1.0f / std::sqrt((float)hd);
    for (int64_t l = 0; l < cfg_.n_layer; l++) {
        const LayerWeights& L = w_.layers[l];
        const bool local = cfg_.layer_swa(l);
        float* k_new = kv_dst(0);  // (T, kv_dim) f32 scratch: kv_store puts it in the cache
        float* v_new = kv_dst(1);
        // attention block
        K.rmsnorm(h, x, L.attn_norm, T, C, eps);          // (T, C)
        matmul_shared(h, T, {{q, &L.attn_q, nullptr},         // (T, C) -> (T, H hd)
                             {k_new, &L.attn_k, nullptr},     // (T, C) -> (T, Hkv hd)
                             {v_new, &L.attn_v, nullptr}});   // (T, C) -> (T, Hkv hd)
        K.rmsnorm(q, q, L.attn_q_norm, T * H, hd, eps);    // per head, in place
        K.rmsnorm(k_new, k_new, L.attn_k_norm, T * Hkv, hd, eps);
        const float* cs = local ? cs_local : cs_global;
        K.rope(q, T, H, hd, H * hd, n_rot, cs, cfg_.rope_neox);
        K.rope(k_new, T, Hkv, hd, kv_dim, n_rot, cs, cfg_.rope_neox);
        kv_store(l, T);
        attend(l, att, q, T, scale, local ? cfg_.n_swa : 0);  // (T, H hd)
        matmul(h, att, L.attn_out, nullptr, T);      // (T, H hd) -> (T, C)
        K.rmsnorm(h, h, L.attn_post_norm, T, C, eps);
        K.add(x, x, h, T * C);
        // GeGLU MLP block
        K.rmsnorm(h, x, L.ffn_norm, T, C, eps);
        matmul_shared(h, T, {{g, &L.ffn_gate, nullptr}, {u, &L.ffn_up, nullptr}});  // (T, C) -> (T, F) twice
        K.gelu_mul(g, u, T * F);
        matmul(h, g, L.ffn_down, nullptr, T);  // (T, F) -> (T, C)
        K.rmsnorm(h, h, L.ffn_post_norm, T, C, eps);
        K.add(x, x, h, T * C);
    }
}

}  // namespace pyinfer
