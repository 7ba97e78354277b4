// Block formats, bit-compatible with ggml's (ggml-common.h): 32 weights per block, an fp16 scale (and min).
// Plus block_q8a, the activation block (never stored in files): activations are quantized to it on the fly so that
// every weight type's dot product runs in integer arithmetic. Its rounding follows ggml's x86 activation quantizer
// (q8_0 / q8_1 in ggml-cpu), so quantized logits track llama.cpp's closely.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp16.h"

namespace pyinfer {

constexpr int QK = 32;  // weights per block for every quantized type here

struct block_q8_0 {   // x[i] = d * qs[i]
    fp16_t d;
    int8_t qs[QK];
};
static_assert(sizeof(block_q8_0) == 2 + QK, "block_q8_0 must match ggml's layout (34 bytes)");

struct block_q4_0 {   // x[i] = d * (nibble[i] - 8); qs[j] holds element j (low nibble) and j + 16 (high nibble)
    fp16_t d;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_0) == 2 + QK / 2, "block_q4_0 must match ggml's layout (18 bytes)");

struct block_q4_1 {   // x[i] = d * nibble[i] + m; nibbles packed as in q4_0
    fp16_t d;
    fp16_t m;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_1) == 4 + QK / 2, "block_q4_1 must match ggml's layout (20 bytes)");

struct block_q8a {    // activations: x[i] ~= d * qs[i]; s = d * sum(qs) for q4_1's offset term
    float d;          // fp16-representable: amax / 127 rounded to fp16
    float s;          // fp16-representable
    int32_t sum;      // sum(qs), exact: q4_0's "- 8" applied to the integer dot product
    int8_t qs[QK];
};
static_assert(sizeof(block_q8a) == 12 + QK, "block_q8a is 44 bytes");

}  // namespace pyinfer
