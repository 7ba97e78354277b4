// Reference quantizers for Q5_0 / Q5_1 and the K-quants (see quantize_kquants.h). The spec is ggml's
// quantize_row_*_ref: every float operation here is the same IEEE operation in the same order (setup.py compiles
// with -ffp-contract=off, so no multiply-add is fused), which is what makes the bytes equal, not just close.
// Each K-quant first fits a scale (and min) per sub-block by a small search, then quantizes those scales to 4, 6
// or 8 bits against one fp16 super-block scale, then re-quantizes the weights against the rounded scales.
#include "quantize_kquants.h"

#include <cfloat>
#include <cmath>
#include <cstring>

namespace pyinfer {

namespace {

constexpr float GROUP_MAX_EPS = 1e-15f;  // a sub-block whose largest |x| is below this is all zero

inline int imax(int a, int b) { return a > b ? a : b; }
inline int imin(int a, int b) { return a < b ? a : b; }
inline int clampi(int v, int lo, int hi) { return imax(lo, imin(hi, v)); }

// the value of largest magnitude in x (n), sign kept; the first one on ties; 0 for an all-zero (or NaN) x
inline float max_by_magnitude(const float* x, int n) {
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    return max;
}

// round-half-even(v) for |v| < 2^22: adding 1.5 * 2^23 leaves round(v) + 2^22 in the low 23 mantissa bits
inline int nearest_int(float v) {
    const float biased = v + 12582912.0f;
    int32_t bits;
    std::memcpy(&bits, &biased, sizeof bits);
    return (bits & 0x007fffff) - 0x00400000;
}

// Asymmetric fit of x (n) ~= scale * L + min with L in [0, nmax], weighted by w (n): start from the min/max
// grid, then try nstep + 1 grids of (nmax + rmin + rdelta * is) steps, each refined by weighted least squares,
// keeping the one of least weighted error (squared, or absolute with use_mad). L (n) out, Laux (n) scratch.
// Returns the scale; *neg_min = -min >= 0 (min is never above 0). ggml's make_qkx2_quants.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* Laux,
                    float rmin, float rdelta, int nstep, bool use_mad) {
    float mn = x[0], mx = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *neg_min = -mn;
        return 0.0f;
    }
    float iscale = (float)nmax / (mx - mn);
    float scale = 1.0f / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
        float diff = scale * L[i] + mn - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += w[i] * diff;
    }
    if (nstep < 1) {
        *neg_min = -mn;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float cur_error = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            cur_error += w[i] * diff;
        }
        if (cur_error < best_error) {
            for (int i = 0; i < n; i++) L[i] = Laux[i];
            best_error = cur_error;
            scale = this_scale;
            mn = this_min;
        }
    }
    *neg_min = -mn;
    return scale;
}

// Symmetric fit x (n) ~= scale * (L - nmax), L in [0, 2 nmax), weights x^2: the grid through the value of
// largest magnitude, then 18 grids of nmax +- 0.1 k steps, each refined by least squares; the best kept.
// ggml's make_qx_quants with rmse_type 1 and no importance weights (the only use: Q6_K).
float fit_scale_sym(int n, int nmax, const float* x, int8_t* L) {
    const float max = max_by_magnitude(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.0f;
    }
    float iscale = (float)(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// Symmetric fit for Q3_K: the grid through the value of largest magnitude, then up to 5 passes moving single
// L[i] to the value that the least-squares scale of the others asks for, when that lowers the weighted error
// (weights x^2). L (n) out in [0, 2 nmax). ggml's make_q3_quants with do_rmse.
float fit_scale_q3(int n, int nmax, const float* x, int8_t* L) {
    const float max = max_by_magnitude(x, n);
    if (fabsf(max) < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.0f;
    }
    const float iscale = (float)(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; pass++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            const int new_l = clampi(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * new_l;
            sl2 += w * new_l * new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block j from the 12 packed bytes q
inline void unpack_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K / Q5_K: the 8 sub-block scales and mins (floats, >= 0 when used) as 6-bit integers in y_scales (12 bytes)
// against d = max_scale / 63 and dmin = max_min / 63 (returned as fp16 through d, dmin)
void pack_scales_mins_k4(uint8_t* y_scales, fp16_t* d, fp16_t* dmin, const float* scales, const float* mins,
                         float max_scale, float max_min) {
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);  // wraps like ggml's uint8 store, then clamps
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            y_scales[j] = ls;
            y_scales[j + 4] = lm;
        } else {
            y_scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            y_scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            y_scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d = fp32_to_fp16(max_scale / 63.f);
    *dmin = fp32_to_fp16(max_min / 63.f);
}

// Q4_K / Q5_K: L (256) in [0, nmax] for the super-block's packed scales; sub-blocks of scale 0 keep L
void requantize_k4(uint8_t* L, const float* x, const uint8_t* y_scales, fp16_t d16, fp16_t dmin16, int nmax) {
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        unpack_scale_min_k4(j, y_scales, &sc, &m);
        const float d = fp16_to_fp32(d16) * sc;
        if (!d) continue;
        const float dm = fp16_to_fp32(dmin16) * m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clampi(nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

// Q4_K / Q5_K: fit scale and min of each 32-weight sub-block with weights sqrt(mean x^2) + |x|
void fit_subblocks_k4(const float* x, uint8_t* L, float* scales, float* mins, float* max_scale, float* max_min,
                      int nmax, float rmin, float rdelta, int nstep) {
    float weights[32];
    uint8_t Laux[32];
    *max_scale = 0;
    *max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        const float* xb = x + 32 * j;
        float sum_x2 = 0;
        for (int i = 0; i < 32; i++) sum_x2 += xb[i] * xb[i];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int i = 0; i < 32; i++) weights[i] = av_x + fabsf(xb[i]);
        scales[j] = fit_scale_min(32, nmax, xb, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep, false);
        if (scales[j] > *max_scale) *max_scale = scales[j];
        if (mins[j] > *max_min) *max_min = mins[j];
    }
}

// 2-bit L (256) -> qs (64): byte l of each 32-byte half holds L[l], L[l + 32], L[l + 64], L[l + 96] (Q2_K, Q3_K)
void pack_2bit(uint8_t* qs, const uint8_t* L) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// 32-weight blocks with a 5th bit per weight
// ---------------------------------------------------------------------------------------------------------

void quantize_q5_0_ref(block_q5_0* y, const float* x, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK) {
        const float d = max_by_magnitude(x, QK) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = imin(31, (int)(x[j] * id + 16.5f)), q1 = imin(31, (int)(x[j + QK / 2] * id + 16.5f));
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + QK / 2);
        }
        std::memcpy(y[b].qh, &qh, sizeof qh);
    }
}

void quantize_q5_1_ref(block_q5_1* y, const float* x, int64_t n) {
    for (int64_t b = 0; b < n / QK; b++, x += QK) {
        float mn = FLT_MAX, mx = -FLT_MAX;
        for (int i = 0; i < QK; i++) {
            if (x[i] < mn) mn = x[i];
            if (x[i] > mx) mx = x[i];
        }
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = (uint8_t)(int)((x[j] - mn) * id + 0.5f), q1 = (uint8_t)(int)((x[j + QK / 2] - mn) * id + 0.5f);
            y[b].qs[j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
            qh |= (uint32_t)((q0 & 0x10) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        std::memcpy(y[b].qh, &qh, sizeof qh);
    }
}

// ---------------------------------------------------------------------------------------------------------
// K-quants: 256-weight super-blocks
// ---------------------------------------------------------------------------------------------------------

void quantize_q2_K_ref(block_q2_K* y, const float* x, int64_t n) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        // 16 sub-blocks of 16: scale and min by mean-absolute-error fits weighted by |x|
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            for (int i = 0; i < 16; i++) weights[i] = fabsf(x[16 * j + i]);
            scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        // scales in the low nibbles, mins in the high nibbles, each against its own fp16 super-block scale
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) y[b].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            y[b].d = fp32_to_fp16(max_scale / 15.f);
        } else {
            for (int j = 0; j < QK_K / 16; j++) y[b].scales[j] = 0;
            y[b].d = fp32_to_fp16(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < QK_K / 16; j++) y[b].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
            y[b].dmin = fp32_to_fp16(max_min / 15.f);
        } else {
            y[b].dmin = fp32_to_fp16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = fp16_to_fp32(y[b].d) * (y[b].scales[j] & 0xF);
            if (!d) continue;
            const float dm = fp16_to_fp32(y[b].dmin) * (y[b].scales[j] >> 4);
            for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)clampi(nearest_int((x[16 * j + i] + dm) / d), 0, 3);
        }
        pack_2bit(y[b].qs, L);
    }
}

void quantize_q3_K_ref(block_q3_K* y, const float* x, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale = 0, amax = 0;  // the sub-block scale of largest magnitude, sign kept
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = fit_scale_q3(16, 4, x + 16 * j, L + 16 * j);
            const float a = fabsf(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        // 6-bit signed scales (+32): low nibbles in bytes 0..7, the 2 high bits of scale j in byte 8 + j % 4
        std::memset(y[b].scales, 0, 12);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l = (int8_t)nearest_int(iscale * scales[j]);
                l = (int8_t)(clampi(l, -32, 31) + 32);
                if (j < 8) y[b].scales[j] = l & 0xF;
                else y[b].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l >>= 4;
                y[b].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[b].d = fp32_to_fp16(1 / iscale);
        } else {
            y[b].d = fp32_to_fp16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int8_t sc = (int8_t)(j < 8 ? y[b].scales[j] & 0xF : y[b].scales[j - 8] >> 4);
            sc = (int8_t)((sc | (((y[b].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
            const float d = fp16_to_fp32(y[b].d) * sc;
            if (!d) continue;
            for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clampi(nearest_int(x[16 * j + i] / d), -4, 3) + 4);
        }
        // the high bit of weight j goes to bit j / 32 of hmask[j % 32]; the low 2 bits as in Q2_K
        std::memset(y[b].hmask, 0, QK_K / 8);
        uint8_t low[QK_K];
        for (int j = 0; j < QK_K; j++) {
            if (L[j] > 3) {
                y[b].hmask[j % (QK_K / 8)] |= (uint8_t)(1 << (j / (QK_K / 8)));
                L[j] = (int8_t)(L[j] - 4);
            }
            low[j] = (uint8_t)L[j];
        }
        pack_2bit(y[b].qs, low);
    }
}

void quantize_q4_K_ref(block_q4_K* y, const float* x, int64_t n) {
    uint8_t L[QK_K];
    float mins[QK_K / 32], scales[QK_K / 32];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale, max_min;
        fit_subblocks_k4(x, L, scales, mins, &max_scale, &max_min, 15, -1.f, 0.1f, 20);
        pack_scales_mins_k4(y[b].scales, &y[b].d, &y[b].dmin, scales, mins, max_scale, max_min);
        requantize_k4(L, x, y[b].scales, y[b].d, y[b].dmin, 15);
        // byte l of each 32-byte group g holds L[64 g + l] (low nibble) and L[64 g + 32 + l] (high nibble)
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; l++) y[b].qs[j / 2 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void quantize_q5_K_ref(block_q5_K* y, const float* x, int64_t n) {
    uint8_t L[QK_K];
    float mins[QK_K / 32], scales[QK_K / 32];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale, max_min;
        fit_subblocks_k4(x, L, scales, mins, &max_scale, &max_min, 31, -0.5f, 0.1f, 15);
        pack_scales_mins_k4(y[b].scales, &y[b].d, &y[b].dmin, scales, mins, max_scale, max_min);
        requantize_k4(L, x, y[b].scales, y[b].d, y[b].dmin, 31);
        // low nibbles as in Q4_K; the 5th bit of L[64 g + l] is bit 2 g of qh[l], of L[64 g + 32 + l] bit 2 g + 1
        std::memset(y[b].qh, 0, QK_K / 8);
        for (int g = 0; g < QK_K / 64; g++)
            for (int l = 0; l < 32; l++) {
                const int l1 = L[64 * g + l], l2 = L[64 * g + 32 + l];
                y[b].qh[l] |= (uint8_t)(((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1)));
                y[b].qs[32 * g + l] = (uint8_t)((l1 & 0xF) | ((l2 & 0xF) << 4));
            }
    }
}

void quantize_q6_K_ref(block_q6_K* y, const float* x, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;  // the sub-block scale of largest magnitude, sign kept
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
            const float a = fabsf(scales[j]);
            if (a > max_abs_scale) {
                max_abs_scale = a;
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {  // all zero
            std::memset(&y[b], 0, sizeof(block_q6_K));
            continue;
        }
        // 8-bit signed sub-block scales against d = max_scale / -128
        const float iscale = -128.f / max_scale;
        y[b].d = fp32_to_fp16(1 / iscale);
        for (int j = 0; j < QK_K / 16; j++) y[b].scales[j] = (int8_t)imin(127, nearest_int(iscale * scales[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = fp16_to_fp32(y[b].d) * y[b].scales[j];
            if (!d) continue;
            for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clampi(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
        }
        // per 128 weights: low nibbles of L[l], L[l + 64] in ql[l], of L[l + 32], L[l + 96] in ql[l + 32];
        // the high 2 bits of L[l + 32 k] in bits 2k..2k+1 of qh[l]
        uint8_t* ql = y[b].ql;
        uint8_t* qh = y[b].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; l++) {
                const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                ql[l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                ql[l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
    }
}

}  // namespace pyinfer
