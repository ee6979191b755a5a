/*
 * simd.h — the per-ISA vector layer of the fast kernels: one vector type of
 * MATTN_VL floats written with GCC/Clang vector extensions, so the same
 * source compiles to AVX-512 (16 lanes), AVX2 (8) or SSE2/NEON/scalar (4)
 * code with no intrinsics (but for a horizontal sum and the half
 * conversions, where the ISA's instruction is the point).  Only what the
 * kernels need: unaligned load and store, broadcast, horizontal max/sum,
 * exp.
 *
 * The double build of the gradient checks (float #defined to double, see
 * CMakeLists.txt) gets vectors of doubles and a lane-wise exp.
 */
#ifndef MATTN_SIMD_H
#define MATTN_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define MATTN_VBYTES 64
#elif defined(__AVX__)
#define MATTN_VBYTES 32
#else
#define MATTN_VBYTES 16
#endif
#define MATTN_VL ((int)(MATTN_VBYTES / sizeof(float)))

typedef float mattn_vf __attribute__((vector_size(MATTN_VBYTES)));
/* Same vector, any alignment: loads and stores through it are unaligned. */
typedef float mattn_vfu __attribute__((vector_size(MATTN_VBYTES), aligned(4), may_alias));

static inline mattn_vf vload(const float *p) { return *(const mattn_vfu *)p; }
static inline void vstore(float *p, mattn_vf v) { *(mattn_vfu *)p = v; }
/* Broadcast.  x - 0 folds to x (exact for every x, -0 included) and leaves
 * one vbroadcastss; {0} + x would add, a lane loop would insert lane by lane. */
static inline mattn_vf vset1(float x) { return x - (mattn_vf){0}; }
#ifndef MATTN_F64
typedef int32_t mattn_vi __attribute__((vector_size(MATTN_VBYTES)));
#else
typedef int64_t mattn_vi __attribute__((vector_size(MATTN_VBYTES)));
#endif
/* Lane-wise max by compare and select (a lane loop would not vectorise). */
static inline mattn_vf vmax(mattn_vf a, mattn_vf b) {
    const mattn_vi m = a > b;
    return (mattn_vf)(((mattn_vi)a & m) | ((mattn_vi)b & ~m));
}
static inline float vhmax(mattn_vf v) {
    float m = v[0];
    for (int i = 1; i < MATTN_VL; i++) m = v[i] > m ? v[i] : m;
    return m;
}
/* Pairwise tree sum: a fixed order, so results do not depend on threads
 * (the upper half added to the lower, down to one lane).  On AVX the same
 * additions through lane extracts and shuffles: GCC compiles the lane loop
 * to scalar adds through the stack, which made the decode step's score
 * loop several times slower. */
#if defined(__AVX__) && !defined(MATTN_F64)
#include <immintrin.h>
static inline float vhsum(mattn_vf v) {
#if MATTN_VBYTES == 64
    const __m512 z = (__m512)v;
    const __m256 s8 = _mm512_castps512_ps256(z) + _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(z), 1));
#else
    const __m256 s8 = (__m256)v;
#endif
    const __m128 s4 = _mm256_castps256_ps128(s8) + _mm256_extractf128_ps(s8, 1);
    const __m128 s2 = s4 + _mm_movehl_ps(s4, s4);
    return _mm_cvtss_f32(s2 + _mm_shuffle_ps(s2, s2, 1));
}
#else
static inline float vhsum(mattn_vf v) {
    for (int w = MATTN_VL / 2; w > 0; w /= 2)
        for (int i = 0; i < w; i++) v[i] += v[i + w];
    return v[0];
}
#endif

#ifndef MATTN_F64
/* exp(x) lane-wise, Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-5
 * polynomial, 2^n through the exponent bits; about 1 ulp.  Lanes below
 * -87.3 (and -inf) give exactly 0, lanes above 88.7 are clamped. */
static inline mattn_vf vexp(mattn_vf x) {
    const mattn_vf lo = vset1(-87.33654f), hi = vset1(88.72283f);
    mattn_vi under = x < lo;
    x = vmax(x, lo);
    x = -vmax(-x, -hi);
    mattn_vf fx = x * 1.44269504088896341f + 0.5f;
    mattn_vi n = __builtin_convertvector(fx, mattn_vi);
    mattn_vf fn = __builtin_convertvector(n, mattn_vf);
    n -= (fn > fx) & 1; /* floor */
    fn = __builtin_convertvector(n, mattn_vf);
    x = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    mattn_vf z = x * x;
    mattn_vf y = vset1(1.9875691500e-4f);
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    mattn_vi bits = (n + 127) << 23;
    mattn_vf r = y * (mattn_vf)bits;
    return (mattn_vf)((mattn_vi)r & ~under);
}
/* erfc(z) for z >= 0, lane-wise: Numerical Recipes' erfcc (Chebyshev fit),
 * relative error < 1.2e-7 everywhere, so 1 + erf(x) = erfc(-x) keeps its
 * relative accuracy deep in the negative tail (no cancellation). */
static inline mattn_vf verfc_pos(mattn_vf z) {
    const mattn_vf t = 1.0f / (1.0f + 0.5f * z);
    mattn_vf y = vset1(0.17087277f);
    y = y * t - 0.82215223f;
    y = y * t + 1.48851587f;
    y = y * t - 1.13520398f;
    y = y * t + 0.27886807f;
    y = y * t - 0.18628806f;
    y = y * t + 0.09678418f;
    y = y * t + 0.37409196f;
    y = y * t + 1.00002368f;
    y = y * t - 1.26551223f;
    return t * vexp(y - z * z);
}

/* 1 + erf(x): erfc(-x) for x < 0, 2 - erfc(x) otherwise. */
static inline mattn_vf vone_plus_erf(mattn_vf x) {
    const mattn_vi neg = x < 0.0f;
    const mattn_vf ax = (mattn_vf)((mattn_vi)x & ~(mattn_vi)vset1(-0.0f));
    const mattn_vf e = verfc_pos(ax);
    return (mattn_vf)(((mattn_vi)e & neg) | ((mattn_vi)(2.0f - e) & ~neg));
}

/* ELU(x) + 1: x + 1 for x > 0, exp(x) otherwise (linear attention's phi). */
static inline mattn_vf vphi(mattn_vf x) {
    const mattn_vi pos = x > 0.0f;
    const mattn_vf e = vexp(-vmax(-x, vset1(0.0f)));
    return (mattn_vf)(((mattn_vi)(x + 1.0f) & pos) | ((mattn_vi)e & ~pos));
}
#else
static inline mattn_vf vexp(mattn_vf x) {
    for (int i = 0; i < MATTN_VL; i++) x[i] = exp(x[i]);
    return x;
}
static inline mattn_vf vphi(mattn_vf x) {
    for (int i = 0; i < MATTN_VL; i++) x[i] = x[i] > 0 ? x[i] + 1 : exp(x[i]);
    return x;
}
static inline mattn_vf vone_plus_erf(mattn_vf x) {
    for (int i = 0; i < MATTN_VL; i++) x[i] = 1 + erf(x[i]);
    return x;
}
#endif

/* GELU (exact erf form) and its derivative. */
static inline mattn_vf vgelu(mattn_vf x) { return 0.5f * x * vone_plus_erf(x * 0.70710678118654752f); }
static inline mattn_vf vgelu_grad(mattn_vf x) {
    return 0.5f * vone_plus_erf(x * 0.70710678118654752f) + x * vexp(-0.5f * x * x) * 0.3989422804014327f;
}

// ----------------------------------------------------------------------------
// half-precision loads and 8-bit dot products (the quantised kernels, quant.c).
// Single precision only: the double build compiles no quantised kernel.
#ifndef MATTN_F64
/* The 32-byte vectors below are arguments of static inline functions only,
 * never of a call across an ABI boundary: GCC's note that SSE-only builds
 * pass them differently from AVX ones does not apply. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#if defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__)
#include <immintrin.h>
#endif

typedef uint32_t mattn_vu __attribute__((vector_size(MATTN_VBYTES)));
typedef uint16_t mattn_vh __attribute__((vector_size(MATTN_VBYTES / 2))); /* MATTN_VL halves */

/* IEEE half bits (zero-extended to 32) to float, exactly: the exponent and
 * mantissa moved into place and rescaled by 2^112 (subnormal halves become
 * normal floats exactly), Inf/NaN given the all-ones exponent, the sign put
 * back.  The portable path of vload_f16 and mattn_h2f. */
static inline mattn_vf vhalf_bits_to_f32(mattn_vu h) {
    const mattn_vu em = h & 0x7fff, sign = (h & 0x8000) << 16;
    const mattn_vf f = (mattn_vf)(em << 13) * 0x1p112f;
    const mattn_vu inf = (mattn_vu)(em >= 0x7c00);
    return (mattn_vf)((((mattn_vu)f & ~inf) | (((em << 13) | 0x7f800000u) & inf)) | sign);
}
/* MATTN_VL halves from p (any alignment) as floats: F16C's vcvtph2ps where
 * the ISA has it (AVX-512 always does), else vhalf_bits_to_f32. */
static inline mattn_vf vload_f16(const void *p) {
#if MATTN_VBYTES == 64
    return (mattn_vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif MATTN_VBYTES == 32 && defined(__F16C__)
    return (mattn_vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    mattn_vh h;
    memcpy(&h, p, sizeof h);
    return vhalf_bits_to_f32(__builtin_convertvector(h, mattn_vu));
#endif
}
/* One half (bits h) to float. */
static inline float mattn_h2f(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return vhalf_bits_to_f32((mattn_vu){0} + h)[0];
#endif
}

/* 32 bytes: one quantised block of activations or of unpacked weights, and
 * the 8 int32 / 8 float lanes its 4-byte dot products land in. */
typedef uint8_t mattn_v32u8 __attribute__((vector_size(32)));
typedef int8_t mattn_v32s8 __attribute__((vector_size(32)));
typedef int32_t mattn_v8i __attribute__((vector_size(32)));
typedef float mattn_v8f __attribute__((vector_size(32)));

/* acc[i] += sum_{j<4} a[4i+j] * b[4i+j], a unsigned and b signed bytes,
 * exact in int32 (no saturation): AVX512-VNNI / AVX-VNNI's vpdpbusd where
 * the build has it, else the same sum from shifts and masks on 32-bit lanes
 * (vector extensions, any ISA). */
static inline mattn_v8i vdot4_u8s8(mattn_v8i acc, mattn_v32u8 a, mattn_v32s8 b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return (mattn_v8i)_mm256_dpbusd_epi32((__m256i)acc, (__m256i)a, (__m256i)b);
#elif defined(__AVXVNNI__)
    return (mattn_v8i)_mm256_dpbusd_avx_epi32((__m256i)acc, (__m256i)a, (__m256i)b);
#else
    typedef uint32_t v8u __attribute__((vector_size(32)));
    const v8u ua = (v8u)a, ub = (v8u)b; /* byte j of each lane: a's zero-, b's sign-extended */
    for (int j = 0; j < 4; j++) acc += (mattn_v8i)((ua >> (8 * j)) & 0xff) * ((mattn_v8i)(ub << (24 - 8 * j)) >> 24);
    return acc;
#endif
}
#pragma GCC diagnostic pop
#endif

/* Element i of a cache's keys or values: floats, or IEEE halves when f16
 * (kernels.h's mattn_kv); a vector of MATTN_VL of them from i.  The double
 * build converts the halves one by one. */
static inline float mattn_kv_at(const void *p, int64_t i, int f16) {
    if (!f16) return ((const float *)p)[i];
#ifndef MATTN_F64
    return mattn_h2f(((const uint16_t *)p)[i]);
#else
    return mattn_f16_to_f32(((const uint16_t *)p)[i]);
#endif
}
static inline mattn_vf vload_kv(const void *p, int64_t i, int f16) {
    if (!f16) return vload((const float *)p + i);
#ifndef MATTN_F64
    return vload_f16((const uint16_t *)p + i);
#else
    mattn_vf v;
    for (int l = 0; l < MATTN_VL; l++) v[l] = mattn_f16_to_f32(((const uint16_t *)p)[i + l]);
    return v;
#endif
}

#endif
