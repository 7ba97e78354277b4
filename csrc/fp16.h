// IEEE half <-> float conversion, scalar and exact (round-to-nearest-even), as ggml's
// GGML_FP16_TO_FP32 / GGML_FP32_TO_FP16 reference does. SIMD code uses F16C instead; both agree bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

namespace pyinfer {

typedef uint16_t fp16_t;

static inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
static inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

static inline float fp16_to_fp32(fp16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        if (mant == 0) return fp32_from_bits(sign);
        // subnormal: normalise
        int e = -1;
        do { mant <<= 1; e++; } while ((mant & 0x400) == 0);
        mant &= 0x3ff;
        return fp32_from_bits(sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13));
    }
    if (exp == 31) return fp32_from_bits(sign | 0x7f800000u | (mant << 13));
    return fp32_from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

static inline fp16_t fp32_to_fp16(float f) {
    uint32_t x = fp32_to_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x >= 0x7f800000u) return (fp16_t)(sign | 0x7c00 | (x > 0x7f800000u ? 0x200 : 0));  // inf / nan
    if (x >= 0x477ff000u) return (fp16_t)(sign | 0x7c00);                                  // overflow -> inf
    if (x < 0x38800000u) {  // subnormal or zero in half
        if (x < 0x33000000u) return (fp16_t)sign;  // < 2^-25 rounds to 0
        const uint32_t e = x >> 23;
        uint32_t m = (x & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;  // 14 + (113 - e) ... gives mantissa for half subnormal
        uint32_t r = m >> (shift);
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (fp16_t)(sign | r);
    }
    uint32_t r = ((x >> 13) - (112u << 10));
    const uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (fp16_t)(sign | r);
}

}  // namespace pyinfer
