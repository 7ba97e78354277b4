// A sequence's context: the KV cache (with shared-prefix children, truncation, save/load), scratch buffers, and
// eval(), which runs one architecture's forward pass (forward_<arch>.cpp) over a batch of tokens and the LM head.
// One call runs every layer; threads come from OpenMP inside the kernels.
#include "model.h"

#include <algorithm>
#include <cmath>
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

Context::Context(const Context& parent, int64_t n_shared, int n_threads)
    : cfg_(parent.cfg_), w_(parent.w_), k_(parent.k_), n_ctx_(parent.n_ctx_), n_past_(n_shared), parent_(&parent),
      n_shared_(n_shared), n_threads_(1) {
    check_arg(parent.parent_ == nullptr, "a child context's parent must be a root context");
    check_arg(n_shared >= 0 && n_shared <= parent.n_past_,
              "n_shared " + std::to_string(n_shared) + " exceeds the parent's " + std::to_string(parent.n_past_) +
                  " cached positions");
    set_n_threads(n_threads);
    const size_t kv = (size_t)cfg_.n_layer * (n_ctx_ - n_shared) * kv_dim();
    k_cache_.assign(kv, 0.0f);
    v_cache_.assign(kv, 0.0f);
}

void Context::truncate(int64_t n) {
    check_arg(n >= n_shared_ && n <= n_past_, "truncate: n = " + std::to_string(n) + " must be in [" +
                                                  std::to_string(n_shared_) + ", " + std::to_string(n_past_) + "]");
    n_past_ = n;
}

void Context::copy_own_from(const Context& o) {
    check_arg(o.parent_ == parent_ && o.n_shared_ == n_shared_ && o.n_ctx_ == n_ctx_,
              "copy_own_from: contexts must share parent and n_shared");
    const int64_t rows = o.n_past_ - n_shared_, D = kv_dim();
    for (int64_t l = 0; l < cfg_.n_layer; l++) {
        std::memcpy((float*)layer_k(l), o.layer_k(l), rows * D * sizeof(float));
        std::memcpy((float*)layer_v(l), o.layer_v(l), rows * D * sizeof(float));
    }
    n_past_ = o.n_past_;
}

namespace {
struct StateHeader {
    char magic[4];  // "PYIS"
    uint32_t version;
    int64_t arch, n_layer, kv_dim, n_vocab, n_past;
};
}  // namespace

size_t Context::state_bytes() const {
    return sizeof(StateHeader) + 2 * (size_t)cfg_.n_layer * n_past_ * kv_dim() * sizeof(float);
}

void Context::save_state(uint8_t* dst) const {
    StateHeader h{{'P', 'Y', 'I', 'S'}, 1, (int64_t)cfg_.arch, cfg_.n_layer, kv_dim(), cfg_.n_vocab, n_past_};
    std::memcpy(dst, &h, sizeof h);
    float* out = (float*)(dst + sizeof h);
    const int64_t D = kv_dim();
    for (int kv = 0; kv < 2; kv++)
        for (int64_t l = 0; l < cfg_.n_layer; l++) {
            const float* own = kv ? layer_v(l) : layer_k(l);
            if (n_shared_) {
                const float* sh = kv ? parent_->layer_v(l) : parent_->layer_k(l);
                std::memcpy(out, sh, n_shared_ * D * sizeof(float));
                out += n_shared_ * D;
            }
            std::memcpy(out, own, (n_past_ - n_shared_) * D * sizeof(float));
            out += (n_past_ - n_shared_) * D;
        }
}

void Context::load_state(const uint8_t* src, size_t n) {
    check_arg(parent_ == nullptr, "load_state needs a root context");
    StateHeader h;
    check_arg(n >= sizeof h, "state is truncated (" + std::to_string(n) + " bytes)");
    std::memcpy(&h, src, sizeof h);
    check_arg(std::memcmp(h.magic, "PYIS", 4) == 0 && h.version == 1, "not a pyinfer state (bad magic or version)");
    check_arg(h.arch == (int64_t)cfg_.arch && h.n_layer == cfg_.n_layer && h.kv_dim == kv_dim() &&
                  h.n_vocab == cfg_.n_vocab,
              "the state was saved from a model of another shape");
    check_arg(h.n_past >= 0 && h.n_past <= n_ctx_, "the state holds " + std::to_string(h.n_past) +
                                                       " positions, more than this context's n_ctx = " +
                                                       std::to_string(n_ctx_));
    const int64_t D = kv_dim();
    const size_t need = sizeof h + 2 * (size_t)cfg_.n_layer * h.n_past * D * sizeof(float);
    check_arg(n == need, "state size " + std::to_string(n) + " bytes, expected " + std::to_string(need));
    const float* in = (const float*)(src + sizeof h);
    for (int kv = 0; kv < 2; kv++)
        for (int64_t l = 0; l < cfg_.n_layer; l++) {
            std::memcpy((float*)(kv ? layer_v(l) : layer_k(l)), in, h.n_past * D * sizeof(float));
            in += h.n_past * D;
        }
    n_past_ = h.n_past;
}

void Context::set_n_threads(int n) {
    cap_ = 0;  // scratch sizes may depend on the thread count (matmul_exact): sized again on the next eval
    if (n <= 0) n = max_threads_default();
#if !defined(_OPENMP)
    n = 1;
#endif
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
#if defined(_OPENMP)
    omp_set_num_threads(n_threads_);
#endif
    reserve(n);
    att_scratch_.resize((size_t)n_threads_ * (n_past_ + n));
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
