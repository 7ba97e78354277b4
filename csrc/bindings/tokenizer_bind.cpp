// The byte-level BPE vocabulary for pyinfer/tokenizer.py (BpeVocab, csrc/tokenizer/bpe.h: built at load, the merge
// loop per pre-token), and the ids of every merge "a b".  A GGUF vocabulary holds 50k-260k tokens and as many merges:
// Python loops over them took ~110 ms of the default model's ~300 ms load, Python dicts of them ~15 MB.  Whatever is
// irregular in the merges is left to the Python code (None here), which names the problem.
#include "common_bind.h"

#include <cstdio>
#include <memory>

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../tokenizer/bpe.h"

namespace pyinfer {

// The UTF-8 of a str, or false (not a str, or a lone surrogate): the bytes live as long as the str does.
static bool utf8_of(PyObject* o, std::string_view* out) {
    if (!PyUnicode_Check(o)) return false;
    Py_ssize_t n;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) {
        PyErr_Clear();
        return false;
    }
    *out = std::string_view(s, (size_t)n);
    return true;
}

// (a, b, ab), int64 [len(merges)] each: the ids of each merge's two tokens and of their concatenation, -1 for a text
// not in tokens (a text that repeats maps to its first id).  None where a token is neither a str nor None, or a merge
// is not a str with exactly one space.
static py::object merge_ids(const py::list& tokens, const py::list& merges) {
    std::unordered_map<std::string_view, int64_t> id;
    id.reserve(tokens.size() * 2);
    for (size_t i = 0; i < tokens.size(); i++) {
        PyObject* t = PyList_GET_ITEM(tokens.ptr(), (Py_ssize_t)i);
        std::string_view s;
        if (t == Py_None) continue;
        if (!utf8_of(t, &s)) return py::none();
        id.emplace(s, (int64_t)i);  // the first id of a text stays
    }
    const py::ssize_t n = (py::ssize_t)merges.size();
    py::array_t<int64_t> a(n), b(n), ab(n);
    int64_t *pa = a.mutable_data(), *pb = b.mutable_data(), *pab = ab.mutable_data();
    auto find = [&](std::string_view s) {
        const auto it = id.find(s);
        return it == id.end() ? (int64_t)-1 : it->second;
    };
    std::string cat;
    for (py::ssize_t r = 0; r < n; r++) {
        std::string_view m;
        if (!utf8_of(PyList_GET_ITEM(merges.ptr(), r), &m)) return py::none();
        const size_t sp = m.find(' ');
        if (sp == std::string_view::npos || m.find(' ', sp + 1) != std::string_view::npos) return py::none();
        const std::string_view x = m.substr(0, sp), y = m.substr(sp + 1);
        cat.assign(x);
        cat.append(y);
        pa[r] = find(x);
        pb[r] = find(y);
        pab[r] = find(cat);
    }
    return py::make_tuple(a, b, ab);
}

static void append_utf8(std::string& s, Py_UCS4 c) {
    if (c < 0x80) {
        s += (char)c;
    } else if (c < 0x800) {
        s += (char)(0xC0 | c >> 6), s += (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        s += (char)(0xE0 | c >> 12), s += (char)(0x80 | (c >> 6 & 0x3F)), s += (char)(0x80 | (c & 0x3F));
    } else {
        s += (char)(0xF0 | c >> 18), s += (char)(0x80 | (c >> 12 & 0x3F)), s += (char)(0x80 | (c >> 6 & 0x3F));
        s += (char)(0x80 | (c & 0x3F));
    }
}

// BPETokenizer's vocabulary: tokens [str or None] (None: an unused id), each char through table (int32, code point ->
// byte, -1 outside the byte-level alphabet, where a char stands for its own UTF-8); the merges as the ids of their
// two tokens and of the merged one (int64 [n_merges] each, in rank order); contents {id: bytes} for the tokens that
// decode to their content (special, user-defined); whole: index the tokens' bytes for whole_id (ignore_merges).
static std::unique_ptr<BpeVocab> make_vocab(const py::list& tokens, const py::array& table, const py::array& a,
                                            const py::array& b, const py::array& ab, const py::dict& contents,
                                            bool whole) {
    checked<int32_t>(table, "table", 1);
    for (const py::array* x : {&a, &b, &ab}) checked<int64_t>(*x, "merge ids", 1);
    check_arg(a.shape(0) == b.shape(0) && a.shape(0) == ab.shape(0), "merge ids: the three arrays differ in length");
    const int32_t* tb = static_cast<const int32_t*>(table.data());
    const Py_UCS4 n_table = (Py_UCS4)table.shape(0);
    const py::ssize_t n = (py::ssize_t)tokens.size();
    check_arg(n < INT32_MAX, "vocabulary of " + std::to_string(n) + " tokens: too large");
    auto v = std::make_unique<BpeVocab>();
    std::string bytes;
    for (py::ssize_t i = 0; i < n; i++) {
        PyObject* t = PyList_GET_ITEM(tokens.ptr(), i);
        if (t == Py_None) {
            v->add_absent();
            continue;
        }
        check_arg(PyUnicode_Check(t), "token " + std::to_string(i) + ": expected str");
        const Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        const int kind = PyUnicode_KIND(t);
        const void* data = PyUnicode_DATA(t);
        bool pure = true;
        bytes.clear();
        for (Py_ssize_t k = 0; k < len; k++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, k);
            if (c < n_table && tb[c] >= 0) {
                bytes += (char)tb[c];
                continue;
            }
            if (c >= 0xD800 && c <= 0xDFFF) {
                char u[8];
                std::snprintf(u, sizeof u, "%04X", (unsigned)c);
                throw std::invalid_argument("token " + std::to_string(i) + " holds a lone surrogate (U+" + u +
                                            "), which has no UTF-8");
            }
            pure = false;
            append_utf8(bytes, c);
        }
        v->add_token(bytes, pure);
    }
    const int64_t *pa = static_cast<const int64_t*>(a.data()), *pb = static_cast<const int64_t*>(b.data()),
                  *pab = static_cast<const int64_t*>(ab.data());
    for (py::ssize_t r = 0; r < a.shape(0); r++) {
        check_arg(pa[r] >= 0 && pa[r] < n && pb[r] >= 0 && pb[r] < n && pab[r] >= 0 && pab[r] < n,
                  "merge " + std::to_string(r) + ": token id outside the vocabulary");
        v->add_merge((int32_t)pa[r], (int32_t)pb[r], (int32_t)pab[r]);
    }
    for (const auto& kv : contents) {
        const int64_t id = kv.first.cast<int64_t>();
        check_arg(id >= 0 && id < n, "content of token " + std::to_string(id) + ": id outside the vocabulary");
        check_arg(PyBytes_Check(kv.second.ptr()), "content of token " + std::to_string(id) + ": expected bytes");
        v->set_content((int32_t)id, std::string_view(PyBytes_AS_STRING(kv.second.ptr()),
                                                      (size_t)PyBytes_GET_SIZE(kv.second.ptr())));
    }
    v->finish(whole);
    return v;
}

// The BPE of one pre-token's bytes as a tuple of ids; None when a byte has no token and skip_missing is false (the
// Python caller names the byte).
static py::object vocab_bpe(const BpeVocab& v, const py::bytes& data, bool skip_missing, bool ignore_merges) {
    const char* s = PyBytes_AS_STRING(data.ptr());
    const size_t n = (size_t)PyBytes_GET_SIZE(data.ptr());
    thread_local std::vector<int32_t> out;
    out.clear();
    if (!v.encode((const uint8_t*)s, n, skip_missing, ignore_merges, out)) return py::none();
    py::tuple t(out.size());
    for (size_t i = 0; i < out.size(); i++) PyTuple_SET_ITEM(t.ptr(), (Py_ssize_t)i, PyLong_FromLong(out[i]));
    return std::move(t);
}

void register_tokenizer(py::module_& m) {
    py::module_ t = m.def_submodule("tokenizer", "vocabulary tables for the BPE tokenizer (pyinfer/tokenizer.py)");
    t.def("merge_ids", &merge_ids, py::arg("tokens"), py::arg("merges"));
    py::class_<BpeVocab>(t, "BpeVocab", "a byte-level BPE vocabulary: token bytes, merge ranks, the merge loop")
        .def(py::init(&make_vocab), py::arg("tokens"), py::arg("table"), py::arg("merge_a"), py::arg("merge_b"),
             py::arg("merge_ab"), py::arg("contents"), py::arg("whole"))
        .def("bpe", &vocab_bpe, py::arg("data"), py::arg("skip_missing"), py::arg("ignore_merges"))
        .def(
            "token_bytes",  // None for an unused id or one outside the vocabulary
            [](const BpeVocab& v, int64_t id) -> py::object {
                if (!v.has(id)) return py::none();
                const std::string_view s = v.token_bytes((int32_t)id);
                return py::bytes(s.data(), s.size());
            },
            py::arg("id"))
        .def(
            "decode",  // the bytes of ids (a list of ints), None if one is not a token (the caller names it)
            [](const BpeVocab& v, const py::list& ids) -> py::object {
                std::string out;
                for (const py::handle& h : ids) {
                    const long long id = PyLong_AsLongLong(h.ptr());  // an int, or anything with __index__
                    if (id == -1 && PyErr_Occurred()) {
                        PyErr_Clear();
                        return py::none();
                    }
                    if (!v.has(id)) return py::none();
                    out.append(v.token_bytes((int32_t)id));
                }
                return py::bytes(out);
            },
            py::arg("ids"))
        .def("byte_id", [](const BpeVocab& v, int b) { check_arg(b >= 0 && b < 256, "byte outside 0..255");
                                                        return v.byte_id((uint8_t)b); }, py::arg("byte"))
        .def("whole_id", [](const BpeVocab& v, const py::bytes& s) { return v.whole_id(std::string(s)); },
             py::arg("data"))
        .def(
            "merge",  // (rank, merged id), None if the pair does not merge
            [](const BpeVocab& v, int64_t a, int64_t b) -> py::object {
                if (a < 0 || b < 0 || a >= v.n_vocab() || b >= v.n_vocab()) return py::none();
                const BpeVocab::Merge* m = v.merge((int32_t)a, (int32_t)b);
                return m ? py::make_tuple(m->rank, m->id) : py::object(py::none());
            },
            py::arg("a"), py::arg("b"))
        .def_property_readonly("n_vocab", &BpeVocab::n_vocab)
        .def_property_readonly("n_merges", &BpeVocab::n_merges)
        .def_property_readonly("all_bytes", &BpeVocab::all_bytes);
}

}  // namespace pyinfer
