// GGUF byte helpers for pyinfer/gguf_file.py's reader: the length-prefixed string arrays of a file's metadata (GGUF
// vocabularies hold ~50k-260k strings; a Python loop over them was most of a model's load time).  Bounds are checked
// here against the buffer; everything else about the file is checked in Python.
#include "common_bind.h"

#include <cstring>
#include <string>

namespace pyinfer {

// (starts int64 [n], lengths int64 [n], end): n strings, each a little-endian uint64 length then its bytes, from
// byte `offset` of buf (uint8, 1-D); ValueError naming the offset when one runs past the end of buf.
static py::tuple string_array_offsets(const py::array& buf, int64_t offset, int64_t n) {
    checked<uint8_t>(buf, "buf", 1);
    const uint8_t* p = static_cast<const uint8_t*>(buf.data());
    const uint64_t size = (uint64_t)buf.shape(0);
    check_arg(offset >= 0 && (uint64_t)offset <= size && n >= 0, "offset or count out of range");
    check_arg((uint64_t)n <= (size - (uint64_t)offset) / 8,
              "metadata string array at offset " + std::to_string(offset) + " claims " + std::to_string(n) +
                  " elements, more than the rest of the file can hold: truncated or corrupt");
    py::array_t<int64_t> starts(n), lens(n);
    int64_t* s = starts.mutable_data();
    int64_t* l = lens.mutable_data();
    uint64_t off = (uint64_t)offset;
    for (int64_t i = 0; i < n; i++) {
        if (size - off < 8)
            throw std::invalid_argument("metadata string array at offset " + std::to_string(offset) +
                                        " runs past the end of the file (" + std::to_string(size) +
                                        " bytes): truncated or corrupt");
        uint64_t len;
        std::memcpy(&len, p + off, 8);  // GGUF is little-endian; big-endian files are refused before this
        off += 8;
        if (len > size - off)
            throw std::invalid_argument("a string of " + std::to_string(len) + " bytes at offset " +
                                        std::to_string(off) + " runs past the end of the file (" +
                                        std::to_string(size) + " bytes): truncated or corrupt");
        s[i] = (int64_t)off;
        l[i] = (int64_t)len;
        off += len;
    }
    return py::make_tuple(starts, lens, (int64_t)off);
}

// list[str]: buf[starts[i] : starts[i] + lengths[i]] decoded as strict UTF-8 (UnicodeDecodeError on bad bytes)
static py::list decode_strings(const py::array& buf, const py::array& starts, const py::array& lens) {
    checked<uint8_t>(buf, "buf", 1);
    checked<int64_t>(starts, "starts", 1);
    checked<int64_t>(lens, "lengths", 1);
    check_arg(starts.shape(0) == lens.shape(0), "starts and lengths differ in length");
    const char* p = static_cast<const char*>(buf.data());
    const int64_t size = buf.shape(0), n = starts.shape(0);
    const int64_t* s = static_cast<const int64_t*>(starts.data());
    const int64_t* l = static_cast<const int64_t*>(lens.data());
    py::list out(n);
    for (int64_t i = 0; i < n; i++) {
        check_arg(s[i] >= 0 && l[i] >= 0 && s[i] <= size && l[i] <= size - s[i], "string outside the buffer");
        PyObject* str = PyUnicode_DecodeUTF8(p + s[i], (Py_ssize_t)l[i], "strict");
        if (!str) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), (Py_ssize_t)i, str);  // steals the reference
    }
    return out;
}

void register_gguf(py::module_& m) {
    py::module_ g = m.def_submodule("gguf", "byte helpers for the GGUF reader (pyinfer/gguf_file.py)");
    g.def("string_array_offsets", &string_array_offsets, py::arg("buf"), py::arg("offset"), py::arg("n"));
    g.def("decode_strings", &decode_strings, py::arg("buf"), py::arg("starts"), py::arg("lengths"));
}

}  // namespace pyinfer
