/*
 * quant_act.c — the measurement behind quant.c's choice of activation
 * format (docs/performance.md, "Quantised weights"): the shipped kernels,
 * which keep x in fp32 and dequantise W in registers or into a panel (A),
 * against llama.cpp's way (B): x quantised on the fly to 8-bit blocks (fp32
 * scale d, fp32 s = d Σq, 32 int8), integer dot products of the weights'
 * unsigned bytes with them (vpdpbusd through simd.h's vdot4_u8s8), one
 * conversion and FMA per block:
 *   Q4_1: y = Σ_b d_w d_x Σ_j q_j x̂_j + m_b s_b
 *   Q8_0: y = Σ_b d_w d_x Σ_j (q_j + 128) x̂_j - 128 d_w s_b
 * B's GEMM is a 4 × 4 tile of (x rows, W rows).  Both run from the same
 * weights, on the SmolLM2-135M shapes, threads 1 and 2, best of >= 0.3 s;
 * B's time includes quantising x.  An experiment, not a library kernel.
 *
 *   build/bench_quant_act
 */
#include "../src/kernels/quant.c"
#include "../tools/bench_harness.h"
#include "../tools/cli.h"

typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef struct { int8_t *q; float *d, *s; } qx_t;

/* x (M, K) to 8-bit blocks: d = max|x| / 127, q = round(x / d), s = d Σq. */
static void quantize_x(const float *x, int M, int K, qx_t *o) {
    for (int i = 0; i < M; i++)
        for (int b = 0; b < K / QK; b++) {
            const float *v = x + (size_t)i * K + QK * b;
            mattn_vf a = vset1(0.0f);
            for (int u = 0; u < NVB; u++) a = vmax(a, vmax(vload(v + u * MATTN_VL), -vload(v + u * MATTN_VL)));
            const float amax = vhmax(a), d = amax / 127, id = d ? 1.0f / d : 0.0f;
            int8_t *q = o->q + (size_t)i * K + QK * b;
            int sum = 0;
            for (int u = 0; u < NVB; u++) {
                const mattn_vf r = (vload(v + u * MATTN_VL) * id + 0x1.8p23f) - 0x1.8p23f; /* round to nearest */
                const mattn_vi qi = __builtin_convertvector(r, mattn_vi);
                for (int j = 0; j < MATTN_VL; j++) q[u * MATTN_VL + j] = (int8_t)qi[j], sum += qi[j];
            }
            o->d[(size_t)i * (K / QK) + b] = d, o->s[(size_t)i * (K / QK) + b] = d * (float)sum;
        }
}

static inline __attribute__((always_inline)) mattn_v32u8 unpack(int t, const uint8_t *p) {
    if (t == MATTN_GGML_Q4_1) {
        v16u8 q;
        memcpy(&q, p + 4, 16);
        return __builtin_shufflevector(q & 15, q >> 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
                                       18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    mattn_v32u8 q;
    memcpy(&q, p + 2, 32);
    return q ^ 0x80;
}
static inline float corr_of(int t, const uint8_t *p, float dw) { return t == MATTN_GGML_Q4_1 ? mattn_h2f(ld16(p + 2)) : -128.0f * dw; }
static inline float hsum8(mattn_v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* B's GEMV over rows [n0, n1), 4 rows per step (rows past n1 clamped) */
static inline __attribute__((always_inline)) void gemv_b(int t, const uint8_t *W, size_t rb, const qx_t *x, float *y,
                                                         int n0, int n1, int K) {
    const size_t bb = t == MATTN_GGML_Q4_1 ? 20 : 34;
    for (int n = n0; n < n1; n += 4) {
        mattn_v8f acc[4] = {0};
        float corr[4] = {0};
        const uint8_t *row[4];
        for (int r = 0; r < 4; r++) row[r] = W + (size_t)(n + r < n1 ? n + r : n1 - 1) * rb;
        for (int b = 0; b < K / QK; b++) {
            mattn_v32s8 xb;
            memcpy(&xb, x->q + QK * b, 32);
            const float dx = x->d[b], sx = x->s[b];
            for (int r = 0; r < 4; r++) {
                const uint8_t *p = row[r] + bb * b;
                const float dw = mattn_h2f(ld16(p));
                const mattn_v8i iv = vdot4_u8s8((mattn_v8i){0}, unpack(t, p), xb);
                acc[r] += __builtin_convertvector(iv, mattn_v8f) * (dw * dx);
                corr[r] += corr_of(t, p, dw) * sx;
            }
        }
        for (int r = 0; r < 4 && n + r < n1; r++) y[n + r] = hsum8(acc[r]) + corr[r];
    }
}

/* B's GEMM: 4 x rows x 4 W rows per tile */
static inline __attribute__((always_inline)) void gemm_b(int t, const uint8_t *W, size_t rb, const qx_t *x, float *y,
                                                         int M, int n0, int n1, int N, int K) {
    const size_t bb = t == MATTN_GGML_Q4_1 ? 20 : 34;
    const int nb = K / QK;
    for (int n = n0; n < n1; n += 4)
        for (int i0 = 0; i0 < M; i0 += 4) {
            mattn_v8f acc[4][4];
            memset(acc, 0, sizeof acc);
            float corr[4][4] = {{0}};
            const uint8_t *row[4];
            int ii[4];
            for (int r = 0; r < 4; r++) row[r] = W + (size_t)(n + r < n1 ? n + r : n1 - 1) * rb;
            for (int i = 0; i < 4; i++) ii[i] = i0 + i < M ? i0 + i : M - 1;
            for (int b = 0; b < nb; b++) {
                mattn_v32u8 u[4];
                float dw[4], c[4];
                for (int r = 0; r < 4; r++) {
                    const uint8_t *p = row[r] + bb * b;
                    u[r] = unpack(t, p), dw[r] = mattn_h2f(ld16(p)), c[r] = corr_of(t, p, dw[r]);
                }
                for (int i = 0; i < 4; i++) {
                    mattn_v32s8 xb;
                    memcpy(&xb, x->q + (size_t)ii[i] * K + QK * b, 32);
                    const float dx = x->d[(size_t)ii[i] * nb + b], sx = x->s[(size_t)ii[i] * nb + b];
                    for (int r = 0; r < 4; r++) {
                        acc[i][r] += __builtin_convertvector(vdot4_u8s8((mattn_v8i){0}, u[r], xb), mattn_v8f) * (dw[r] * dx);
                        corr[i][r] += c[r] * sx;
                    }
                }
            }
            for (int i = 0; i < 4 && i0 + i < M; i++)
                for (int r = 0; r < 4 && n + r < n1; r++) y[(size_t)(i0 + i) * N + n + r] = hsum8(acc[i][r]) + corr[i][r];
        }
}

typedef struct {
    mattn_ggml_type t;
    int M, N, K, b;
    const uint8_t *W;
    const float *x;
    float *y;
    qx_t q;
    void *scr;
    size_t sb;
} act_case;

static int run_a(void *p) {
    act_case *c = p;
    return mattn_qmatmul(c->y, c->x, c->W, c->t, c->M, c->N, c->K, c->scr, c->sb) != 0;
}

static int run_b(void *p) {
    act_case *c = p;
    const size_t rb = mattn_gguf_nbytes(c->t, c->K);
    quantize_x(c->x, c->M, c->K, &c->q);
    const int tiles = (c->N + 3) / 4;
    #pragma omp parallel for schedule(static) if (rb * (size_t)c->N >= GEMV_PAR_BYTES)
    for (int g = 0; g < tiles; g++) {
        const int n0 = 4 * g, n1 = n0 + 4 < c->N ? n0 + 4 : c->N;
        if (c->t == MATTN_GGML_Q4_1) {
            if (c->M == 1) gemv_b(MATTN_GGML_Q4_1, c->W, rb, &c->q, c->y, n0, n1, c->K);
            else gemm_b(MATTN_GGML_Q4_1, c->W, rb, &c->q, c->y, c->M, n0, n1, c->N, c->K);
        } else {
            if (c->M == 1) gemv_b(MATTN_GGML_Q8_0, c->W, rb, &c->q, c->y, n0, n1, c->K);
            else gemm_b(MATTN_GGML_Q8_0, c->W, rb, &c->q, c->y, c->M, n0, n1, c->N, c->K);
        }
    }
    return 0;
}

int main(void) {
    static const int shapes[][3] = {{1, 576, 576}, {1, 1536, 576}, {1, 576, 1536}, {1, 49152, 576},
                                    {64, 576, 576}, {64, 1536, 576}, {64, 576, 1536}};
    static const mattn_ggml_type types[] = {MATTN_GGML_Q4_1, MATTN_GGML_Q8_0};
    bench b = {.min_time = 0.3, .tab = stdout};
    printf("activation format: A = fp32 x (shipped), B = 8-bit x (llama.cpp's); GB/s of weight bytes, GFLOP/s\n");
    for (int th = 1; th <= 2; th++) {
        cli_set_threads(th);
        for (int ti = 0; ti < 2; ti++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                act_case c = {.t = types[ti], .M = shapes[s][0], .N = shapes[s][1], .K = shapes[s][2]};
                const size_t wb = mattn_gguf_nbytes(c.t, c.K) * (size_t)c.N;
                uint8_t *W = (uint8_t *)bench_floats(wb / 4 + 1);
                uint64_t st = 7;
                for (size_t i = 0; i < wb; i++) W[i] = (uint8_t)(bench_rand(&st) >> 56);
                const size_t bbytes = mattn_gguf_block_bytes(c.t);
                for (size_t i = 0; i < wb; i += bbytes) W[i + 1] = 0x20; /* f16 scales ~ 2^-7: finite */
                if (c.t == MATTN_GGML_Q4_1) for (size_t i = 0; i < wb; i += bbytes) W[i + 3] = 0x20;
                c.W = W;
                c.x = bench_randn((size_t)c.M * c.K, 3, 1.0), c.y = bench_floats((size_t)c.M * c.N);
                c.q.q = malloc((size_t)c.M * c.K), c.q.d = bench_floats((size_t)c.M * c.K / 32), c.q.s = bench_floats((size_t)c.M * c.K / 32);
                c.sb = mattn_qmatmul_scratch(c.t, c.M, c.K, th), c.scr = c.sb ? mattn_amalloc(c.sb) : NULL;
                double ta, tb;
                bench_best_time2(&b, run_a, &c, run_b, &c, &ta, &tb);
                const double fl = 2.0 * c.M * c.N * c.K;
                float *ya = bench_floats((size_t)c.M * c.N);
                run_a(&c), memcpy(ya, c.y, sizeof(float) * c.M * c.N), run_b(&c);
                double dmax = 0, ymax = 0; /* B against A, relative to the largest output */
                for (size_t i = 0; i < (size_t)c.M * c.N; i++)
                    dmax = fmax(dmax, fabs(ya[i] - c.y[i])), ymax = fmax(ymax, fabs(ya[i]));
                free(ya);
                printf("  %d thr %s M=%-2d %5dx%-4d  A %8.1f us %6.1f GB/s %6.1f GFLOP/s   B %8.1f us %6.1f GB/s %6.1f GFLOP/s   B/A time %.2f  |B-A|/max|A| %.1e\n",
                       th, mattn_gguf_type_name(c.t), c.M, c.N, c.K, ta * 1e6, wb / ta * 1e-9, fl / ta * 1e-9, tb * 1e6,
                       wb / tb * 1e-9, fl / tb * 1e-9, tb / ta, dmax / ymax);
                free(W), free((void *)c.x), free(c.y), free(c.q.q), free(c.q.d), free(c.q.s), mattn_afree(c.scr);
            }
    }
    return 0;
}
