// Weight quantizers for Q5_0 / Q5_1 and the K-quants Q2_K..Q6_K, bit-identical to ggml's reference ones
// (quantize_row_*_ref in ggml-quants.c, which llama.cpp's quantizer runs when there is no importance matrix).
// Scalar code compiled once with generic flags, so every ISA's quantize_row gives the same bytes. These are
// model-file writers, not kernels on the hot path: no importance matrices, no SIMD.
#pragma once
#include <cstdint>

#include "../quant_blocks.h"

namespace pyinfer {

// y (n / 32 blocks) <- x (n), n % 32 == 0 (checked by the caller)
void quantize_q5_0_ref(block_q5_0* y, const float* x, int64_t n);
void quantize_q5_1_ref(block_q5_1* y, const float* x, int64_t n);

// y (n / 256 super-blocks) <- x (n), n % 256 == 0 (checked by the caller)
void quantize_q2_K_ref(block_q2_K* y, const float* x, int64_t n);
void quantize_q3_K_ref(block_q3_K* y, const float* x, int64_t n);
void quantize_q4_K_ref(block_q4_K* y, const float* x, int64_t n);
void quantize_q5_K_ref(block_q5_K* y, const float* x, int64_t n);
void quantize_q6_K_ref(block_q6_K* y, const float* x, int64_t n);

}  // namespace pyinfer
