// Facts about weight storage types (names, block sizes, bytes per row), shared by the model and the bindings.
#include "common.h"

#include "quant_blocks.h"

namespace pyinfer {

namespace {
struct TypeInfo {
    DType t;
    const char* name;
    int64_t block;   // weights per block
    size_t bytes;    // bytes per block
};
constexpr TypeInfo TYPES[] = {
    {DType::F32, "F32", 1, 4},
    {DType::F16, "F16", 1, 2},
    {DType::Q4_0, "Q4_0", QK, sizeof(block_q4_0)},
    {DType::Q4_1, "Q4_1", QK, sizeof(block_q4_1)},
    {DType::Q5_0, "Q5_0", QK, sizeof(block_q5_0)},
    {DType::Q5_1, "Q5_1", QK, sizeof(block_q5_1)},
    {DType::Q8_0, "Q8_0", QK, sizeof(block_q8_0)},
    {DType::Q2_K, "Q2_K", QK_K, sizeof(block_q2_K)},
    {DType::Q3_K, "Q3_K", QK_K, sizeof(block_q3_K)},
    {DType::Q4_K, "Q4_K", QK_K, sizeof(block_q4_K)},
    {DType::Q5_K, "Q5_K", QK_K, sizeof(block_q5_K)},
    {DType::Q6_K, "Q6_K", QK_K, sizeof(block_q6_K)},
};

const TypeInfo* find(int id) {
    for (const TypeInfo& ti : TYPES)
        if ((int)ti.t == id) return &ti;
    return nullptr;
}
const TypeInfo& info(DType t) {
    const TypeInfo* ti = find((int)t);
    if (!ti) throw std::invalid_argument("unknown weight type id " + std::to_string((int)t));
    return *ti;
}
}  // namespace

const char* dtype_name(DType t) {
    const TypeInfo* ti = find((int)t);
    return ti ? ti->name : "?";
}

DType dtype_from_id(int id) {
    if (const TypeInfo* ti = find(id)) return ti->t;
    std::string list;
    for (const TypeInfo& ti : TYPES) list += (list.empty() ? "" : ", ") + std::string(ti.name) + "=" + std::to_string((int)ti.t);
    throw std::invalid_argument("unsupported ggml type id " + std::to_string(id) + " (supported: " + list + ")");
}

bool dtype_is_quantized(DType t) { return info(t).block > 1; }

int64_t dtype_block_size(DType t) { return info(t).block; }

size_t dtype_row_bytes(DType t, int64_t n) {
    const TypeInfo& ti = info(t);
    if (n % ti.block != 0)
        throw std::invalid_argument(std::string(ti.name) + " rows must be a multiple of " + std::to_string(ti.block) +
                                    " elements, got " + std::to_string(n));
    return ti.bytes * (size_t)(n / ti.block);
}

}  // namespace pyinfer
