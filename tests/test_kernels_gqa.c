/*
 * test_kernels_gqa.c — the softmax core with grouped-query heads and query
 * chunks against a longer key sequence (a KV cache), forward and decode:
 * against the references and against multi-head attention on repeated K/V
 * heads; keys and values through a mattn_kv view (head by head, floats or
 * IEEE halves), which must give what rows of the same values give; and
 * attention sinks beside a causal window; the grouped forward's team.
 */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "test_util.h"
#include "kernels/simd.h"

// ---------------------------------------------------------------- grouped-query attention
/* q (B,T,H*dh), k and v (B,Tk,Hkv*dh) in separate buffers (their own row
 * strides), or all three fused in rows of (H+2Hkv)*dh when T == Tk; the
 * last T of the Tk key positions are the queries. */
typedef struct {
    int B, T, Tk, H, Hkv, dh, fused;
    float *q, *kv, *out, *ref, *lse, *lse_ref;
    uint8_t *kp;
} gqa_t;

static void gqa_init(gqa_t *c, int B, int T, int Tk, int H, int Hkv, int dh, int fused, uint64_t seed) {
    *c = (gqa_t){.B = B, .T = T, .Tk = Tk, .H = H, .Hkv = Hkv, .dh = dh, .fused = fused};
    const size_t Dq = (size_t)H * dh, Dkv = (size_t)Hkv * dh;
    if (fused) {
        c->q = falloc((size_t)B * T * (Dq + 2 * Dkv));
        fill_normal(c->q, (size_t)B * T * (Dq + 2 * Dkv), seed, 1.0);
    } else {
        c->q = falloc((size_t)B * T * Dq);
        c->kv = falloc((size_t)B * Tk * 2 * Dkv);
        fill_normal(c->q, (size_t)B * T * Dq, seed, 1.0);
        fill_normal(c->kv, (size_t)B * Tk * 2 * Dkv, seed + 1, 1.0);
    }
    c->out = falloc((size_t)B * T * Dq);
    c->ref = falloc((size_t)B * T * Dq);
    c->lse = falloc((size_t)B * H * T);
    c->lse_ref = falloc((size_t)B * H * T);
    c->kp = malloc((size_t)B * Tk);
    for (size_t i = 0; i < (size_t)B * Tk; i++) c->kp[i] = (i * 7919 + seed) % 5 != 0;
}

static void gqa_free(gqa_t *c) {
    free(c->q); free(c->kv); free(c->out); free(c->ref); free(c->lse); free(c->lse_ref); free(c->kp);
}

static mattn_attn_args gqa_args(gqa_t *c, float *out, float *lse, int causal, int window, const mattn_masks *m) {
    const int Dq = c->H * c->dh, Dkv = c->Hkv * c->dh;
    mattn_attn_args a = {.B = c->B, .T = c->T, .H = c->H, .dh = c->dh, .out = out, .ldo = Dq, .masks = m,
                         .causal = causal, .window = window, .lse = lse, .kv_group = c->H / c->Hkv};
    if (c->fused) {
        a.q = c->q, a.k = c->q + Dq, a.v = c->q + Dq + Dkv, a.ld = Dq + 2 * Dkv; /* ldkv 0: ld */
    } else {
        a.q = c->q, a.ld = Dq, a.k = c->kv, a.v = c->kv + Dkv, a.ldkv = 2 * Dkv, a.Tk = c->Tk;
    }
    set_attn_scratch(&a);
    return a;
}

/* Fast vs reference: H 9 / Hkv 3 with dh 64 (SmolLM2's heads), H 6 / Hkv 2
 * with dh 16; T 1, 7, 129 queries over their own keys (fused rows) or at the
 * end of 1, 5, 130 more keys (separate K/V); causal or not, a window, key
 * padding. */
static void test_softmax_gqa_vs_ref(void **st) {
    (void)st;
    const int shapes[][3] = {{9, 3, 64}, {6, 2, 16}}, Ts[] = {1, 7, 129}, pasts[] = {0, 1, 5, 130};
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 3; ti++)
            for (int pi = 0; pi < 4; pi++)
                for (int mode = 0; mode < 4; mode++) {
                    const int H = shapes[si][0], Hkv = shapes[si][1], dh = shapes[si][2], T = Ts[ti];
                    const int Tk = T + pasts[pi], causal = mode != 1, window = mode == 2 ? 6 : -1;
                    /* the reference recomputes every score per output element: keep its big cases few */
                    if (T == 129 && ((pasts[pi] != 0 && pasts[pi] != 130) || (mode == 1 && dh == 64))) continue;
                    const int B = T == 129 ? 1 : 2;
                    gqa_t c;
                    gqa_init(&c, B, T, Tk, H, Hkv, dh, pasts[pi] == 0 && mode != 3, 100 + si * 10 + ti);
                    mattn_masks m = {.key_padding = c.kp};
                    mattn_attn_args a = gqa_args(&c, c.out, c.lse, causal, window, mode == 3 ? &m : NULL);
                    mattn_attn_args r = gqa_args(&c, c.ref, c.lse_ref, causal, window, mode == 3 ? &m : NULL);
                    char what[128];
                    snprintf(what, sizeof what, "gqa H=%d Hkv=%d dh=%d T=%d Tk=%d mode=%d", H, Hkv, dh, T, Tk, mode);
                    const double f = mattn_attn_softmax_forward(&a), fr = mattn_attn_softmax_forward_ref(&r);
                    assert_true(f == fr && f > 0);
                    assert_close(c.out, c.ref, (size_t)B * T * H * dh, 2e-5, what);
                    for (size_t i = 0; i < (size_t)B * H * T; i++)
                        if (isfinite(c.lse_ref[i])) assert_true(fabsf(c.lse[i] - c.lse_ref[i]) < 1e-4f);
                        else assert_true(c.lse[i] == -INFINITY);
                    gqa_free(&c);
                }
}

/* GQA equals multi-head attention with each K/V head repeated for its
 * group (bit for bit: the same keys packed the same way), and a query chunk
 * at the end of the keys equals those rows of the whole causal forward. */
static void test_softmax_gqa_equals_mha(void **st) {
    (void)st;
    const int shapes[][3] = {{9, 3, 64}, {6, 2, 16}}, Ts[] = {1, 7, 129};
    for (int si = 0; si < 2; si++)
        for (int ti = 0; ti < 3; ti++)
            for (int causal = 0; causal < 2; causal++) {
                const int H = shapes[si][0], Hkv = shapes[si][1], dh = shapes[si][2], T = Ts[ti], g = H / Hkv;
                const int Dq = H * dh, Dkv = Hkv * dh;
                gqa_t c;
                gqa_init(&c, 2, T, T, H, Hkv, dh, 0, 200 + si * 10 + ti);
                mattn_attn_args a = gqa_args(&c, c.out, c.lse, causal, -1, NULL);
                mattn_attn_softmax_forward(&a);
                /* the multi-head problem: rows q | K repeated | V repeated */
                float *qkv = falloc((size_t)2 * T * 3 * Dq), *o = falloc((size_t)2 * T * Dq);
                float *lse = falloc((size_t)2 * H * T), *oref = falloc((size_t)2 * T * Dq);
                for (int r = 0; r < 2 * T; r++)
                    for (int h = 0; h < H; h++)
                        for (int i = 0; i < dh; i++) {
                            float *row = qkv + (size_t)r * 3 * Dq;
                            row[h * dh + i] = c.q[(size_t)r * Dq + h * dh + i];
                            row[Dq + h * dh + i] = c.kv[(size_t)r * 2 * Dkv + (h / g) * dh + i];
                            row[2 * Dq + h * dh + i] = c.kv[(size_t)r * 2 * Dkv + Dkv + (h / g) * dh + i];
                        }
                mattn_attn_args m = {.B = 2, .T = T, .H = H, .dh = dh, .q = qkv, .k = qkv + Dq, .v = qkv + 2 * Dq,
                                     .ld = 3 * Dq, .out = o, .ldo = Dq, .causal = causal, .window = -1, .lse = lse};
                set_attn_scratch(&m);
                mattn_attn_softmax_forward(&m);
                assert_memory_equal(o, c.out, sizeof(float) * 2 * T * Dq);
                assert_memory_equal(lse, c.lse, sizeof(float) * 2 * H * T);
                if (T < 100) { /* the references alike (the big case is slow there) */
                    mattn_attn_args rr = gqa_args(&c, c.ref, c.lse_ref, causal, -1, NULL);
                    mattn_attn_softmax_forward_ref(&rr);
                    m.out = oref;
                    mattn_attn_softmax_forward_ref(&m);
                    assert_memory_equal(oref, c.ref, sizeof(float) * 2 * T * Dq);
                }
                /* the last n queries of each sequence against all T keys == those rows of the whole */
                for (int n = 1; causal && n <= T; n += n < 4 ? 1 : T / 3 + 1) {
                    float *qc = falloc((size_t)2 * n * Dq), *oc = falloc((size_t)2 * n * Dq);
                    for (int b = 0; b < 2; b++)
                        memcpy(qc + (size_t)b * n * Dq, c.q + ((size_t)b * T + T - n) * Dq, sizeof(float) * n * Dq);
                    mattn_attn_args ch = a;
                    ch.T = n, ch.Tk = T, ch.q = qc, ch.out = oc, ch.lse = NULL;
                    mattn_attn_softmax_forward(&ch);
                    for (int b = 0; b < 2; b++)
                        assert_close(oc + (size_t)b * n * Dq, c.out + ((size_t)b * T + T - n) * Dq, (size_t)n * Dq,
                                     1e-6, "chunk at the end == rows of the whole");
                    free(qc); free(oc);
                }
                free(qkv); free(o); free(lse); free(oref);
                gqa_free(&c);
            }
}

/* The decode step with grouped heads: vs its reference (flat and ring
 * caches, spans), == multi-head decode on repeated K/V heads, and == the
 * last row of the prefill forward over the same keys. */
static void test_softmax_decode_gqa(void **st) {
    (void)st;
    /* SmolLM2's heads, a small GQA, one K/V head for 18 query heads (more than the kernel's group of 8);
     * contexts past 512 keys take the chunked path (partial softmaxes combined) */
    const int shapes[][3] = {{9, 3, 64}, {6, 2, 16}, {18, 1, 32}};
    for (int si = 0; si < 3; si++)
        for (int ring = 0; ring <= 9; ring += 9) {
            const int H = shapes[si][0], Hkv = shapes[si][1], dh = shapes[si][2], g = H / Hkv, cap = 1200;
            const int Dq = H * dh, Dkv = Hkv * dh;
            float *K = falloc((size_t)cap * Dkv), *V = falloc((size_t)cap * Dkv);
            float *Kr = falloc((size_t)cap * Dq), *Vr = falloc((size_t)cap * Dq);
            float *q = falloc(Dq), *o = falloc(Dq), *r = falloc(Dq), *om = falloc(Dq);
            fill_normal(K, (size_t)cap * Dkv, 31 + si, 1.0f);
            fill_normal(V, (size_t)cap * Dkv, 32 + si, 1.0f);
            fill_normal(q, (size_t)Dq, 33 + si, 1.0f);
            for (int s = 0; s < cap; s++)
                for (int h = 0; h < H; h++) {
                    memcpy(Kr + (size_t)s * Dq + h * dh, K + (size_t)s * Dkv + (h / g) * dh, sizeof(float) * dh);
                    memcpy(Vr + (size_t)s * Dq + h * dh, V + (size_t)s * Dkv + (h / g) * dh, sizeof(float) * dh);
                }
            const int spans[][2] = {{0, 0}, {0, 6}, {3, 70}, {0, 128}, {0, 149}, {141, 149}, {0, 1199}, {7, 1003}};
            for (int sp = 0; sp < 8; sp++) {
                int lo = spans[sp][0], hi = spans[sp][1];
                if (ring && hi - lo + 1 > ring) lo = hi - ring + 1;
                const double f = mattn_attn_softmax_decode_gqa(q, K, V, Dkv, H, g, dh, lo, hi, ring, o);
                const double fr = mattn_attn_softmax_decode_gqa_ref(q, K, V, Dkv, H, g, dh, lo, hi, ring, r);
                assert_true(f == fr);
                assert_close(o, r, (size_t)Dq, 2e-5, "gqa decode vs ref");
                mattn_attn_softmax_decode(q, Kr, Vr, Dq, H, dh, lo, hi, ring, om);
                assert_memory_equal(o, om, sizeof(float) * Dq);
                if (!ring && lo == 0) { /* the prefill kernel's last query over keys [0, hi] */
                    mattn_attn_args a = {.B = 1, .T = 1, .Tk = hi + 1, .H = H, .dh = dh, .q = q, .ld = Dq,
                                         .k = K, .v = V, .ldkv = Dkv, .kv_group = g, .out = om, .ldo = Dq,
                                         .causal = 1, .window = -1};
                    set_attn_scratch(&a);
                    mattn_attn_softmax_forward(&a);
                    assert_close(o, om, (size_t)Dq, 2e-6, "gqa decode == prefill's last row");
                }
            }
            free(K); free(V); free(Kr); free(Vr); free(q); free(o); free(r); free(om);
        }
}

/* Keys and values through a mattn_kv view — head by head (ld = dh,
 * hstride = cap*dh), as floats or halves — against the same values (halves
 * rounded back to floats) as rows: the decode step and the prefill forward
 * give the same bits, and each is near its reference on the view. */
static void test_softmax_kv_views(void **st) {
    (void)st;
    const int shapes[][3] = {{9, 3, 64}, {6, 2, 16}, {18, 1, 32}, {4, 2, 24}};
    for (int si = 0; si < 4; si++)
        for (int f16 = 0; f16 <= 1; f16++) {
            const int H = shapes[si][0], Hkv = shapes[si][1], dh = shapes[si][2], g = H / Hkv, cap = 700;
            const int Dq = H * dh, Dkv = Hkv * dh, T = 5;
            const size_t n = (size_t)cap * Dkv, es = f16 ? 2 : 4;
            float *K = falloc(n), *V = falloc(n), *q = falloc((size_t)T * Dq), *o = falloc((size_t)T * Dq);
            float *r = falloc((size_t)T * Dq);
            char *Kv = malloc(n * es), *Vv = malloc(n * es);
            fill_normal(K, n, 41 + si, 1.0f);
            fill_normal(V, n, 42 + si, 1.0f);
            fill_normal(q, (size_t)T * Dq, 43 + si, 1.0f);
            for (int s = 0; s < cap; s++) /* rows (s, Dkv) -> heads (Hkv, cap, dh); rows keep what the view holds */
                for (int j = 0; j < Hkv; j++)
                    for (int i = 0; i < dh; i++) {
                        const size_t row = (size_t)s * Dkv + (size_t)j * dh + i, hm = ((size_t)j * cap + s) * dh + i;
                        if (f16) {
                            ((uint16_t *)Kv)[hm] = mattn_f32_to_f16(K[row]);
                            ((uint16_t *)Vv)[hm] = mattn_f32_to_f16(V[row]);
                            K[row] = mattn_f16_to_f32(((uint16_t *)Kv)[hm]);
                            V[row] = mattn_f16_to_f32(((uint16_t *)Vv)[hm]);
                        } else {
                            ((float *)Kv)[hm] = K[row], ((float *)Vv)[hm] = V[row];
                        }
                    }
            const mattn_kv kv = {Kv, Vv, dh, (int64_t)cap * dh, f16};
            const int spans[][2] = {{0, 0}, {0, 70}, {5, 300}, {0, 699}};
            for (int sp = 0; sp < 4; sp++)
                for (int ring = 0; ring <= 9; ring += 9) {
                    int lo = spans[sp][0], hi = spans[sp][1];
                    if (ring && hi - lo + 1 > ring) lo = hi - ring + 1;
                    mattn_attn_softmax_decode_kv(q, &kv, H, g, dh, 0, lo, hi, ring, o);
                    mattn_attn_softmax_decode_gqa(q, K, V, Dkv, H, g, dh, lo, hi, ring, r);
                    if (memcmp(o, r, sizeof(float) * Dq))
                        fail_msg("decode view != rows: shape %d f16 %d span %d ring %d", si, f16, sp, ring);
                    mattn_attn_softmax_decode_kv_ref(q, &kv, H, g, dh, 0, lo, hi, ring, r);
                    assert_close(o, r, (size_t)Dq, 2e-5, "decode on a view vs ref");
                }
            for (int Tk = T; Tk <= cap; Tk += cap - T) { /* a chunk of T queries at the end of Tk keys */
                mattn_attn_args a = {.B = 1, .T = T, .Tk = Tk, .H = H, .dh = dh, .q = q, .ld = Dq, .k = K, .v = V,
                                     .ldkv = Dkv, .kv_group = g, .out = r, .ldo = Dq, .causal = 1, .window = -1};
                set_attn_scratch(&a);
                mattn_attn_softmax_forward(&a);
                a.k = a.v = NULL, a.ldkv = 0, a.kv = &kv, a.out = o;
                mattn_attn_softmax_forward(&a);
                assert_memory_equal(o, r, sizeof(float) * T * Dq);
                mattn_attn_softmax_forward_ref(&a);
                assert_close(o, r, (size_t)T * Dq, 2e-5, "prefill on a view vs ref");
            }
            free(K); free(V); free(q); free(o); free(r); free(Kv); free(Vv);
        }
}

/* Attention sinks beside a causal window: keys [0, sinks) stay visible to
 * every query.  The tiled forward against its reference; sinks covering
 * every key against full causal attention; the decode step (the sinks in
 * front of its first chunk) against its reference and the forward's last
 * row. */
static void test_softmax_sinks(void **st) {
    (void)st;
    /* 3 x 1300, window 700: the decode step splits its 701 keys into chunks, the sinks in front of the first */
    const int shapes[][3] = {{9, 3, 64}, {4, 4, 16}, {6, 2, 24}};
    const int geo[][2] = {{7, 7}, {130, 130}, {5, 300}, {3, 1300}};
    const int windows[] = {0, 3, 50, 700}, sinks[] = {1, 4, 100};
    for (int si = 0; si < 3; si++)
        for (int gi = 0; gi < 4; gi++) {
            const int H = shapes[si][0], Hkv = shapes[si][1], dh = shapes[si][2], g = H / Hkv;
            const int T = geo[gi][0], Tk = geo[gi][1], Dq = H * dh, Dkv = Hkv * dh;
            float *q = falloc((size_t)T * Dq), *K = falloc((size_t)Tk * Dkv), *V = falloc((size_t)Tk * Dkv);
            float *o = falloc((size_t)T * Dq), *r = falloc((size_t)T * Dq), *d = falloc(Dq);
            float *o2 = falloc((size_t)T * Dq);
            fill_normal(q, (size_t)T * Dq, 51 + si, 1.0);
            fill_normal(K, (size_t)Tk * Dkv, 52 + si, 1.0);
            fill_normal(V, (size_t)Tk * Dkv, 53 + si, 1.0);
            for (int wi = 0; wi < 4; wi++)
                for (int ki = 0; ki < 3; ki++) {
                    const int w = windows[wi], S = sinks[ki];
                    mattn_attn_args a = {.B = 1, .T = T, .Tk = Tk, .H = H, .dh = dh, .q = q, .ld = Dq, .k = K,
                                         .v = V, .ldkv = Dkv, .kv_group = g, .out = o, .ldo = Dq, .causal = 1,
                                         .window = w, .sinks = S};
                    set_attn_scratch(&a);
                    const double f = mattn_attn_softmax_forward(&a);
                    a.out = r;
                    assert_true(mattn_attn_softmax_forward_ref(&a) == f);
                    if (max_abs_diff(o, r, (size_t)T * Dq, 2e-5, "sinks: forward vs ref") > 2e-5)
                        fail_msg("H %d Hkv %d dh %d, T %d Tk %d, window %d, sinks %d", H, Hkv, dh, T, Tk, w, S);
                    /* every third row (the rows routed to local), a scratch of NaNs: the keys between the
                     * sinks and a row's window are never packed, and what a tile reads of them is masked */
                    int rows[300], nr = 0;
                    for (int t = 1; t < T; t += 3) rows[nr++] = t;
                    memset(a.scratch, 0xff, a.scratch_bytes);
                    for (size_t i = 0; i < (size_t)T * Dq; i++) o2[i] = 7.0f;
                    a.rows = rows, a.n_rows = nr, a.out = o2;
                    assert_true(mattn_attn_softmax_forward(&a) > 0.0);
                    a.rows = NULL, a.n_rows = 0, a.out = r;
                    for (int i = 0; i < nr; i++)
                        if (max_abs_diff(o2 + (size_t)rows[i] * Dq, r + (size_t)rows[i] * Dq, Dq, 2e-5, "sinks, rows") >
                            2e-5)
                            fail_msg("rows: H %d dh %d, T %d Tk %d, window %d, sinks %d, row %d", H, dh, T, Tk, w, S,
                                     rows[i]);
                    assert_true(o2[0] == 7.0f); /* rows not listed are not written */
                    a.sinks = 0; /* without the sinks (into r): another result (a sink is out
                                  * of some query's window), then r back to the reference */
                    mattn_attn_softmax_forward(&a);
                    if (w < Tk - 1) assert_true(memcmp(o, r, sizeof(float) * T * Dq) != 0);
                    a.sinks = S;
                    mattn_attn_softmax_forward_ref(&a);
                    if (S >= Tk) { /* every key a sink: full causal attention */
                        a.window = -1, a.sinks = 0;
                        mattn_attn_softmax_forward(&a);
                        assert_close(o, r, (size_t)T * Dq, 2e-5, "sinks over every key == full");
                    }
                    const int hi = Tk - 1, lo = hi - w > 0 ? hi - w : 0; /* the last query, decoded */
                    const mattn_kv kv = {K, V, Dkv, dh, 0};
                    const double fd = mattn_attn_softmax_decode_kv(q + (size_t)(T - 1) * Dq, &kv, H, g, dh, S, lo, hi,
                                                                   0, d);
                    assert_true(fd == mattn_attn_softmax_decode_kv_ref(q + (size_t)(T - 1) * Dq, &kv, H, g, dh, S,
                                                                       lo, hi, 0, r));
                    assert_close(d, r, (size_t)Dq, 2e-5, "sinks: decode vs ref");
                    assert_close(d, o + (size_t)(T - 1) * Dq, (size_t)Dq, 2e-5, "sinks: decode == forward's last row");
                }
            free(q); free(K); free(V); free(o); free(r); free(d); free(o2);
        }
}

/* The backward with sinks beside a causal window (multi-head, training's
 * local expert over a pretrained model) against the same pattern as an
 * additive mask on full causal attention — tiled and reference, so the
 * sinks' handling is checked by another code path of each. */
static void test_softmax_backward_sinks(void **st) {
    (void)st;
    const int H = 2, dh = 16, D = H * dh, Ts[] = {7, 70, 200}, windows[] = {0, 5, 40}, sinks[] = {1, 4, 33};
    for (int ti = 0; ti < 3; ti++)
        for (int wi = 0; wi < 3; wi++)
            for (int si = 0; si < 3; si++) {
                const int T = Ts[ti], w = windows[wi], S = sinks[si];
                float *x = falloc((size_t)T * 3 * D), *go = falloc((size_t)T * D), *mask = falloc((size_t)T * T);
                fill_normal(x, (size_t)T * 3 * D, 100 + ti * 9 + wi * 3 + si, 1.0);
                fill_normal(go, (size_t)T * D, 7 + ti, 1.0);
                for (int t = 0; t < T; t++)
                    for (int u = 0; u < T; u++)
                        mask[(size_t)t * T + u] = u <= t && (u >= t - w || u < S) ? 0.0f : -INFINITY;
                const mattn_masks m = {.additive = mask};
                float *g[4], *out[2], *lse[2];
                for (int i = 0; i < 4; i++) g[i] = falloc((size_t)T * 3 * D);
                for (int i = 0; i < 2; i++) out[i] = falloc((size_t)T * D), lse[i] = falloc((size_t)H * T);
                for (int v = 0; v < 2; v++) { /* 0: window + sinks, 1: the mask */
                    mattn_attn_args a = {.B = 1, .T = T, .H = H, .dh = dh, .q = x, .k = x + D, .v = x + 2 * D,
                                         .ld = 3 * D, .out = out[v], .ldo = D, .causal = 1, .window = v ? -1 : w,
                                         .sinks = v ? 0 : S, .masks = v ? &m : NULL, .lse = lse[v]};
                    set_attn_scratch(&a);
                    mattn_attn_softmax_forward(&a);
                    a.scratch_bytes = mattn_attn_softmax_scratch(T, dh, 1, 4);
                    a.scratch = falloc(a.scratch_bytes / sizeof(float));
                    const mattn_attn_grad gt = {.gout = go, .ldgo = D, .gq = g[v], .gk = g[v] + D, .gv = g[v] + 2 * D,
                                                .ldg = 3 * D};
                    const mattn_attn_grad gr = {.gout = go, .ldgo = D, .gq = g[2 + v], .gk = g[2 + v] + D,
                                                .gv = g[2 + v] + 2 * D, .ldg = 3 * D};
                    assert_int_equal(mattn_attn_softmax_backward(&a, &gt), 0);
                    mattn_attn_softmax_backward_ref(&a, &gr);
                    free(a.scratch);
                }
                const size_t n = (size_t)T * 3 * D;
                if (max_abs_diff(out[0], out[1], (size_t)T * D, 2e-5, "sinks vs mask: forward") > 2e-5 ||
                    max_abs_diff(g[0], g[1], n, 5e-5, "sinks vs mask: tiled backward") > 5e-5 ||
                    max_abs_diff(g[2], g[3], n, 5e-5, "sinks vs mask: reference backward") > 5e-5 ||
                    max_abs_diff(g[0], g[2], n, 5e-5, "sinks: tiled vs reference") > 5e-5)
                    fail_msg("T %d, window %d, sinks %d", T, w, S);
                for (int i = 0; i < 4; i++) free(g[i]);
                for (int i = 0; i < 2; i++) free(out[i]), free(lse[i]);
                free(x), free(go), free(mask);
            }
}

/* The grouped forward packs each K/V head once and shares its query heads'
 * tiles across the team: bit for bit the multi-head forward (a task per
 * query head) on the K/V heads repeated, at 1, 2 and 3 threads — a chunk at
 * the end of keys several pack runs long, listed rows, full or a window with
 * sinks, a scratch of NaNs. */
static void test_softmax_grouped_threads(void **st) {
    (void)st;
    const int H = 9, Hkv = 3, g = 3, dh = 64, T = 64, Tk = 900, Dq = H * dh, Dkv = Hkv * dh;
    float *q = falloc((size_t)T * Dq), *K = falloc((size_t)Tk * Dkv), *V = falloc((size_t)Tk * Dkv);
    float *Kr = falloc((size_t)Tk * Dq), *Vr = falloc((size_t)Tk * Dq), *o = falloc((size_t)T * Dq);
    float *r = falloc((size_t)T * Dq);
    fill_normal(q, (size_t)T * Dq, 61, 1.0);
    fill_normal(K, (size_t)Tk * Dkv, 62, 1.0);
    fill_normal(V, (size_t)Tk * Dkv, 63, 1.0);
    for (int s = 0; s < Tk; s++)
        for (int h = 0; h < H; h++) {
            memcpy(Kr + (size_t)s * Dq + h * dh, K + (size_t)s * Dkv + (h / g) * dh, sizeof(float) * dh);
            memcpy(Vr + (size_t)s * Dq + h * dh, V + (size_t)s * Dkv + (h / g) * dh, sizeof(float) * dh);
        }
    int rows[64], nr = 0;
    for (int t = 0; t < T; t += 2 + t % 3) rows[nr++] = t;
    const int windows[] = {-1, 300, 40}, sinks[] = {0, 4, 4};
    for (int c = 0; c < 6; c++) {
        const int w = windows[c % 3], listed = c >= 3;
        mattn_attn_args a = {.B = 1, .T = T, .Tk = Tk, .H = H, .dh = dh, .q = q, .ld = Dq, .k = Kr, .v = Vr,
                             .ldkv = Dq, .out = r, .ldo = Dq, .causal = 1, .window = w, .sinks = sinks[c % 3],
                             .rows = listed ? rows : NULL, .n_rows = listed ? nr : 0};
        set_attn_scratch(&a);
        memset(r, 0, sizeof(float) * T * Dq);
        const double f = mattn_attn_softmax_forward(&a);
        a.k = K, a.v = V, a.ldkv = Dkv, a.kv_group = g, a.out = o;
        for (int threads = 1; threads <= 3; threads++) {
#ifdef _OPENMP
            const int nt = omp_get_max_threads();
            omp_set_num_threads(threads);
#endif
            memset(a.scratch, 0xff, a.scratch_bytes);
            memset(o, 0, sizeof(float) * T * Dq);
            assert_true(mattn_attn_softmax_forward(&a) == f);
#ifdef _OPENMP
            omp_set_num_threads(nt);
#endif
            if (memcmp(o, r, sizeof(float) * T * Dq))
                fail_msg("grouped != multi-head: window %d, rows %d, threads %d", w, listed, threads);
        }
    }
    free(q); free(K); free(V); free(Kr); free(Vr); free(o); free(r);
}

/* mattn_attn_softmax_forward_n: a chunk's rows split between a full call
 * and a local call (window + sinks), run in one pass with one pack per K/V
 * head, give bit for bit what each call gives alone, at 1, 2 and 3 threads
 * (rows of either call few or many, a scratch of NaNs), and the FLOPs of
 * both. */
static void test_softmax_forward_n(void **st) {
    (void)st;
    const int H = 9, Hkv = 3, g = 3, dh = 64, T = 64, Tk = 900, Dq = H * dh, Dkv = Hkv * dh;
    float *q = falloc((size_t)T * Dq), *K = falloc((size_t)Tk * Dkv), *V = falloc((size_t)Tk * Dkv);
    float *o = falloc((size_t)T * Dq), *r = falloc((size_t)T * Dq);
    fill_normal(q, (size_t)T * Dq, 71, 1.0);
    fill_normal(K, (size_t)Tk * Dkv, 72, 1.0);
    fill_normal(V, (size_t)Tk * Dkv, 73, 1.0);
    const int every[] = {2, 5, 21};
    for (int c = 0; c < 3; c++) {
        int32_t rows[2][64];
        int64_t n[2] = {0, 0};
        for (int t = 0; t < T; t++) {
            const int e = (t * 7 + 3) % every[c] != 0; /* full every[c]-th row or so, local the rest */
            rows[e][n[e]++] = t;
        }
        mattn_attn_args a[2];
        for (int e = 0; e < 2; e++)
            a[e] = (mattn_attn_args){.B = 1, .T = T, .Tk = Tk, .H = H, .dh = dh, .q = q, .ld = Dq, .k = K, .v = V,
                                     .ldkv = Dkv, .kv_group = g, .out = r, .ldo = Dq, .causal = 1,
                                     .window = e ? 100 : -1, .sinks = e ? 4 : 0, .rows = rows[e], .n_rows = n[e]};
        set_attn_scratch(&a[0]);
        a[1].scratch = a[0].scratch, a[1].scratch_bytes = a[0].scratch_bytes;
        memset(r, 0, sizeof(float) * T * Dq);
        const double f = mattn_attn_softmax_forward(&a[0]) + mattn_attn_softmax_forward(&a[1]);
        a[0].out = a[1].out = o;
        for (int threads = 1; threads <= 3; threads++) {
#ifdef _OPENMP
            const int nt = omp_get_max_threads();
            omp_set_num_threads(threads);
#endif
            memset(a[0].scratch, 0xff, a[0].scratch_bytes);
            memset(o, 0, sizeof(float) * T * Dq);
            assert_true(mattn_attn_softmax_forward_n(a, 2) == f);
#ifdef _OPENMP
            omp_set_num_threads(nt);
#endif
            if (memcmp(o, r, sizeof(float) * T * Dq))
                fail_msg("forward_n != the two forwards: %lld full rows, threads %d", (long long)n[0], threads);
        }
    }
    free(q); free(K); free(V); free(o); free(r);
}

/* A pack kept across chunks (kernels.h, mattn_attn_pack): a sequence's
 * chunks, full rows alone and full + local rows in one pass, give the bits
 * of the calls without it, at 1-3 threads; after n = 0 a shorter sequence
 * over the stale pack too. */
static void test_softmax_pack(void **st) {
    (void)st;
    const int H = 9, Hkv = 3, g = 3, dh = 64, cap = 700, Dq = H * dh, Dkv = Hkv * dh;
    float *q = falloc((size_t)cap * Dq), *K = falloc((size_t)cap * Dkv), *V = falloc((size_t)cap * Dkv);
    float *o = falloc((size_t)64 * Dq), *r = falloc((size_t)64 * Dq);
    fill_normal(q, (size_t)cap * Dq, 81, 1.0);
    fill_normal(K, (size_t)cap * Dkv, 82, 1.0);
    fill_normal(V, (size_t)cap * Dkv, 83, 1.0);
    mattn_attn_pack pk = {mattn_amalloc(mattn_attn_pack_bytes(cap, dh, Hkv)), cap, 0};
    assert_non_null(pk.buf);
    memset(pk.buf, 0, mattn_attn_pack_bytes(cap, dh, Hkv));
    const int lens[2] = {cap, 333}, chunk[4] = {64, 37, 1, 64};
    for (int seq = 0; seq < 2; seq++) {
        pk.n = 0;
        for (int p = 0, i = 0; p < lens[seq]; i++) {
            const int M = lens[seq] - p < chunk[i % 4] ? lens[seq] - p : chunk[i % 4];
            int32_t rows[2][64];
            int64_t n[2] = {0, 0};
            for (int t = 0; t < M; t++) rows[(t * 5 + i) % 3 != 0][n[(t * 5 + i) % 3 != 0]++] = t;
            const int mixed = i % 2 && n[0] && n[1];
            mattn_attn_args a[2];
            for (int e = 0; e < 2; e++)
                a[e] = (mattn_attn_args){.B = 1, .T = M, .Tk = p + M, .H = H, .dh = dh, .q = q + (size_t)p * Dq,
                                         .ld = Dq, .k = K, .v = V, .ldkv = Dkv, .kv_group = g, .out = r, .ldo = Dq,
                                         .causal = 1, .window = mixed && e ? 100 : -1, .sinks = mixed && e ? 4 : 0,
                                         .rows = mixed ? rows[e] : NULL, .n_rows = mixed ? n[e] : 0};
            set_attn_scratch(&a[0]);
            a[1].scratch = a[0].scratch, a[1].scratch_bytes = a[0].scratch_bytes;
            memset(r, 0, sizeof(float) * 64 * Dq);
            const double f = mattn_attn_softmax_forward_n(a, 1 + mixed);
            a[0].out = a[1].out = o, a[0].pack = a[1].pack = &pk;
            const int n0 = pk.n, threads = 1 + i % 3;
#ifdef _OPENMP
            const int nt = omp_get_max_threads();
            omp_set_num_threads(threads);
#endif
            memset(o, 0, sizeof(float) * 64 * Dq);
            assert_true(mattn_attn_softmax_forward_n(a, 1 + mixed) == f);
#ifdef _OPENMP
            omp_set_num_threads(nt);
#endif
            if (memcmp(o, r, sizeof(float) * M * Dq))
                fail_msg("with the pack != without: sequence %d, chunk at %d (%d rows, mixed %d, keys %d packed "
                         "before), threads %d", seq, p, M, mixed, n0, threads);
            assert_int_equal(pk.n, p + M);
            p += M;
        }
    }
    mattn_afree(pk.buf);
    free(q); free(K); free(V); free(o); free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_gqa_vs_ref),
        cmocka_unit_test(test_softmax_gqa_equals_mha),
        cmocka_unit_test(test_softmax_decode_gqa),
        cmocka_unit_test(test_softmax_kv_views),
        cmocka_unit_test(test_softmax_sinks),
        cmocka_unit_test(test_softmax_backward_sinks),
        cmocka_unit_test(test_softmax_grouped_threads),
        cmocka_unit_test(test_softmax_forward_n),
        cmocka_unit_test(test_softmax_pack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
