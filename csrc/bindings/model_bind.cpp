// Binding of the forward pass: pyinfer._ext.Context owns a KV cache over weights that Python keeps alive
// (memory-mapped arrays, never copied here).  Every tensor is checked by name and shape up front; all problems
// are reported in one ValueError.  eval() releases the GIL for the whole step.
#include <mutex>
#include <vector>

#include "../model/model.h"
#include "common_bind.h"

namespace pyinfer {

namespace {

struct TensorBinder {
    py::dict tensors;
    std::vector<std::string> problems;

    py::object find(const std::string& name, bool required) {
        if (tensors.contains(name)) return tensors[py::str(name)];
        if (required) problems.push_back("missing tensor '" + name + "'");
        return py::none();
    }
    const float* vec(const std::string& name, int64_t n, bool required = true) {
        py::object o = find(name, required);
        if (o.is_none()) return nullptr;
        py::array a = o.cast<py::array>();
        if (!a.dtype().is(py::dtype::of<float>()) || a.ndim() != 1 || a.shape(0) != n ||
            !(a.flags() & py::array::c_style)) {
            problems.push_back("tensor '" + name + "': expected float32 of shape (" + std::to_string(n) + ",), got " +
                               std::string(py::str(a.dtype())) + " " + shape_str(a));
            return nullptr;
        }
        return static_cast<const float*>(a.data());
    }
    Tensor mat(const std::string& name, int64_t rows, int64_t cols, bool required = true) {
        py::object o = find(name, required);
        if (o.is_none()) return Tensor();
        try {
            Tensor t = tensor_from_object(o, "tensor '" + name + "'");
            if (t.n_rows != rows || t.n_cols != cols) {
                problems.push_back("tensor '" + name + "': expected shape (" + std::to_string(rows) + ", " +
                                   std::to_string(cols) + "), got (" + std::to_string(t.n_rows) + ", " +
                                   std::to_string(t.n_cols) + ")");
                return Tensor();
            }
            return t;
        } catch (const std::invalid_argument& e) {
            problems.push_back(e.what());
            return Tensor();
        }
    }
};

int64_t get_int(const py::dict& hp, const char* key) {
    check_arg(hp.contains(key), std::string("hyperparameter '") + key + "' is missing");
    return hp[key].cast<int64_t>();
}

}  // namespace

class PyContext {
public:
    PyContext(const std::string& arch, const py::dict& hp, const py::dict& tensors, int64_t n_ctx, int n_threads,
              const std::string& kv_type)
        : tensors_(tensors) {
        check_arg(kv_type == "f16" || kv_type == "f32", "kv_type must be 'f16' or 'f32', got '" + kv_type + "'");
        if (arch == "gpt2")
            cfg_.arch = Arch::GPT2;
        else if (arch == "llama" || arch == "qwen2" || arch == "qwen3")  // Qwen: optional biases / q-k norms
            cfg_.arch = Arch::LLAMA;
        else if (arch == "gemma3")
            cfg_.arch = Arch::GEMMA3;
        else
            throw std::invalid_argument("unsupported architecture '" + arch +
                                        "' (supported: gpt2, llama, qwen2, qwen3, gemma3)");
        cfg_.n_vocab = get_int(hp, "n_vocab");
        cfg_.n_ctx_train = get_int(hp, "n_ctx_train");
        cfg_.n_embd = get_int(hp, "n_embd");
        cfg_.n_head = get_int(hp, "n_head");
        cfg_.n_head_kv = hp.contains("n_head_kv") ? get_int(hp, "n_head_kv") : cfg_.n_head;
        cfg_.n_layer = get_int(hp, "n_layer");
        cfg_.n_ff = get_int(hp, "n_ff");
        cfg_.n_embd_head = hp.contains("head_dim") ? get_int(hp, "head_dim") : 0;
        cfg_.norm_eps = hp.contains("norm_eps") ? hp["norm_eps"].cast<float>() : 1e-5f;
        cfg_.rope_base = hp.contains("rope_base") ? hp["rope_base"].cast<float>() : 10000.0f;
        cfg_.n_rot = hp.contains("n_rot") ? get_int(hp, "n_rot") : 0;
        cfg_.rope_neox = hp.contains("rope_neox") ? hp["rope_neox"].cast<bool>() : false;
        cfg_.n_swa = hp.contains("n_swa") ? get_int(hp, "n_swa") : 0;
        if (hp.contains("swa_layers"))
            for (py::handle v : hp["swa_layers"].cast<py::sequence>()) cfg_.swa.push_back(v.cast<bool>());
        cfg_.rope_base_swa = hp.contains("rope_base_swa") ? hp["rope_base_swa"].cast<float>() : 10000.0f;
        cfg_.attn_scale = hp.contains("attn_scale") ? hp["attn_scale"].cast<float>() : 0.0f;
        cfg_.logit_softcap = hp.contains("logit_softcap") ? hp["logit_softcap"].cast<float>() : 0.0f;
        cfg_.exact = hp.contains("exact") ? hp["exact"].cast<bool>() : false;
        check_arg(cfg_.n_swa >= 0 && cfg_.attn_scale >= 0.0f && cfg_.logit_softcap >= 0.0f && cfg_.rope_base_swa > 0.0f,
                  "n_swa, attn_scale and logit_softcap must be >= 0, rope_base_swa > 0");
        check_arg(cfg_.swa.empty() || (int64_t)cfg_.swa.size() == get_int(hp, "n_layer"),
                  "swa_layers must list one flag per layer");
        check_arg(cfg_.n_vocab > 0 && cfg_.n_embd > 0 && cfg_.n_head > 0 && cfg_.n_head_kv > 0 && cfg_.n_layer > 0 &&
                      cfg_.n_ff > 0 && cfg_.n_ctx_train > 0 && cfg_.n_embd_head >= 0,
                  "hyperparameters must be positive");
        check_arg(cfg_.n_embd_head > 0 || cfg_.n_embd % cfg_.n_head == 0, "n_embd must be a multiple of n_head");
        check_arg(cfg_.n_head % cfg_.n_head_kv == 0, "n_head must be a multiple of n_head_kv");
        const int64_t hd = cfg_.head_dim();
        check_arg(cfg_.n_rot >= 0 && cfg_.n_rot <= hd && cfg_.n_rot % 2 == 0, "n_rot must be even and <= head_dim");
        if (cfg_.arch == Arch::GPT2)
            check_arg(cfg_.n_head_kv == cfg_.n_head && hd * cfg_.n_head == cfg_.n_embd,
                      "gpt2 has n_head_kv == n_head and head_dim * n_head == n_embd");

        const int64_t C = cfg_.n_embd, V = cfg_.n_vocab, F = cfg_.n_ff;
        const int64_t q_dim = cfg_.n_head * hd, kv_dim = cfg_.n_head_kv * hd;
        const bool gpt2 = cfg_.arch == Arch::GPT2, gemma = cfg_.arch == Arch::GEMMA3;
        TensorBinder b{tensors, {}};
        w_.tok_embd = b.mat("token_embd.weight", V, C);
        if (gpt2) w_.pos_embd = b.mat("position_embd.weight", cfg_.n_ctx_train, C);
        w_.layers.resize(cfg_.n_layer);
        for (int64_t i = 0; i < cfg_.n_layer; i++) {
            const std::string p = "blk." + std::to_string(i) + ".";
            LayerWeights& L = w_.layers[i];
            L.attn_norm = b.vec(p + "attn_norm.weight", C);
            L.ffn_norm = b.vec(p + "ffn_norm.weight", C);
            L.attn_out = b.mat(p + "attn_output.weight", C, q_dim);
            L.ffn_up = b.mat(p + "ffn_up.weight", F, C);
            L.ffn_down = b.mat(p + "ffn_down.weight", C, F);
            if (gpt2) {
                L.attn_norm_b = b.vec(p + "attn_norm.bias", C);
                L.ffn_norm_b = b.vec(p + "ffn_norm.bias", C);
                L.attn_qkv = b.mat(p + "attn_qkv.weight", 3 * C, C);
                L.attn_qkv_b = b.vec(p + "attn_qkv.bias", 3 * C);
                L.attn_out_b = b.vec(p + "attn_output.bias", C);
                L.ffn_up_b = b.vec(p + "ffn_up.bias", F);
                L.ffn_down_b = b.vec(p + "ffn_down.bias", C);
            } else {
                L.attn_q = b.mat(p + "attn_q.weight", q_dim, C);
                L.attn_k = b.mat(p + "attn_k.weight", kv_dim, C);
                L.attn_v = b.mat(p + "attn_v.weight", kv_dim, C);
                if (!gemma) {
                    L.attn_q_b = b.vec(p + "attn_q.bias", q_dim, /*required=*/false);
                    L.attn_k_b = b.vec(p + "attn_k.bias", kv_dim, false);
                    L.attn_v_b = b.vec(p + "attn_v.bias", kv_dim, false);
                    L.attn_out_b = b.vec(p + "attn_output.bias", C, false);
                }
                // per-head q/k norms: required by gemma3, optional (qwen3) otherwise, but both or neither
                L.attn_q_norm = b.vec(p + "attn_q_norm.weight", hd, gemma);
                L.attn_k_norm = b.vec(p + "attn_k_norm.weight", hd, gemma || L.attn_q_norm);
                if (gemma) {
                    L.attn_post_norm = b.vec(p + "post_attention_norm.weight", C);
                    L.ffn_post_norm = b.vec(p + "post_ffw_norm.weight", C);
                }
                L.ffn_gate = b.mat(p + "ffn_gate.weight", F, C);
            }
        }
        w_.out_norm = b.vec("output_norm.weight", C);
        if (gpt2) w_.out_norm_b = b.vec("output_norm.bias", C);
        w_.output = b.mat("output.weight", V, C, /*required=*/false);
        if (w_.output.empty()) w_.output = w_.tok_embd;  // tied LM head
        if (!b.problems.empty()) {
            std::string msg = "the model's tensors do not match its config (" + std::to_string(b.problems.size()) +
                              " problem" + (b.problems.size() > 1 ? "s" : "") + "):";
            for (auto& p : b.problems) msg += "\n  - " + p;
            throw std::invalid_argument(msg);
        }
        ctx_.reset(new Context(cfg_, w_, n_ctx, n_threads, kv_type == "f16"));
    }

    // tokens (n,) int32 -> logits (n, n_vocab) if all_logits else (1, n_vocab)
    py::array_t<float> eval(const py::array& tokens, bool all_logits) {
        checked<int32_t>(tokens, "tokens", 1);
        const int64_t n = tokens.shape(0);
        check_arg(n > 0, "eval needs at least one token");
        py::array_t<float> out({(py::ssize_t)(all_logits ? n : 1), (py::ssize_t)cfg_.n_vocab});
        float* o = out.mutable_data();
        const int32_t* tp = static_cast<const int32_t*>(tokens.data());
        {
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(mu_);
            ctx_->eval(tp, n, all_logits, o);
        }
        return out;
    }

    // A child sharing this context's first n_shared cached positions (kept alive by the child's Python object).
    PyContext(PyContext& parent, int64_t n_shared, int n_threads)
        : tensors_(parent.tensors_), cfg_(parent.cfg_), w_(parent.w_) {
        ctx_.reset(new Context(*parent.ctx_, n_shared, n_threads));
    }

    Context& ctx() { return *ctx_; }
    std::mutex& mu() { return mu_; }

private:
    py::dict tensors_;  // keeps the weight arrays (and their memory maps) alive
    ModelConfig cfg_;
    ModelWeights w_;
    std::unique_ptr<Context> ctx_;
    std::mutex mu_;
};

void register_model(py::module_& m) {
    py::class_<PyContext>(m, "Context", py::dynamic_attr(), "a model's weights bound to one sequence's KV cache")
        .def(py::init<const std::string&, const py::dict&, const py::dict&, int64_t, int, const std::string&>(),
             py::arg("arch"), py::arg("hparams"), py::arg("tensors"), py::arg("n_ctx"), py::arg("n_threads") = 0,
             py::arg("kv_type") = "f16")
        .def("eval", &PyContext::eval, py::arg("tokens"), py::arg("all_logits") = false,
             "run tokens (int32) after the cached ones; logits (n or 1, n_vocab) float32")
        .def("reset", [](PyContext& c) { c.ctx().reset(); })
        .def("truncate", [](PyContext& c, int64_t n) { c.ctx().truncate(n); }, py::arg("n"),
             "keep the first n cached positions")
        .def(
            "fork_child",
            [](py::object self, int64_t n_shared, int n_threads) {
                PyContext& parent = self.cast<PyContext&>();
                py::object child = py::cast(new PyContext(parent, n_shared, n_threads), py::return_value_policy::take_ownership);
                child.attr("_parent") = self;  // the parent's cache must outlive the child
                return child;
            },
            py::arg("n_shared"), py::arg("n_threads") = 0,
            "a new sequence reading this one's first n_shared positions in place (for beams)")
        .def("copy_own_from", [](PyContext& c, PyContext& o) { c.ctx().copy_own_from(o.ctx()); }, py::arg("other"))
        .def("get_state",
             [](PyContext& c) {
                 std::string buf(c.ctx().state_bytes(), '\0');
                 {
                     py::gil_scoped_release nogil;
                     std::lock_guard<std::mutex> lock(c.mu());
                     c.ctx().save_state(reinterpret_cast<uint8_t*>(&buf[0]));
                 }
                 return py::bytes(buf);
             })
        .def("set_state",
             [](PyContext& c, const py::bytes& b) {
                 std::string buf = b;
                 py::gil_scoped_release nogil;
                 std::lock_guard<std::mutex> lock(c.mu());
                 c.ctx().load_state(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
             })
        .def_property_readonly("n_shared", [](PyContext& c) { return c.ctx().n_shared(); })
        .def_property_readonly("n_past", [](PyContext& c) { return c.ctx().n_past(); })
        .def_property_readonly("n_ctx", [](PyContext& c) { return c.ctx().n_ctx(); })
        .def_property_readonly("kv_type", [](PyContext& c) { return std::string(c.ctx().kv_f16() ? "f16" : "f32"); })
        .def_property(
            "n_threads", [](PyContext& c) { return c.ctx().n_threads(); },
            [](PyContext& c, int n) { c.ctx().set_n_threads(n); });
}

}  // namespace pyinfer
