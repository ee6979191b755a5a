/*
 * base.h — the bottom floor, internal: errors and messages, logging,
 * invariants, allocation (with fault injection for the tests), the
 * non-finite scan, half/bfloat16 conversion and the RNG.  Includes nothing
 * of the library but the public header.
 */
#ifndef MATTN_BASE_H
#define MATTN_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "metaattn.h"

// ----------------------------------------------------------------------------
// errors, logging, invariants

#define MATTN_ERRMSG_LEN 512

/* Format a message into the thread-local last-error buffer; returns st. */
mattn_status mattn_set_error(mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, also copying the message into a handle's buffer (may be NULL). */
mattn_status mattn_set_error_h(char *handle_buf, mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mattn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void mattn_abort(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define MATTN_ABORT(...) mattn_abort(__FILE__, __LINE__, __VA_ARGS__)
#define MATTN_ASSERT(x) \
    do { if (!(x)) MATTN_ABORT("MATTN_ASSERT(%s) failed", #x); } while (0)

/* The OpenMP team size a parallel region would get now (1 without OpenMP),
 * and setting it for the calling thread's next regions (omp_set_num_threads;
 * a no-op without OpenMP). */
int mattn_max_threads(void);
void mattn_set_max_threads(int n);

/* Monotonic wall-clock time in seconds (for mattn_stats.seconds). */
double mattn_now(void);

/* Allocation: the library calls these, never malloc & co. directly (status.c).
 * NULL on failure; free with mattn_free (public).  mattn_amalloc is 64-byte
 * aligned (free with mattn_afree). */
void *mattn_malloc(size_t n);
void *mattn_calloc(size_t n, size_t size);
void *mattn_realloc(void *p, size_t n);
char *mattn_strdup(const char *s);
void *mattn_amalloc(size_t n);
void mattn_afree(void *p);
/* Tests only.  Fault injection: counting from this call, allocation n
 * (1-based) fails, and every later one too if persistent; n = 0 turns it off.
 * mattn_alloc_live: allocations not yet freed (cJSON's count too once its
 * hooks are set to mattn_malloc/mattn_free, as tests/test_faults.c does). */
void mattn_fault_alloc(long n, int persistent);
long mattn_alloc_live(void);
long mattn_alloc_count(void);  /* allocations since mattn_fault_alloc (n > 0) */
/* Did an allocation of this thread fail since mattn_alloc_mark()?  Tells an
 * out-of-memory inside cJSON (when its hooks are ours) from a syntax error. */
void mattn_alloc_mark(void);
int mattn_alloc_failed(void);
/* Tests only: fill new mattn_malloc/mattn_amalloc blocks with `byte` (0xff:
 * every float NaN until written), -1 = off (default). */
void mattn_alloc_fill(int byte);
#define MATTN_ALIGN 64

/* Index of the first NaN/Inf in x[0..n), or n: saves refuse non-finite
 * weights, so a diverged run never writes a poisoned checkpoint. */
static inline size_t mattn_find_nonfinite(const float *x, size_t n) {
#ifdef MATTN_F64 /* the double build of the gradient tests: float is double */
    for (size_t i = 0; i < n; i++)
        if (!(x[i] - x[i] == 0.0)) return i;
    return n;
#endif
    for (size_t i0 = 0; i0 < n; i0 += 1024) {
        const size_t e = n - i0 < 1024 ? n : i0 + 1024;
        uint32_t bad = 0;  /* exponent all ones = Inf or NaN; an OR the compiler vectorises */
        for (size_t i = i0; i < e; i++) {
            uint32_t u;
            memcpy(&u, x + i, sizeof u);
            bad |= (~u & 0x7f800000u) == 0;
        }
        if (bad)
            for (size_t i = i0; i < e; i++)
                if (!(x[i] - x[i] == 0.0f)) return i;
    }
    return n;
}
/* IEEE half (binary16) and bfloat16 bits to float, exactly (every half and
 * bfloat16 value is a float; subnormal halves are normalised, NaN payloads
 * kept).  The safetensors and GGUF readers and the quantised formats' scales
 * use them. */
static inline float mattn_f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0) {
        if (m == 0) bits = s;
        else { /* subnormal: normalise */
            e = 113;
            while (!(m & 1024)) { m <<= 1; e--; }
            bits = s | e << 23 | (m & 1023) << 13;
        }
    } else if (e == 31) bits = s | 0x7F800000u | m << 13;
    else bits = s | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
/* Float to IEEE half bits, rounded to nearest even as F16C's vcvtps2ph:
 * overflow to Inf from 65520 up, subnormal halves below 2^-14 (rounded by
 * one float addition of 0.5, whose unit in the last place is the half's
 * 2^-24), NaN kept quiet with the payload's top bits.  The LLaMA decoder's
 * half-precision KV cache stores its keys and values with it. */
static inline uint16_t mattn_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) {
        float a, half = 0.5f;
        memcpy(&a, &ax, 4);
        a += half;
        uint32_t r, hb;
        memcpy(&r, &a, 4);
        memcpy(&hb, &half, 4);
        return (uint16_t)(sign | (r - hb));
    }
    const uint32_t r = ax - 0x38000000u; /* exponent rebiased from 127 to 15 */
    return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1)) >> 13));
}
static inline float mattn_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline size_t mattn_align_up(size_t n) { return (n + MATTN_ALIGN - 1) & ~(size_t)(MATTN_ALIGN - 1); }

/* The one way the library carves an allocation into pieces: each piece
 * starts at a MATTN_ALIGN-aligned offset, in the order they are taken.  To
 * plan, carve with base == NULL (the pieces are NULL, off sums the bytes),
 * allocate off bytes, then carve the same pieces again from the base. */
typedef struct mattn_carver { char *base; size_t off; } mattn_carver;
static inline void *mattn_carve(mattn_carver *c, size_t bytes) {
    char *p = c->base ? c->base + c->off : NULL;
    c->off += mattn_align_up(bytes);
    return p;
}
/* Assign a piece only when carving for real, so that a sizing pass leaves
 * the pointers into a live arena as they are. */
#define MATTN_CARVE(c, ptr, bytes)                      \
    do {                                                \
        void *carved_ = mattn_carve((c), (bytes));      \
        if ((c)->base) (ptr) = carved_;                 \
    } while (0)

// ----------------------------------------------------------------------------
// RNG (docs/bayes-math.md §4): SplitMix64, xoshiro256**, per-token streams

typedef struct mattn_rng { uint64_t s[4]; } mattn_rng;

enum { MATTN_PURPOSE_DIRICHLET = 1, MATTN_PURPOSE_GUMBEL = 2,
       MATTN_PURPOSE_CTRL_DROPOUT = 3, MATTN_PURPOSE_INIT = 4, MATTN_PURPOSE_LM_DROPOUT = 5,
       MATTN_PURPOSE_DATA = 6, MATTN_PURPOSE_SAMPLE = 7, MATTN_PURPOSE_ROUTE = 8,
       MATTN_PURPOSE_ATTN_DROPOUT = 16 /* + expert index */ };

uint64_t mattn_mix64(uint64_t z);
uint64_t mattn_splitmix64_next(uint64_t *state);
void mattn_rng_seed(mattn_rng *r, uint64_t seed);
uint64_t mattn_rng_next(mattn_rng *r);
uint64_t mattn_stream_seed(uint64_t base, uint64_t step, uint64_t n, uint64_t purpose);
double mattn_rng_u01(mattn_rng *r);                 /* open interval (0,1) */
double mattn_rng_normal(mattn_rng *r);              /* Box-Muller, 2 uniforms */
double mattn_rng_gamma(mattn_rng *r, double a, double *log_g); /* Marsaglia-Tsang */
/* Counter-based uniform in (0,1) for dropout masks: a pure function of
 * (key, i), so forward and backward regenerate the same mask. */
static inline double mattn_hash_u01(uint64_t key, uint64_t i) {
    return ((double)(mattn_mix64(key ^ (i * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL)) >> 11) + 0.5)
           * (1.0 / 9007199254740992.0);
}

#endif
