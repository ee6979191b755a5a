/*
 * gguf_dequant.c — reference dequantisation of the tensor types the GGUF
 * reader supports, written as ggml's dequantize_row_* (and the gguf Python
 * package's gguf.quants.dequantize) define them:
 *
 *   Q4_0  block of 32: f16 d, 16 bytes qs   x[j] = d * ((qs[j] & 0xF) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1  block of 32: f16 d, f16 m, 16 qs  x[j] = d * (qs[j] & 0xF) + m,   x[j+16] = d * (qs[j] >> 4) + m
 *   Q8_0  block of 32: f16 d, 32 int8 q     x[j] = d * q[j]
 *   F16, BF16: exact conversion; F32: a copy.
 *
 * The results are bit-exact, whatever the compiler does with them: d * q
 * is exact in float (d has an 11-bit significand, q at most 8 bits, the
 * product at most 19 of float's 24; f16 subnormals are normal floats), so
 * the only rounding is Q4_1's + m, and it is the same fused (FMA, as
 * -ffp-contract=fast may compile it) or not (numpy).  The tests compare bit
 * for bit with the gguf package's values.
 */

#include <string.h>

#include "io/gguf_impl.h"
#include "base/base.h"

static void dequant_q4_0(const unsigned char *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = mattn_f16_to_f32(gguf_ld16(b));
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((b[2 + j] & 0x0F) - 8);
            y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const unsigned char *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        const float d = mattn_f16_to_f32(gguf_ld16(b)), m = mattn_f16_to_f32(gguf_ld16(b + 2));
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(b[4 + j] & 0x0F) + m;
            y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
        }
    }
}

static void dequant_q8_0(const unsigned char *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const float d = mattn_f16_to_f32(gguf_ld16(b));
        for (int j = 0; j < 32; j++) y[j] = d * (float)(int8_t)b[2 + j];
    }
}

mattn_status mattn_gguf_dequant_ref(mattn_ggml_type type, const void *src, float *dst, int64_t n) {
    if (!mattn_gguf_type_supported(type))
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_dequant_ref: unsupported type %u (%s)",
                               (unsigned)type, mattn_gguf_type_name(type));
    const int64_t bs = mattn_gguf_block_size(type);
    if (n < 0 || n % bs)
        return mattn_set_error(MATTN_ERR_INVALID_ARG,
                               "mattn_gguf_dequant_ref: %lld elements of %s (a multiple of %lld)", (long long)n,
                               mattn_gguf_type_name(type), (long long)bs);
    if (n == 0) return MATTN_OK;
    if (!src || !dst) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_dequant_ref: NULL src or dst");
    const unsigned char *s = src;
    switch (type) {
    case MATTN_GGML_F32: memcpy(dst, s, (size_t)n * 4); break;
    case MATTN_GGML_F16: for (int64_t i = 0; i < n; i++) dst[i] = mattn_f16_to_f32(gguf_ld16(s + 2 * i)); break;
    case MATTN_GGML_BF16: for (int64_t i = 0; i < n; i++) dst[i] = mattn_bf16_to_f32(gguf_ld16(s + 2 * i)); break;
    case MATTN_GGML_Q4_0: dequant_q4_0(s, dst, n / 32); break;
    case MATTN_GGML_Q4_1: dequant_q4_1(s, dst, n / 32); break;
    case MATTN_GGML_Q8_0: dequant_q8_0(s, dst, n / 32); break;
    }
    return MATTN_OK;
}
