// A sequence's context: the KV cache (with shared-prefix children, truncation, save/load), scratch buffers, and
// eval(), which runs one architecture's forward pass (forward_<arch>.cpp) over a batch of tokens and the LM head.
// One call runs every layer; threads come from the pool (threads.h) inside the kernels.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "../threads.h"

namespace pyinfer {

Context::Context(const ModelConfig& cfg, const ModelWeights& w, int64_t n_ctx, int n_threads, bool kv_f16)
    : cfg_(cfg), w_(w), k_(&kernels()), n_ctx_(n_ctx), n_threads_(1), kv_f16_(kv_f16) {
    check_arg(n_ctx > 0, "n_ctx must be positive");
    if (cfg.arch == Arch::GPT2)
        check_arg(n_ctx <= cfg.n_ctx_train,
                  "n_ctx " + std::to_string(n_ctx) + " exceeds the model's " + std::to_string(cfg.n_ctx_train) +
                      " learned positions");
    set_n_threads(n_threads);
    k_cache_.assign(cfg.n_layer * layer_bytes(), 0);
    v_cache_.assign(cfg.n_layer * layer_bytes(), 0);
}

Context::Context(const Context& parent, int64_t n_shared, int n_threads)
    : cfg_(parent.cfg_), w_(parent.w_), k_(parent.k_), n_ctx_(parent.n_ctx_), n_past_(n_shared), parent_(&parent),
      n_shared_(n_shared), n_threads_(1), kv_f16_(parent.kv_f16_) {
    check_arg(parent.parent_ == nullptr, "a child context's parent must be a root context");
    check_arg(n_shared >= 0 && n_shared <= parent.n_past_,
              "n_shared " + std::to_string(n_shared) + " exceeds the parent's " + std::to_string(parent.n_past_) +
                  " cached positions");
    set_n_threads(n_threads);
    k_cache_.assign(cfg_.n_layer * layer_bytes(), 0);
    v_cache_.assign(cfg_.n_layer * layer_bytes(), 0);
}

float* Context::kv_dst(int which) { return which ? v_new_.data() : k_new_.data(); }

void Context::kv_store(int64_t l, int64_t T) { kv_store(l, T, kv_dst(0), kv_dst(1), kv_dim()); }

void Context::kv_store(int64_t l, int64_t T, const float* k, const float* v, int64_t ld) {
    const int64_t Hkv = cfg_.n_head_kv, hd = cfg_.head_dim(), r0 = n_past_ - n_shared_;
    auto rows = [&](int64_t i0, int64_t i1) {  // item i: (which, head, token), token fastest
        for (int64_t i = i0; i < i1; i++) {
            const int64_t which = i / (Hkv * T), h = i / T % Hkv, t = i % T;
            const float* src = (which ? v : k) + t * ld + h * hd;
            uint8_t* dst = (uint8_t*)(which ? layer_v(l) : layer_k(l)) + kv_offset(r0 + t, h);
            if (kv_f16_)
                k_->to_f16((fp16_t*)dst, src, hd);
            else
                std::memcpy(dst, src, hd * sizeof(float));
        }
    };
    if (T * kv_dim() < PAR_MIN_ELEMS) return rows(0, 2 * Hkv * T);  // decode: not worth waking the threads
    parallel_for(2 * Hkv * T, [&](int64_t i0, int64_t i1, int) { rows(i0, i1); });
}

void Context::attend(int64_t l, float* out, const float* q, int64_t T, float scale, int64_t n_window) {
    const int64_t H = cfg_.n_head, Hkv = cfg_.n_head_kv, hd = cfg_.head_dim();
    const int64_t hs = (n_ctx_ - n_shared_) * hd, shs = n_ctx_ * hd;  // head strides: own rows, the root parent's
    const uint8_t* ks = parent_ ? parent_->layer_k(l) : nullptr;  // shared prefix rows [0, n_shared)
    const uint8_t* vs = parent_ ? parent_->layer_v(l) : nullptr;
    if (kv_f16_)
        k_->attention_f16(out, q, (const fp16_t*)ks, (const fp16_t*)vs, n_shared_, (const fp16_t*)layer_k(l),
                          (const fp16_t*)layer_v(l), att_scratch_.data(), T, n_past_, H, Hkv, hd, hd, hs, shs, scale,
                          n_window);
    else
        k_->attention(out, q, (const float*)ks, (const float*)vs, n_shared_, (const float*)layer_k(l),
                      (const float*)layer_v(l), att_scratch_.data(), T, n_past_, H, Hkv, hd, hd, hs, shs, scale,
                      n_window);
}

void Context::truncate(int64_t n) {
    check_arg(n >= n_shared_ && n <= n_past_, "truncate: n = " + std::to_string(n) + " must be in [" +
                                                  std::to_string(n_shared_) + ", " + std::to_string(n_past_) + "]");
    n_past_ = n;
}

void Context::copy_own_from(const Context& o) {
    check_arg(o.parent_ == parent_ && o.n_shared_ == n_shared_ && o.n_ctx_ == n_ctx_,
              "copy_own_from: contexts must share parent and n_shared");
    const size_t rows = o.n_past_ - n_shared_;
    for (int64_t l = 0; l < cfg_.n_layer; l++)
        for (int64_t h = 0; h < cfg_.n_head_kv; h++) {  // each head's rows are contiguous
            const size_t at = kv_offset(0, h), n = rows * head_row_bytes();
            std::memcpy((uint8_t*)layer_k(l) + at, o.layer_k(l) + at, n);
            std::memcpy((uint8_t*)layer_v(l) + at, o.layer_v(l) + at, n);
        }
    n_past_ = o.n_past_;
}

namespace {
struct StateHeader {
    char magic[4];  // "PYIS"
    uint32_t version;
    int64_t arch, n_layer, kv_dim, n_vocab, n_past;
    int64_t kv_elt;  // bytes per cached value: 2 (f16) or 4 (f32); version 2 on
};
constexpr uint32_t STATE_VERSION = 2;
}  // namespace

size_t Context::state_bytes() const {
    return sizeof(StateHeader) + 2 * (size_t)cfg_.n_layer * n_past_ * kv_dim() * kv_elt();
}

void Context::save_state(uint8_t* dst) const {
    StateHeader h{{'P', 'Y', 'I', 'S'}, STATE_VERSION, (int64_t)cfg_.arch, cfg_.n_layer, kv_dim(), cfg_.n_vocab,
                  n_past_, (int64_t)kv_elt()};
    std::memcpy(dst, &h, sizeof h);
    uint8_t* out = dst + sizeof h;
    // position-major rows (n_past, kv_dim) per layer, K then V: the cache's heads interleaved
    const size_t hb = head_row_bytes();
    for (int kv = 0; kv < 2; kv++)
        for (int64_t l = 0; l < cfg_.n_layer; l++)
            for (int64_t p = 0; p < n_past_; p++)
                for (int64_t h = 0; h < cfg_.n_head_kv; h++, out += hb) {
                    const Context& c = p < n_shared_ ? *parent_ : *this;
                    const uint8_t* layer = kv ? c.layer_v(l) : c.layer_k(l);
                    std::memcpy(out, layer + c.kv_offset(p < n_shared_ ? p : p - n_shared_, h), hb);
                }
}

void Context::load_state(const uint8_t* src, size_t n) {
    check_arg(parent_ == nullptr, "load_state needs a root context");
    StateHeader h;
    check_arg(n >= sizeof h, "state is truncated (" + std::to_string(n) + " bytes)");
    std::memcpy(&h, src, sizeof h);
    check_arg(std::memcmp(h.magic, "PYIS", 4) == 0, "not a pyinfer state (bad magic)");
    check_arg(h.version == STATE_VERSION, "the state has format version " + std::to_string(h.version) +
                                              ", this pyinfer reads version " + std::to_string(STATE_VERSION) +
                                              "; save it again with this version");
    check_arg(h.kv_elt == (int64_t)kv_elt(), std::string("the state was saved from a ") +
                                                 (h.kv_elt == 2 ? "f16" : "f32") + " KV cache, this context's is " +
                                                 (kv_f16_ ? "f16" : "f32") + "; load it with the same kv_type");
    check_arg(h.arch == (int64_t)cfg_.arch && h.n_layer == cfg_.n_layer && h.kv_dim == kv_dim() &&
                  h.n_vocab == cfg_.n_vocab,
              "the state was saved from a model of another shape");
    check_arg(h.n_past >= 0 && h.n_past <= n_ctx_, "the state holds " + std::to_string(h.n_past) +
                                                       " positions, more than this context's n_ctx = " +
                                                       std::to_string(n_ctx_));
    const size_t row = kv_dim() * kv_elt();
    const size_t need = sizeof h + 2 * (size_t)cfg_.n_layer * h.n_past * row;
    check_arg(n == need, "state size " + std::to_string(n) + " bytes, expected " + std::to_string(need));
    const uint8_t* in = src + sizeof h;
    const size_t hb = head_row_bytes();
    for (int kv = 0; kv < 2; kv++)
        for (int64_t l = 0; l < cfg_.n_layer; l++)
            for (int64_t p = 0; p < h.n_past; p++)
                for (int64_t hh = 0; hh < cfg_.n_head_kv; hh++, in += hb)
                    std::memcpy((uint8_t*)(kv ? layer_v(l) : layer_k(l)) + kv_offset(p, hh), in, hb);
    n_past_ = h.n_past;
}

void Context::set_n_threads(int n) {
    cap_ = 0;  // scratch sizes may depend on the thread count (matmul_exact): sized again on the next eval
    if (n <= 0) n = default_threads();
    n_threads_ = n;
}

void Context::reserve(int64_t n) {
    if (n <= cap_) return;
    const int64_t C = cfg_.n_embd, F = cfg_.n_ff, Hd = cfg_.n_head * cfg_.head_dim();
    x_.resize(n * C);
    h_.resize(n * std::max(C, Hd));
    qkv_.resize(cfg_.arch == Arch::GPT2 ? n * 3 * C : 0);
    q_.resize(n * Hd);
    att_.resize(n * Hd);
    ff_.resize(n * F);
    ff2_.resize(cfg_.arch != Arch::GPT2 ? n * F : 0);
    rope_cs_.resize(cfg_.arch != Arch::GPT2 ? n * cfg_.head_dim() : 0);
    rope_cs_swa_.resize(cfg_.arch == Arch::GEMMA3 ? n * cfg_.head_dim() : 0);
    k_new_.resize(cfg_.arch != Arch::GPT2 ? n * kv_dim() : 0);  // GPT-2 stores k, v from its qkv rows
    v_new_.resize(cfg_.arch != Arch::GPT2 ? n * kv_dim() : 0);
    size_t q = 0;
    auto need = [&](const Tensor& t) {
        q = std::max(q, cfg_.exact ? matmul_exact_scratch_bytes(t, n_threads_) : matmul_scratch_bytes(t, n));
    };
    for (const LayerWeights& L : w_.layers)
        for (const Tensor* t : {&L.attn_qkv, &L.attn_q, &L.attn_k, &L.attn_v, &L.attn_out, &L.ffn_gate, &L.ffn_up,
                                &L.ffn_down})
            if (!t->empty()) need(*t);
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
    set_num_threads(n_threads_);
    reserve(n);
    att_scratch_.resize((size_t)n_threads_ * ATTN_QUERY_BLOCK * (n_past_ + n));
    switch (cfg_.arch) {
        case Arch::GPT2: forward_gpt2(tokens, n); break;
        case Arch::LLAMA: forward_llama(tokens, n); break;
        case Arch::GEMMA3: forward_gemma3(tokens, n); break;
    }
    lm_head(n, all_logits, logits);
    n_past_ += n;
}

// final norm and LM head over the rows we return: x (T, C) -> logits (rows, n_vocab)
void Context::lm_head(int64_t T, bool all_logits, float* logits) {
    const Kernels& K = *k_;
    const int64_t C = cfg_.n_embd, first = all_logits ? 0 : T - 1, rows = T - first;
    if (cfg_.arch == Arch::GPT2)
        K.layernorm(h_.data(), x_.data() + first * C, w_.out_norm, w_.out_norm_b, rows, C, cfg_.norm_eps);
    else  // llama, gemma3 (whose GGUF norm weights already hold Gemma's 1 + w)
        K.rmsnorm(h_.data(), x_.data() + first * C, w_.out_norm, rows, C, cfg_.norm_eps);
    matmul(logits, h_.data(), w_.output, nullptr, rows);
    if (cfg_.logit_softcap > 0.0f) {  // gemma: softcap * tanh(logits / softcap)
        const float c = cfg_.logit_softcap;
        for (int64_t i = 0; i < rows * cfg_.n_vocab; i++) logits[i] = c * std::tanh(logits[i] / c);
    }
}

// cos/sin of pos * base^(-2i/n_rot) for the new positions, shared by every layer: cs (T, n_rot/2, 2)
void Context::rope_table(float* cs, int64_t T, int64_t n_rot, float base) const {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < n_rot / 2; i++) {
            const double theta = (double)(n_past_ + t) * std::pow((double)base, -2.0 * i / (double)n_rot);
            cs[(t * (n_rot / 2) + i) * 2] = (float)std::cos(theta);
            cs[(t * (n_rot / 2) + i) * 2 + 1] = (float)std::sin(theta);
        }
}

}  // namespace pyinfer
