// Block formats, bit-compatible with ggml's (ggml-common.h): 32-weight blocks with an fp16 scale (and min), and
// 256-weight K-quant super-blocks with packed sub-block scales.  Plus the activation blocks (never stored in files):
// block_q8a (32 values) for the 32-blocks and block_q8_K16 (256 values) for the K-quants, so that every weight
// type's dot product runs in integer arithmetic.  Both round activations to 8 bits with one f32 scale per 16 values
// (ggml's use one fp16 scale per 32, and one per 256 for the K-quants: finer scales bring pyinfer's default path
// closer to the exact model of the file, benchmarks/fidelity.py).
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp16.h"

namespace pyinfer {

constexpr int QK = 32;  // weights per block for every quantized type here

// Weight blocks are byte-aligned (packed): they are read straight from a file's memory map or a numpy buffer at any
// byte offset, and reading an fp16_t member through a misaligned pointer to a 2-aligned struct is undefined
// behaviour (UBSan's -fsanitize=alignment).  The layouts have no padding either way (the static_asserts).
#pragma pack(push, 1)

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

struct block_q5_0 {   // x[i] = d * ((nibble[i] | bit[i] << 4) - 16); bit i of qh (little-endian u32) is element i's
    fp16_t d;         // 5th bit; nibbles packed as in q4_0
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q5_0) == 2 + 4 + QK / 2, "block_q5_0 must match ggml's layout (22 bytes)");

struct block_q5_1 {   // x[i] = d * (nibble[i] | bit[i] << 4) + m
    fp16_t d;
    fp16_t m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q5_1) == 4 + 4 + QK / 2, "block_q5_1 must match ggml's layout (24 bytes)");

// ---- K-quants: super-blocks of QK_K = 256 weights (ggml-common.h) ----
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;  // q4_K / q5_K: 8 6-bit scales + 8 6-bit mins packed in 12 bytes

struct block_q2_K {   // 16 sub-blocks of 16: x = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), q 2 bits
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    fp16_t d;
    fp16_t dmin;
};
static_assert(sizeof(block_q2_K) == 2 * 2 + QK_K / 16 + QK_K / 4, "block_q2_K must match ggml's layout (84 bytes)");

struct block_q3_K {   // 16 sub-blocks of 16: x = d * (scale6[j] - 32) * (q2 - (hmask bit set ? 0 : 4))
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    fp16_t d;
};
static_assert(sizeof(block_q3_K) == 2 + QK_K / 4 + QK_K / 8 + 12, "block_q3_K must match ggml's layout (110 bytes)");

struct block_q4_K {   // 8 sub-blocks of 32: x = d * sc[j] * q - dmin * m[j], sc/m 6 bits in scales, q 4 bits
    fp16_t d;
    fp16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q4_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2, "block_q4_K must match ggml's layout (144 bytes)");

struct block_q5_K {   // as q4_K with a 5th bit per weight in qh
    fp16_t d;
    fp16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
static_assert(sizeof(block_q5_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8,
              "block_q5_K must match ggml's layout (176 bytes)");

struct block_q6_K {   // 16 sub-blocks of 16: x = d * scales[j] * (q6 - 32); low 4 bits in ql, high 2 in qh
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    fp16_t d;
};
static_assert(sizeof(block_q6_K) == 2 + QK_K / 16 + 3 * QK_K / 4, "block_q6_K must match ggml's layout (210 bytes)");

#pragma pack(pop)

// Activation rounding, per group of 16 values: amax = max |x|, q = round-half-even(x * (127 / amax)), d = amax / 127
// (f32, not rounded further); an all-zero group has d = 0, q = 0.
struct block_q8a {    // activations for the 32-blocks: x[i] ~= d[i / 16] * qs[i]
    float d[2];       // the scales of elements 0..15 and 16..31
    float s;          // d[0] * sum(qs[0..15]) + d[1] * sum(qs[16..31]) (f32): the min term of q4_1 / q5_1 and the
                      // offset of q4_0 / q5_0
    int8_t qs[QK];
};
static_assert(sizeof(block_q8a) == 12 + QK, "block_q8a is 44 bytes");

// The K-quant kernels sum each 32 activations' products as 8 int32 lanes (lanes 0..3: the first 16, 4..7: the next
// 16) and reduce 4 such chunks to one vector [c0 c1 c2 c3 | c0' c1' c2' c3'] (unprimed: first halves): so a
// super-block's 16 groups come out in "lane order", lane l of two vectors holding group k_group(l) (l = 0..15).
// block_q8_K16 stores its scales and group sums in that order, ready for vector loads.
constexpr int k_group(int lane) { return 8 * (lane / 8) + 2 * (lane % 4) + (lane % 8) / 4; }
constexpr int k_lane(int group) { return 8 * (group / 8) + 4 * (group % 2) + (group % 8) / 2; }  // its inverse
static_assert(k_lane(k_group(5)) == 5 && k_lane(k_group(14)) == 14 && k_group(k_lane(3)) == 3, "k_lane inverts k_group");
struct block_q8_K16 {  // activations for the K-quants: x[i] ~= (scale of group i / 16) * qs[i]
    float d[QK_K / 16];        // d[l] = the scale of group k_group(l)
    int16_t bsums[QK_K / 16];  // bsums[l] = the sum of group k_group(l)'s qs
    int8_t qs[QK_K];
};
static_assert(sizeof(block_q8_K16) == 4 * 16 + 2 * 16 + QK_K, "block_q8_K16 is 352 bytes");

}  // namespace pyinfer
