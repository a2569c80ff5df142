// 3×3 depthwise convolution, AVX-512 VNNI and AVX2. Channels are the vector lanes (NHWC keeps them contiguous).
// AVX-512 VNNI: 64 channels per step, four taps per vpdpbusd after an in-register interleave (layout in
// qf_dwconv_layout.h). AVX2: 8 channels per step, inputs zero-extended and weights sign-extended to int32 and
// multiplied with vpmulld, one tap at a time.
#include <string.h>

#include "qf_dwconv_layout.h"
#include "qf_requant.h"

#if QF_X86

// Fully unrolls a loop of constant trip count. Without it clang keeps the per-j loops rolled and round-trips the
// four accumulators through the stack, which serialises the long requantization chains (measured: ~20 % of
// the kernel).
#if defined(__clang__)
#define QF_UNROLL _Pragma("clang loop unroll(full)")
#else
#define QF_UNROLL
#endif

// Four taps (64 channels each) → R_0..R_3 of the VNNI layout: byte-interleave taps (0,1) and (2,3) into
// 16-bit pairs, then the pairs into 4-byte quads. Both steps stay inside 128-bit lanes (see qf_dwconv_layout.h).
QF_TARGET_AVX512VNNI static inline void qf_dwv_interleave(__m512i t0, __m512i t1, __m512i t2, __m512i t3,
                                                         __m512i r[4]) {
    const __m512i lo01 = _mm512_unpacklo_epi8(t0, t1), hi01 = _mm512_unpackhi_epi8(t0, t1);
    const __m512i lo23 = _mm512_unpacklo_epi8(t2, t3), hi23 = _mm512_unpackhi_epi8(t2, t3);
    r[0] = _mm512_unpacklo_epi16(lo01, lo23);
    r[1] = _mm512_unpackhi_epi16(lo01, lo23);
    r[2] = _mm512_unpacklo_epi16(hi01, hi23);
    r[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

// The loads and stores of a block with P pixels per register (qf_dwv_block_pixels): P = 1 is one pixel's 64
// channels; P = 2 and 4 put pixel p in the p-th 256-bit half or 128-bit lane. `mask` selects the valid channels
// of one pixel (64, 32 or 16 bits). A NULL pointer is a tap in the padding: it reads the input zero point.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) __m512i
qf_dwv_load(int P, const uint8_t* const* p, size_t c0, __mmask64 mask, __m512i zero_vector) {
    if (P == 1) return p[0] ? _mm512_maskz_loadu_epi8(mask, p[0] + c0) : zero_vector;
    if (P == 2) {
        const __m256i zero = _mm512_castsi512_si256(zero_vector);
        const __m256i lo = p[0] ? _mm256_maskz_loadu_epi8((__mmask32)mask, p[0] + c0) : zero;
        const __m256i hi = p[1] ? _mm256_maskz_loadu_epi8((__mmask32)mask, p[1] + c0) : zero;
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    const __m128i zero = _mm512_castsi512_si128(zero_vector);
    __m128i q[4];
    QF_UNROLL
    for (int k = 0; k < 4; k++) q[k] = p[k] ? _mm_maskz_loadu_epi8((__mmask16)mask, p[k] + c0) : zero;
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(q[2]), q[3], 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// qf_dwv_load for pointers known to be inside the image (no padding test).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) __m512i
qf_dwv_load_inside(int P, const uint8_t* const* p, size_t c0, __mmask64 mask) {
    if (P == 1) return _mm512_maskz_loadu_epi8(mask, p[0] + c0);
    if (P == 2) {
        const __m256i lo = _mm256_maskz_loadu_epi8((__mmask32)mask, p[0] + c0);
        const __m256i hi = _mm256_maskz_loadu_epi8((__mmask32)mask, p[1] + c0);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
    __m128i q[4];
    QF_UNROLL
    for (int k = 0; k < 4; k++) q[k] = _mm_maskz_loadu_epi8((__mmask16)mask, p[k] + c0);
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(q[2]), q[3], 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Stores pixel p's part of `bytes` at dst[p] + c0; a NULL dst[p] is an unused slot.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_store(int P, __m512i bytes, uint8_t* const* dst, size_t c0, __mmask64 mask) {
    if (P == 1) {
        _mm512_mask_storeu_epi8(dst[0] + c0, mask, bytes);
    } else if (P == 2) {
        if (dst[0]) _mm256_mask_storeu_epi8(dst[0] + c0, (__mmask32)mask, _mm512_castsi512_si256(bytes));
        if (dst[1]) _mm256_mask_storeu_epi8(dst[1] + c0, (__mmask32)mask, _mm512_extracti64x4_epi64(bytes, 1));
    } else {
        const __mmask16 m = (__mmask16)mask;
        if (dst[0]) _mm_mask_storeu_epi8(dst[0] + c0, m, _mm512_castsi512_si128(bytes));
        if (dst[1]) _mm_mask_storeu_epi8(dst[1] + c0, m, _mm512_extracti32x4_epi32(bytes, 1));
        if (dst[2]) _mm_mask_storeu_epi8(dst[2] + c0, m, _mm512_extracti32x4_epi32(bytes, 2));
        if (dst[3]) _mm_mask_storeu_epi8(dst[3] + c0, m, _mm512_extracti32x4_epi32(bytes, 3));
    }
}

// The output stage: the zero point (int16 lanes, added by qf_pack_u8_avx512) and the clamp. The saturating packs
// already clamp to [0, 255]; only a narrower range (ReLU with a non-zero zero point, fewer bits) needs a byte
// min/max, one per 64 outputs instead of two per 16.
typedef struct {
    __m512i zero_point16;  // int16 lanes
    __m512i qmin, qmax;    // bytes
    int clamp_min, clamp_max;
    int shifts_left;       // any channel's multiplier ≥ 1 (then its accumulator is shifted left first)
    int relu;              // qmin ≥ zero point: qf_requant_hi_relu_avx512 applies
} qf_dwv_output;

// The requantization constants of one accumulator row j of a block (`rows` = its 16-lane header rows).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) qf_requant_hi qf_dwv_requant_constants(const int32_t* rows) {
    const qf_requant_hi constants = {
        .m2 = _mm512_loadu_si512(rows + QF_DWV_M2 * 16),
        .m2_odd = _mm512_loadu_si512(rows + QF_DWV_M2_ODD * 16),
        .nudge_even = _mm512_loadu_si512(rows + QF_DWV_NUDGE_EVEN * 16),
        .nudge_odd = _mm512_loadu_si512(rows + QF_DWV_NUDGE_ODD * 16),
        .neg_fix = _mm512_loadu_si512(rows + QF_DWV_NEG_FIX * 16),
        .right = _mm512_loadu_si512(rows + QF_DWV_RIGHT_SHIFT * 16),
    };
    return constants;
}

// Requantizes the four accumulators of each of `n` pixels (n = 1, or 2 for a stride-1 pair) of one block with
// qf_requant_hi_avx512 (the GEMM's epilogue) and packs them to bytes in channel order: the in-lane packs undo the
// interleave, so lane L holds channels 16L..16L+15. The pixels share each constant load (a pair read 12 input,
// 24 weight and 48 constant vectors for 128 outputs; sharing measured 13 % off the depthwise time). Computing
// constants instead of loading them (m2_odd by a shift, neg_fix by an add) was 15 % slower: the kernel is
// limited by its shuffles and shifts (interleave, packs, requantization), which share two pipes on Zen 4.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_requantize_as(int relu, int n, __m512i acc[][4], const int32_t* header, int shifts_left,
                     const qf_dwv_output* o, __m512i bytes[]) {
    __m512i y[2][4];
    QF_UNROLL
    for (int j = 0; j < 4; j++) {
        const int32_t* rows = header + j * QF_DWV_HEADER_ROWS * 16;
        const qf_requant_hi constants = qf_dwv_requant_constants(rows);
        const __m512i left = shifts_left ? _mm512_loadu_si512(rows + QF_DWV_LEFT_SHIFT * 16) : _mm512_setzero_si512();
        QF_UNROLL
        for (int k = 0; k < n; k++) {
            const __m512i v = shifts_left ? _mm512_sllv_epi32(acc[k][j], left) : acc[k][j];
            y[k][j] = relu ? qf_requant_hi_relu_avx512(v, &constants) : qf_requant_hi_avx512(v, &constants);
        }
    }
    QF_UNROLL
    for (int k = 0; k < n; k++) {
        __m512i b = qf_pack_u8_avx512(y[k][0], y[k][1], y[k][2], y[k][3], o->zero_point16);
        if (o->clamp_min) b = _mm512_max_epu8(b, o->qmin);
        if (o->clamp_max) b = _mm512_min_epu8(b, o->qmax);
        bytes[k] = b;
    }
}

// One branch per call on the output's clamp, outside the unrolled code.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_requantize(int n, __m512i acc[][4], const int32_t* header, int shifts_left, const qf_dwv_output* o,
                  __m512i bytes[]) {
    if (o->relu) {
        qf_dwv_requantize_as(1, n, acc, header, shifts_left, o, bytes);
    } else {
        qf_dwv_requantize_as(0, n, acc, header, shifts_left, o, bytes);
    }
}

// The same for the four pixels of a 2×2 block (qf_dwv_pixel_quads), arranged for their 16 accumulators: any left
// shifts come first, in one branch (a branch per accumulator split the code into blocks, and clang hoisted every
// constant load above them and spilled the constants to the stack); then accumulator rows j are requantized two
// at a time and packed to int16 words right away, so that fewer int32 results are live at once.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_requantize4_as(int relu, __m512i acc[4][4], const int32_t* header, int shifts_left, const qf_dwv_output* o,
                      __m512i bytes[4]) {
    const int n = 4;
    if (shifts_left) {
        QF_UNROLL
        for (int j = 0; j < 4; j++) {
            const __m512i left = _mm512_loadu_si512(header + (j * QF_DWV_HEADER_ROWS + QF_DWV_LEFT_SHIFT) * 16);
            QF_UNROLL
            for (int k = 0; k < n; k++) acc[k][j] = _mm512_sllv_epi32(acc[k][j], left);
        }
    }
    __m512i words[4][2];
    QF_UNROLL
    for (int half = 0; half < 2; half++) {
        __m512i y[4][2];
        QF_UNROLL
        for (int jj = 0; jj < 2; jj++) {
            const int j = 2 * half + jj;
            const qf_requant_hi constants = qf_dwv_requant_constants(header + j * QF_DWV_HEADER_ROWS * 16);
            QF_UNROLL
            for (int k = 0; k < n; k++) {
                y[k][jj] = relu ? qf_requant_hi_relu_avx512(acc[k][j], &constants)
                                : qf_requant_hi_avx512(acc[k][j], &constants);
            }
        }
        QF_UNROLL
        for (int k = 0; k < n; k++) words[k][half] = qf_pack_i16_avx512(y[k][0], y[k][1], o->zero_point16);
    }
    QF_UNROLL
    for (int k = 0; k < n; k++) {
        __m512i b = _mm512_packus_epi16(words[k][0], words[k][1]);
        if (o->clamp_min) b = _mm512_max_epu8(b, o->qmin);
        if (o->clamp_max) b = _mm512_min_epu8(b, o->qmax);
        bytes[k] = b;
    }
}

QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_requantize4(__m512i acc[4][4], const int32_t* header, int shifts_left, const qf_dwv_output* o,
                   __m512i bytes[4]) {
    if (o->relu) {
        qf_dwv_requantize4_as(1, acc, header, shifts_left, o, bytes);
    } else {
        qf_dwv_requantize4_as(0, acc, header, shifts_left, o, bytes);
    }
}

// Accumulators start at the packed bias (zero point already folded in).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void qf_dwv_bias(const int32_t* header,
                                                                                  __m512i acc[4]) {
    QF_UNROLL
    for (int j = 0; j < 4; j++) acc[j] = _mm512_loadu_si512(header + (j * QF_DWV_HEADER_ROWS + QF_DWV_BIAS) * 16);
}

// The rest of a one-pixel-per-slot block once its nine tap registers are loaded: bias, 12 multiply-accumulate
// instructions for 9 taps × 64 lanes, requantization, store.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_nine_taps(int P, const __m512i x[9], const uint8_t* block, uint8_t* const* dst, size_t c0, __mmask64 mask,
                 const qf_dwv_output* o) {
    const int32_t* header = (const int32_t*)block;
    const uint8_t* w = block + QF_DWV_HEADER_BYTES;
    __m512i acc[4], r[4];
    qf_dwv_bias(header, acc);
    qf_dwv_interleave(x[0], x[1], x[2], x[3], r);
    QF_UNROLL
    for (int j = 0; j < 4; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], r[j], _mm512_loadu_si512(w + (0 * 4 + j) * 64));
    qf_dwv_interleave(x[4], x[5], x[6], x[7], r);
    QF_UNROLL
    for (int j = 0; j < 4; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], r[j], _mm512_loadu_si512(w + (1 * 4 + j) * 64));
    // Tap 8 alone: vpshufb moves byte 4j+k of each 128-bit lane to byte 0 of dword k and zeroes the rest.
    QF_UNROLL
    for (int j = 0; j < 4; j++) {
        const int b = 4 * j;
        const __m512i pick = _mm512_set4_epi32((int32_t)(0x80808000u | (uint32_t)(b + 3)),
                                               (int32_t)(0x80808000u | (uint32_t)(b + 2)),
                                               (int32_t)(0x80808000u | (uint32_t)(b + 1)),
                                               (int32_t)(0x80808000u | (uint32_t)b));
        acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_shuffle_epi8(x[8], pick),
                                     _mm512_loadu_si512(w + (2 * 4 + j) * 64));
    }
    __m512i bytes[1];
    qf_dwv_requantize(1, (__m512i(*)[4])acc, header, o->shifts_left, o, bytes);
    qf_dwv_store(P, bytes[0], dst, c0, mask);
}

// One block of P output pixels, any stride: taps[p][t] is tap t of pixel p (NULL in the padding).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_pixels(int P, const uint8_t* const taps[][9], size_t c0, __mmask64 mask, __m512i zero_vector,
              const uint8_t* block, uint8_t* const* dst, const qf_dwv_output* o) {
    __m512i x[9];
    QF_UNROLL
    for (int t = 0; t < 9; t++) {
        const uint8_t* p[4];
        QF_UNROLL
        for (int k = 0; k < P; k++) p[k] = taps[k][t];
        x[t] = qf_dwv_load(P, p, c0, mask, zero_vector);
    }
    qf_dwv_nine_taps(P, x, block, dst, c0, mask, o);
}

// Stride 2, P pixels whose 3×3 windows lie inside the image: tap t of slot p is at top_left[p] + ky·row + kx·C, so
// the loads are addressed from P base pointers instead of a table of 9·P pointers on the stack, each tested for
// padding (the stride-2 layers of MobileNetV2-FMNIST measured 10-20 % faster).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_pixels_inside(int P, const uint8_t* const* top_left, size_t row, size_t C, size_t c0, __mmask64 mask,
                     const uint8_t* block, uint8_t* const* dst, const qf_dwv_output* o) {
    __m512i x[9];
    QF_UNROLL
    for (int t = 0; t < 9; t++) {
        const size_t offset = (size_t)(t / 3) * row + (size_t)(t % 3) * C + c0;
        if (P == 1) {
            x[t] = _mm512_maskz_loadu_epi8(mask, top_left[0] + offset);
        } else if (P == 2) {
            const __m256i lo = _mm256_maskz_loadu_epi8((__mmask32)mask, top_left[0] + offset);
            const __m256i hi = _mm256_maskz_loadu_epi8((__mmask32)mask, top_left[1] + offset);
            x[t] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        } else {
            __m128i q[4];
            QF_UNROLL
            for (int k = 0; k < 4; k++) q[k] = _mm_maskz_loadu_epi8((__mmask16)mask, top_left[k] + offset);
            const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(q[0]), q[1], 1);
            const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(q[2]), q[3], 1);
            x[t] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
    }
    qf_dwv_nine_taps(P, x, block, dst, c0, mask, o);
}

// Two neighbouring output pixels (stride 1) in each of P slots: columns[p][ky][q] is input column ox−1+q of
// kernel row ky for slot p's left pixel ox (NULL in the padding).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_pixel_pairs(int P, const uint8_t* const columns[][3][4], size_t c0, __mmask64 mask, __m512i zero_vector,
                   const uint8_t* block, uint8_t* const* dst_left, uint8_t* const* dst_right,
                   const qf_dwv_output* o) {
    const int32_t* header = (const int32_t*)block;
    const uint8_t* w = block + QF_DWV_HEADER_BYTES + QF_DWV_WEIGHT_BYTES;
    __m512i acc[2][4], r[4];  // left and right pixel
    qf_dwv_bias(header, acc[0]);
    QF_UNROLL
    for (int j = 0; j < 4; j++) acc[1][j] = acc[0][j];
    QF_UNROLL
    for (int ky = 0; ky < 3; ky++) {
        __m512i x[4];
        QF_UNROLL
        for (int q = 0; q < 4; q++) {
            const uint8_t* p[4];
            QF_UNROLL
            for (int k = 0; k < P; k++) p[k] = columns[k][ky][q];
            x[q] = qf_dwv_load(P, p, c0, mask, zero_vector);
        }
        qf_dwv_interleave(x[0], x[1], x[2], x[3], r);
        QF_UNROLL
        for (int j = 0; j < 4; j++) {
            acc[0][j] = _mm512_dpbusd_epi32(acc[0][j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 0) * 4 + j) * 64));
            acc[1][j] = _mm512_dpbusd_epi32(acc[1][j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 1) * 4 + j) * 64));
        }
    }
    __m512i bytes[2];
    // Four pixels per register (≤ 16 channels) keep the general requantization: with the ReLU form as well, this
    // function measured 24 % slower for 16 channels (and the others 8-13 % faster with it).
    if (P == 4) {
        qf_dwv_requantize_as(0, 2, acc, header, o->shifts_left, o, bytes);
    } else {
        qf_dwv_requantize(2, acc, header, o->shifts_left, o, bytes);
    }
    qf_dwv_store(P, bytes[0], dst_left, c0, mask);
    qf_dwv_store(P, bytes[1], dst_right, c0, mask);
}

// A 2×2 block of output pixels (stride 1: rows oy, oy+1, columns ox, ox+1) in each of P slots:
// columns[p][i][q] is input column ox−1+q of input row oy−1+i (i = 0..3) for slot p (NULL in the padding).
// Input rows oy and oy+1 serve both output rows, so the block interleaves four row quads instead of the six of
// two pairs: 8 shuffles per output pixel instead of 12, and the block's 16 outputs share each requantization
// constant load. With `inside` (every window of the step inside the image) the inputs are addressed from one base
// pointer per slot, top_left[p] + i·row_bytes + q·C, with no padding tests; without it they come from the table.
// Measured against pairs on MobileNetV2-FMNIST's stride-1 layers: 5-15 % faster each, but only with the base
// pointers (through the table of 16 pointers the one-block layers were 3-5 % slower), and only for P ≤ 2 (P = 4
// blocks gained nothing and the whole kernel measured slower with them).
// dst[k][p]: output pixel k (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of slot p.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_pixel_quads(int P, int inside, const uint8_t* const columns[][4][4], const uint8_t* const* top_left,
                   size_t row_bytes, size_t C, size_t c0, __mmask64 mask, __m512i zero_vector,
                   const uint8_t* block, uint8_t* const dst[4][4], const qf_dwv_output* o) {
    const int32_t* header = (const int32_t*)block;
    const uint8_t* w = block + QF_DWV_HEADER_BYTES + QF_DWV_WEIGHT_BYTES;
    __m512i acc[4][4], r[4];
    qf_dwv_bias(header, acc[0]);
    QF_UNROLL
    for (int k = 1; k < 4; k++) {
        QF_UNROLL
        for (int j = 0; j < 4; j++) acc[k][j] = acc[0][j];
    }
    QF_UNROLL
    for (int i = 0; i < 4; i++) {
        __m512i x[4];
        QF_UNROLL
        for (int q = 0; q < 4; q++) {
            const uint8_t* p[4];
            QF_UNROLL
            for (int k = 0; k < P; k++) {
                p[k] = inside ? top_left[k] + (size_t)i * row_bytes + (size_t)q * C : columns[k][i][q];
            }
            x[q] = inside ? qf_dwv_load_inside(P, p, c0, mask) : qf_dwv_load(P, p, c0, mask, zero_vector);
        }
        qf_dwv_interleave(x[0], x[1], x[2], x[3], r);
        QF_UNROLL
        for (int row = 0; row < 2; row++) {
            const int ky = i - row;  // kernel row of input row i for output row `row`
            if (ky < 0 || ky > 2) continue;
            QF_UNROLL
            for (int j = 0; j < 4; j++) {
                acc[2 * row][j] =
                    _mm512_dpbusd_epi32(acc[2 * row][j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 0) * 4 + j) * 64));
                acc[2 * row + 1][j] =
                    _mm512_dpbusd_epi32(acc[2 * row + 1][j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 1) * 4 + j) * 64));
            }
        }
    }
    __m512i bytes[4];
    qf_dwv_requantize4(acc, header, o->shifts_left, o, bytes);
    QF_UNROLL
    for (int k = 0; k < 4; k++) qf_dwv_store(P, bytes[k], dst[k], c0, mask);
}

// Input columns ox−1 … ox+2 of input rows oy−1 … oy−2+input_rows around output pixel (oy, ox), stride 1 (NULL
// outside): 3 rows for a pair, 4 for a 2×2 block. Inside the image (the common case) they are fixed offsets: the
// general branch, called for every pair, was 14 % of the kernel's time in the int8 engine's profile.
static inline __attribute__((always_inline)) void qf_dwv_pair_columns(const qf_dwconv_shape* s,
                                                                      const uint8_t* image, size_t oy, size_t ox,
                                                                      int input_rows, const uint8_t* columns[][4]) {
    if (oy >= 1 && oy + (size_t)input_rows - 2 < s->height && ox >= 1 && ox + 2 < s->width) {
        const size_t C = s->channels, row = s->width * C;
        const uint8_t* top_left = image + ((oy - 1) * s->width + (ox - 1)) * C;
        QF_UNROLL
        for (int ky = 0; ky < input_rows; ky++) {
            QF_UNROLL
            for (int q = 0; q < 4; q++) columns[ky][q] = top_left + (size_t)ky * row + (size_t)q * C;
        }
        return;
    }
    QF_UNROLL
    for (int ky = 0; ky < input_rows; ky++) {
        const ptrdiff_t iy = (ptrdiff_t)oy - 1 + ky;
        const int row_inside = iy >= 0 && iy < (ptrdiff_t)s->height;
        QF_UNROLL
        for (int q = 0; q < 4; q++) {
            const ptrdiff_t ix = (ptrdiff_t)ox - 1 + q;
            const int inside = row_inside && ix >= 0 && ix < (ptrdiff_t)s->width;
            columns[ky][q] = inside ? image + ((size_t)iy * s->width + (size_t)ix) * s->channels : NULL;
        }
    }
}

// Output pixels [ox_begin, ox_end) of one row, P single pixels per step through the table of tap pointers (any
// stride, any position). Slots past ox_end repeat the first slot's inputs and store nothing.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_pixels_general(int P, const qf_dwconv_shape* s, const uint8_t* image_base, size_t oy, uint8_t* out_row,
                      const uint8_t* region, size_t block_begin, size_t block_end, __m512i zero_vector,
                      const qf_dwv_output* o, size_t ox_begin, size_t ox_end) {
    const size_t C = s->channels, W = ox_end;
    const size_t lanes = 64 / (size_t)P;
    for (size_t ox = ox_begin; ox < W; ox += (size_t)P) {
        const uint8_t* taps[4][9];
        uint8_t* dst[4];
        QF_UNROLL
        for (int k = 0; k < P; k++) {
            const size_t x = ox + (size_t)k;
            const int used = x < W;
            qf_dwconv_taps_fast(s, image_base, oy, used ? x : ox, taps[k]);
            dst[k] = used ? out_row + x * C : NULL;
        }
        for (size_t b = block_begin; b < block_end; b++) {
            const size_t c0 = b * QF_DWV_BLOCK_CHANNELS;
            const size_t valid = C - c0 < lanes ? C - c0 : lanes;
            const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
            qf_dwv_pixels(P, (const uint8_t* const(*)[9])taps, c0, mask, zero_vector, region + b * QF_DWV_BLOCK_BYTES,
                          dst, o);
        }
    }
}

// `rows` output rows oy, oy+1 of one image of a stride-1 layer (2 only for P ≤ 2), written at out_row and out_row
// + the row's bytes; channel blocks [block_begin, block_end) of P pixels each (P = 1 for full blocks). Two rows
// go in 2×2 blocks, a single row in pairs (P blocks or pairs per step); an odd last column goes P single pixels
// per step. Slots past the row's end repeat the first slot's inputs and store nothing.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_row(int P, int rows, const qf_dwconv_shape* s, const uint8_t* image_base, size_t oy, uint8_t* out_row,
           const uint8_t* region, size_t block_begin, size_t block_end, __m512i zero_vector,
           const qf_dwv_output* o) {
    const size_t C = s->channels, W = s->out_width, row_bytes = W * C;
    const size_t lanes = 64 / (size_t)P;  // channels of one pixel per register
    size_t ox = 0;
    if (rows == 2) {
        const size_t in_row = s->width * C;
        const int rows_inside = oy >= 1 && oy + 2 < s->height;
        for (; ox + 2 <= W; ox += 2 * (size_t)P) {
            uint8_t* dst[4][4];  // [pixel of the block][slot]
            QF_UNROLL
            for (int k = 0; k < P; k++) {
                const size_t x = ox + 2 * (size_t)k;
                const int used = x + 2 <= W;
                uint8_t* top = out_row + x * C;
                dst[0][k] = used ? top : NULL;
                dst[1][k] = used ? top + C : NULL;
                dst[2][k] = used ? top + row_bytes : NULL;
                dst[3][k] = used ? top + row_bytes + C : NULL;
            }
            if (rows_inside && ox >= 1 && ox + 2 * (size_t)P + 1 <= s->width) {
                // Every slot's window inside the image: one base pointer per slot.
                const uint8_t* top_left[4];
                QF_UNROLL
                for (int k = 0; k < P; k++) {
                    top_left[k] = image_base + ((oy - 1) * s->width + ox + 2 * (size_t)k - 1) * C;
                }
                for (size_t b = block_begin; b < block_end; b++) {
                    const size_t c0 = b * QF_DWV_BLOCK_CHANNELS;
                    const size_t valid = C - c0 < lanes ? C - c0 : lanes;
                    const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                    qf_dwv_pixel_quads(P, 1, NULL, top_left, in_row, C, c0, mask, zero_vector,
                                       region + b * QF_DWV_BLOCK_BYTES, dst, o);
                }
                continue;
            }
            const uint8_t* columns[4][4][4];
            QF_UNROLL
            for (int k = 0; k < P; k++) {
                const size_t x = ox + 2 * (size_t)k;
                const int used = x + 2 <= W;
                qf_dwv_pair_columns(s, image_base, oy, used ? x : ox, 4, columns[k]);
            }
            for (size_t b = block_begin; b < block_end; b++) {
                const size_t c0 = b * QF_DWV_BLOCK_CHANNELS;
                const size_t valid = C - c0 < lanes ? C - c0 : lanes;
                const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                qf_dwv_pixel_quads(P, 0, (const uint8_t* const(*)[4][4])columns, NULL, in_row, C, c0, mask,
                                   zero_vector, region + b * QF_DWV_BLOCK_BYTES, dst, o);
            }
        }
        ox = W / 2 * 2;  // the blocks covered every even-width prefix
    } else {
        for (; ox + 2 <= W; ox += 2 * (size_t)P) {
            const uint8_t* columns[4][3][4];
            uint8_t* dst_left[4];
            uint8_t* dst_right[4];
            QF_UNROLL
            for (int k = 0; k < P; k++) {
                const size_t x = ox + 2 * (size_t)k;
                const int used = x + 2 <= W;
                qf_dwv_pair_columns(s, image_base, oy, used ? x : ox, 3, columns[k]);
                dst_left[k] = used ? out_row + x * C : NULL;
                dst_right[k] = used ? out_row + (x + 1) * C : NULL;
            }
            for (size_t b = block_begin; b < block_end; b++) {
                const size_t c0 = b * QF_DWV_BLOCK_CHANNELS;
                const size_t valid = C - c0 < lanes ? C - c0 : lanes;
                const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                qf_dwv_pixel_pairs(P, (const uint8_t* const(*)[3][4])columns, c0, mask, zero_vector,
                                   region + b * QF_DWV_BLOCK_BYTES, dst_left, dst_right, o);
            }
        }
        ox = W / 2 * 2;  // the pairs covered every even-width prefix
    }
    for (int row = 0; row < rows; row++) {
        qf_dwv_pixels_general(P, s, image_base, oy + (size_t)row, out_row + (size_t)row * row_bytes, region,
                              block_begin, block_end, zero_vector, o, ox, W);
    }
}

// One output row at stride 2 (see qf_dwv_row): pixels whose windows lie inside the image through
// qf_dwv_pixels_inside, the rest through the tap table.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_dwv_row_stride2(int P, const qf_dwconv_shape* s, const uint8_t* image_base, size_t oy, uint8_t* out_row,
                   const uint8_t* region, size_t block_begin, size_t block_end, __m512i zero_vector,
                   const qf_dwv_output* o) {
    const size_t C = s->channels, W = s->out_width;
    const size_t lanes = 64 / (size_t)P;  // channels of one pixel per register
    size_t ox = 0;
    // Windows inside the image: centre iy = 2·oy and ix = 2·ox in [1, size − 2].
    const size_t iy = 2 * oy, row = s->width * C;
    if (iy >= 1 && iy + 1 < s->height && s->width >= 2) {
        const uint8_t* image_row = image_base + (iy - 1) * row;
        const size_t inside_end = (s->width - 2) / 2 + 1;  // first ox with 2·ox + 1 ≥ width
        for (ox = 1; ox + (size_t)P <= inside_end; ox += (size_t)P) {
            const uint8_t* top_left[4];
            uint8_t* dst[4];
            QF_UNROLL
            for (int k = 0; k < P; k++) {
                top_left[k] = image_row + (2 * (ox + (size_t)k) - 1) * C;
                dst[k] = out_row + (ox + (size_t)k) * C;
            }
            for (size_t b = block_begin; b < block_end; b++) {
                const size_t c0 = b * QF_DWV_BLOCK_CHANNELS;
                const size_t valid = C - c0 < lanes ? C - c0 : lanes;
                const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                qf_dwv_pixels_inside(P, top_left, row, C, c0, mask, region + b * QF_DWV_BLOCK_BYTES, dst, o);
            }
        }
        // The first pixel (left padding) and whatever the steps above left over.
        qf_dwv_pixels_general(P, s, image_base, oy, out_row, region, block_begin, block_end, zero_vector, o, 0, 1);
    }
    qf_dwv_pixels_general(P, s, image_base, oy, out_row, region, block_begin, block_end, zero_vector, o, ox, W);
}

// Rows [row_begin, row_end) of a stride-2 layer. A function of its own, so that the stride-1 code around it is
// compiled as before (inlined next to it, the stride-1 layers measured ~3 % slower).
QF_TARGET_AVX512VNNI static __attribute__((noinline)) void
qf_dwv_stride2(const qf_dwconv_shape* s, const uint8_t* input, const uint8_t* region, size_t row_begin,
               size_t row_end, uint8_t* output, size_t blocks, size_t full_blocks, size_t tail_pixels,
               __m512i zero_vector, const qf_dwv_output* o) {
    const size_t C = s->channels;
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        uint8_t* out_row = output + r * s->out_width * C;
        if (full_blocks > 0) {
            qf_dwv_row_stride2(1, s, image_base, oy, out_row, region, 0, full_blocks, zero_vector, o);
        }
        if (tail_pixels == 2) {
            qf_dwv_row_stride2(2, s, image_base, oy, out_row, region, blocks - 1, blocks, zero_vector, o);
        }
        if (tail_pixels == 4) {
            qf_dwv_row_stride2(4, s, image_base, oy, out_row, region, blocks - 1, blocks, zero_vector, o);
        }
    }
}

QF_TARGET_AVX512VNNI void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* s, const uint8_t* input,
                                                       const void* packed, size_t row_begin, size_t row_end,
                                                       uint8_t* output, const qf_output_params* out) {
    const size_t C = s->channels;
    const uint8_t* region = (const uint8_t*)packed + qf_dw_generic_bytes(C);
    const __m512i zero_vector = _mm512_set1_epi8((char)s->input_zero_point);
    const size_t blocks = qf_dwv_blocks(C);
    int shifts_left = 0;
    for (size_t b = 0; b < blocks; b++) {
        const int32_t* header = (const int32_t*)(region + b * QF_DWV_BLOCK_BYTES);
        for (size_t i = 0; i < 4 * 16; i++) shifts_left |= header[(i / 16 * QF_DWV_HEADER_ROWS + QF_DWV_LEFT_SHIFT) * 16 + i % 16] != 0;
    }
    const qf_dwv_output o = {
        .zero_point16 = _mm512_set1_epi16((short)out->zero_point),
        .qmin = _mm512_set1_epi8((char)(uint8_t)out->qmin),
        .qmax = _mm512_set1_epi8((char)(uint8_t)out->qmax),
        .clamp_min = out->qmin > 0,
        .clamp_max = out->qmax < 255,
        .shifts_left = shifts_left,
        .relu = out->qmin >= out->zero_point,
    };
    const size_t tail_pixels = qf_dwv_block_pixels(C, blocks - 1);
    const size_t full_blocks = tail_pixels == 1 ? blocks : blocks - 1;
    if (s->stride == 2) {
        qf_dwv_stride2(s, input, region, row_begin, row_end, output, blocks, full_blocks, tail_pixels, zero_vector, &o);
        return;
    }
    for (size_t r = row_begin; r < row_end;) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        uint8_t* out_row = output + r * s->out_width * C;
        // Two rows of the same image at once (2×2 blocks); a last or lone row goes alone. The `rows` argument of
        // qf_dwv_row is a literal at each call, so that each case is compiled on its own. A last block of 4 pixels
        // per register goes row by row in pairs (as 2×2 blocks the whole kernel measured slower).
        const size_t rows = r + 1 < row_end && oy + 1 < s->out_height ? 2 : 1;
        if (full_blocks > 0) {
            if (rows == 2) {
                qf_dwv_row(1, 2, s, image_base, oy, out_row, region, 0, full_blocks, zero_vector, &o);
            } else {
                qf_dwv_row(1, 1, s, image_base, oy, out_row, region, 0, full_blocks, zero_vector, &o);
            }
        }
        if (tail_pixels == 2) {
            if (rows == 2) {
                qf_dwv_row(2, 2, s, image_base, oy, out_row, region, blocks - 1, blocks, zero_vector, &o);
            } else {
                qf_dwv_row(2, 1, s, image_base, oy, out_row, region, blocks - 1, blocks, zero_vector, &o);
            }
        }
        if (tail_pixels == 4) {
            for (size_t k = 0; k < rows; k++) {
                qf_dwv_row(4, 1, s, image_base, oy + k, out_row + k * s->out_width * C, region, blocks - 1, blocks,
                           zero_vector, &o);
            }
        }
        r += rows;
    }
}

QF_TARGET_AVX2 void qf_dwconv3x3_u8s8_avx2(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                                           size_t row_begin, size_t row_end, uint8_t* output,
                                           const qf_output_params* out) {
    const size_t C = s->channels;
    const __m256i input_zero = _mm256_set1_epi32(s->input_zero_point);
    const __m256i zero_point = _mm256_set1_epi32(out->zero_point);
    const __m256i lo = _mm256_set1_epi32(out->qmin - out->zero_point);
    const __m256i hi = _mm256_set1_epi32(out->qmax - out->zero_point);
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        for (size_t ox = 0; ox < s->out_width; ox++) {
            const uint8_t* taps[9];
            qf_dwconv_taps_fast(s, image_base, oy, ox, taps);
            uint8_t* dst = output + (r * s->out_width + ox) * C;
            for (size_t c0 = 0; c0 < C; c0 += 8) {
                const size_t valid = C - c0 < 8 ? C - c0 : 8;
                const uint8_t* group = (const uint8_t*)packed + (c0 / 16) * QF_DW_GROUP_BYTES;
                const size_t lane0 = c0 % 16;
                const int32_t* header = (const int32_t*)group;
                const int8_t* w = (const int8_t*)(group + QF_DW_HEADER_BYTES);
                __m256i acc = _mm256_loadu_si256((const __m256i*)(header + QF_DW_BIAS * 16 + lane0));
                for (int t = 0; t < 9; t++) {
                    __m256i x = input_zero;
                    if (taps[t]) {
                        uint64_t bytes = 0;  // 8 channels, fewer at the end of the pixel (never read past it)
                        memcpy(&bytes, taps[t] + c0, valid);
                        x = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));
                    }
                    uint64_t wbytes;
                    memcpy(&wbytes, w + t * 16 + lane0, 8);
                    const __m256i wt = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)wbytes));
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, wt));
                }
                const __m256i y = qf_requantize_avx2(
                    acc, _mm256_loadu_si256((const __m256i*)(header + QF_DW_MULTIPLIER * 16 + lane0)),
                    _mm256_loadu_si256((const __m256i*)(header + QF_DW_LEFT_SHIFT * 16 + lane0)),
                    _mm256_loadu_si256((const __m256i*)(header + QF_DW_RIGHT_SHIFT * 16 + lane0)), lo, hi,
                    zero_point);
                uint8_t bytes[16];
                _mm_storeu_si128((__m128i*)bytes, qf_narrow_u8_avx2(y));
                memcpy(dst + c0, bytes, valid);
            }
        }
    }
}

#else
void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                                  size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    qf_dwconv3x3_u8s8_scalar(s, input, packed, row_begin, row_end, output, out);
}
void qf_dwconv3x3_u8s8_avx2(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                            size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    qf_dwconv3x3_u8s8_scalar(s, input, packed, row_begin, row_end, output, out);
}
#endif
