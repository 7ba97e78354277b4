// Byte-level BPE tables built at load for pyinfer/tokenizer.py: the ids of every merge "a b", and every token's bytes.
// A GGUF vocabulary holds 50k-260k tokens and as many merges; Python loops over them took ~110 ms of the default
// model's ~300 ms load.  Whatever is irregular is left to the Python code (None here), which names the problem.
#include "common_bind.h"

#include <string>
#include <string_view>
#include <unordered_map>

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

// [bytes or None]: each token's chars through table (int32, code point -> byte, -1 where none), None for a None token;
// None for the whole list when a token has a char outside the table, or is neither a str nor None.
static py::object token_bytes(const py::list& tokens, const py::array& table) {
    checked<int32_t>(table, "table", 1);
    const int32_t* tb = static_cast<const int32_t*>(table.data());
    const Py_UCS4 n_table = (Py_UCS4)table.shape(0);
    const py::ssize_t n = (py::ssize_t)tokens.size();
    py::list out(n);
    for (py::ssize_t i = 0; i < n; i++) {
        PyObject* t = PyList_GET_ITEM(tokens.ptr(), i);
        if (t == Py_None) {
            PyList_SET_ITEM(out.ptr(), i, py::none().release().ptr());
            continue;
        }
        if (!PyUnicode_Check(t)) return py::none();
        const Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        const int kind = PyUnicode_KIND(t);
        const void* data = PyUnicode_DATA(t);
        py::bytes bs(nullptr, (size_t)len);
        char* dst = PyBytes_AS_STRING(bs.ptr());
        for (Py_ssize_t k = 0; k < len; k++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, k);
            if (c >= n_table || tb[c] < 0) return py::none();
            dst[k] = (char)tb[c];
        }
        PyList_SET_ITEM(out.ptr(), i, bs.release().ptr());  // steals the reference
    }
    return out;
}

void register_tokenizer(py::module_& m) {
    py::module_ t = m.def_submodule("tokenizer", "vocabulary tables for the BPE tokenizer (pyinfer/tokenizer.py)");
    t.def("merge_ids", &merge_ids, py::arg("tokens"), py::arg("merges"));
    t.def("token_bytes", &token_bytes, py::arg("tokens"), py::arg("table"));
}

}  // namespace pyinfer
