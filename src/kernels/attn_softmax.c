/*
 * attn_softmax.c — the softmax attention core shared by the "full" expert
 * (window < 0) and the "local" expert (window = w): multi-head
 * softmax(q k^T / sqrt(dh) + mask) v for the listed query rows.
 *
 * mattn_attn_softmax_forward/_backward are flash-style tiled kernels: an
 * online softmax over tiles of queries x keys, scores and products in
 * register-blocked SIMD micro-kernels (simd.h), causal and window tiles
 * skipped, never a T x T matrix; the forward saves the per-row log-sum-exp
 * from which the backward recomputes the probabilities.  The _ref versions
 * (attn_softmax_ref.c) are the plain formulas the tests compare them
 * against.  Dropout on the probabilities uses a counter-based
 * hash of (b, h, t, s), so every version draws the same mask whatever the
 * threads (the decode step is attn_decode.c).  The forwards also take
 * grouped-query heads (a query head reads K/V head h / kv_group) and a
 * query chunk at the end of a longer key sequence (Tk keys, the queries
 * their last T positions): a LLaMA-style model's prefill against its cache
 * (kernels.h), and with mattn_attn_softmax_forward_n several row sets of one
 * chunk (a routed block's full and local rows) in one pass.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/attn_softmax_inl.h"
#include "kernels/kernels.h"
#include "kernels/microkernel.h"
#include "kernels/simd.h"

// ----------------------------------------------------------------------------
// tiled (flash-style) version
//
// A task is one (batch, head) — with grouped-query heads a thread's run of
// the query tiles of its heads, each K/V head packed once for the run
// (fwd_grouped): it packs the head's keys transposed (K^T, dh x T) and its
// values (T x dhp) once, then walks its query rows in tiles
// of up to BQ rows against blocks of BK keys: scores S = (scale q) K^T with
// the register-blocked mk_xyt (microkernel.h), the online softmax on S, and
// O += P V with mk_ay.  Key blocks wholly above the causal diagonal or
// outside the window are never visited; masks are applied element-wise on
// blocks that straddle a boundary.  dh is padded with zeros to a multiple of
// CW; key columns past a block's end are masked.  A task writes only its own
// rows, so the result does not depend on the thread count or the schedule.

#define BQ (8 * MR)                /* query rows per tile (max) */
#define BK 128                     /* keys per tile */
#define DHP_MAX MATTN_MAX_HEAD_DIM /* padded head dimension bound */

_Static_assert(BK % CW == 0, "BK must be a multiple of CW");
_Static_assert(DHP_MAX % 64 == 0, "DHP_MAX must be a multiple of 64");

static inline int pad_dh(int dh) { return (dh + CW - 1) / CW * CW; }

/* A tile's query rows: rows t[i] (ascending) of batch b, tokens tok[i]; the
 * key range of each from its position t[i] + q_pos0. */
typedef struct {
    int b, n;          /* batch, rows */
    int t[BQ], tok[BQ];
    int lo[BQ], hi[BQ]; /* visible key range per row */
} qtile;

/* Scores of a tile against keys [s0, s0+nb): S (already scaled) gets the
 * masks: keys out of a row's range, padded keys, the additive mask, and
 * -inf for the pad columns [nb, nc); rows >= n are left alone. */
static void mask_scores(const mattn_attn_args *a, const qtile *q, int s0, int nb, int nc, float *S) {
    const mattn_masks *m = a->masks;
    const int lo_all = q->lo[q->n - 1], hi_all = q->hi[0];
    const int inside = s0 >= lo_all && s0 + nb - 1 <= hi_all;
    for (int i = 0; i < q->n; i++) {
        float *row = S + (size_t)i * BK;
        for (int j = nb; j < nc; j++) row[j] = -INFINITY;
        if (!inside) { /* past hi, and before lo but not a sink: two runs of columns, as fills */
            const int jhi = q->hi[i] - s0 + 1 > 0 ? q->hi[i] - s0 + 1 : 0;
            const int jl0 = a->sinks - s0 > 0 ? a->sinks - s0 : 0, jl1 = q->lo[i] - s0 < nb ? q->lo[i] - s0 : nb;
            for (int j = jhi; j < nb; j++) row[j] = -INFINITY;
            for (int j = jl0; j < jl1; j++) row[j] = -INFINITY;
        }
        if (m && m->additive) {
            const size_t Tk = (size_t)n_keys(a);
            const float *add = m->additive + (m->additive_batched ? (size_t)q->b * a->T * Tk : 0) +
                               (size_t)q->t[i] * Tk + s0;
            for (int j = 0; j < nb; j++) row[j] += add[j];
        }
        if (m && m->key_padding) {
            const uint8_t *kp = m->key_padding + (size_t)q->b * n_keys(a) + s0;
            for (int j = 0; j < nb; j++)
                if (!kp[j]) row[j] = -INFINITY;
        }
    }
}

/* The key range [klo, khi] a tile touches (empty without rows). */
static void tile_keys(const qtile *q, int *klo, int *khi) {
    int lo = INT32_MAX, hi = -1;
    for (int i = 0; i < q->n; i++) {
        lo = q->lo[i] < lo ? q->lo[i] : lo;
        hi = q->hi[i] > hi ? q->hi[i] : hi;
    }
    *klo = lo, *khi = hi;
}

/* A head's keys packed once per call: Kt (dh x ldk, transposed) and V
 * (T x dhp, rows), both zero-padded; ldk is T rounded up, plus 16 so that
 * consecutive rows of Kt do not map to the same cache set. */
typedef struct { float *Kt, *V; int ldk; } head_pack;

static size_t head_pack_floats(int T, int dh, int *ldk) {
    *ldk = (T + BK + 15) / 16 * 16 + 16;
    return (size_t)pad_dh(dh) * (size_t)*ldk + (size_t)(T + BK) * (size_t)pad_dh(dh);
}

static void fwd_tile(const mattn_attn_args *a, const qtile *q, int h, float scale, const head_pack *hp) {
    const int dh = a->dh, dhp = pad_dh(dh), T = a->T;
    _Alignas(64) float Qb[BQ * DHP_MAX], S[BQ * BK], O[BQ * DHP_MAX];
    _Alignas(64) float m[BQ], l[BQ];
    for (int i = 0; i < q->n; i++) {
        float *row = Qb + (size_t)i * dhp;
        const float *x = a->q + (size_t)q->tok[i] * a->ld + (size_t)h * dh;
        int d = 0;
        for (; d < dh; d++) row[d] = scale * x[d];
        for (; d < dhp; d++) row[d] = 0.0f;
        m[i] = -INFINITY, l[i] = 0.0f;
    }
    memset(O, 0, sizeof(float) * (size_t)q->n * dhp);
    int klo, khi;
    tile_keys(q, &klo, &khi);
    /* the sinks before the tile's keys, then its keys */
    const int ns = a->sinks < klo ? a->sinks : klo, rlo[2] = {0, klo}, rhi[2] = {ns - 1, khi};
    for (int r = ns > 0 ? 0 : 1; r < 2; r++)
    for (int s0 = rlo[r]; s0 <= rhi[r]; s0 += BK) {
        const int nb = rhi[r] - s0 + 1 < BK ? rhi[r] - s0 + 1 : BK;
        const int nc = (nb + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
        mk_xyt(q->n, dh, Qb, dhp, hp->Kt + s0, hp->ldk, nc, S, BK);
        mask_scores(a, q, s0, nb, nc, S);
        /* the rows' new maxima, then their corrections exp(m - mn) in vectors
         * (a libm expf per row and block took 9 % of a routed prefill's attention) */
        _Alignas(64) float mnew[BQ], corr[BQ];
        for (int i = 0; i < q->n; i++) {
            const float *row = S + (size_t)i * BK;
            mattn_vf vm = vset1(-INFINITY);
            for (int j = 0; j < nc; j += MATTN_VL) vm = vmax(vm, vload(row + j));
            const float bm = vhmax(vm);
            mnew[i] = bm > m[i] ? bm : m[i];
        }
        for (int i = q->n; i % MATTN_VL; i++) m[i] = mnew[i] = 0.0f; /* the last vector's spare lanes */
        for (int i = 0; i < q->n; i += MATTN_VL) { /* 0 when m was -inf, 1 when the max did not move, NaN kept */
            const mattn_vf d = vload(m + i) - vload(mnew + i);
            const mattn_vi nan = d != d;
            vstore(corr + i, (mattn_vf)(((mattn_vi)vexp(d) & ~nan) | ((mattn_vi)d & nan)));
        }
        for (int i = 0; i < q->n; i++) {
            float *row = S + (size_t)i * BK, *o = O + (size_t)i * dhp;
            const float mn = mnew[i];
            if (mn == -INFINITY) { /* nothing visible yet: P = 0 */
                memset(row, 0, sizeof(float) * nc);
                continue;
            }
            const mattn_vf vmn = vset1(mn);
            mattn_vf vs = vset1(0.0f);
            for (int j = 0; j < nc; j += MATTN_VL) {
                mattn_vf p = vexp(vload(row + j) - vmn);
                vs += p;
                vstore(row + j, p);
            }
            l[i] = l[i] * corr[i] + vhsum(vs);
            m[i] = mn;
            if (a->dropout > 0.0f)
                for (int j = 0; j < nb; j++) row[j] *= keep(a, q->b, h, q->t[i], s0 + j);
            if (corr[i] != 1.0f) {
                const mattn_vf vc = vset1(corr[i]);
                for (int d = 0; d < dhp; d += MATTN_VL) vstore(o + d, vload(o + d) * vc);
            }
        }
        mk_ay(q->n, nb, dhp, S, BK, 1, hp->V + (size_t)s0 * dhp, dhp, O, dhp);
    }
    for (int i = 0; i < q->n; i++) {
        float *out = a->out + (size_t)q->tok[i] * a->ldo + (size_t)h * dh;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (int d = 0; d < dh; d++) out[d] = O[(size_t)i * dhp + d] * inv;
        if (a->lse) a->lse[((size_t)q->b * a->H + h) * T + q->t[i]] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

/* Query rows of batch b: tokens [r0, r1) of a->rows (or all T positions). */
static void batch_rows(const mattn_attn_args *a, int b, int64_t *r0, int64_t *r1) {
    const int64_t T = a->T;
    if (!a->rows) { *r0 = b * T; *r1 = (b + 1) * T; return; }
    *r0 = mattn_lower_bound(a->rows, a->n_rows, b * T);
    *r1 = mattn_lower_bound(a->rows, a->n_rows, (b + 1) * T);
}

static void make_tile(const mattn_attn_args *a, int b, int64_t r, int64_t rend, qtile *q) {
    q->b = b;
    q->n = (int)(rend - r);
    for (int i = 0; i < q->n; i++) {
        q->tok[i] = a->rows ? a->rows[r + i] : (int)(r + i);
        q->t[i] = q->tok[i] - b * a->T;
        mattn_attn_key_range(q->t[i] + q_pos0(a), n_keys(a), a->causal, a->window, &q->lo[i], &q->hi[i]);
    }
}

/* Rows per tile: local attention sees w+1 keys, so short tiles waste less. */
static int tile_rows(const mattn_attn_args *a) { return a->window >= 0 && a->window < 4 * BK ? 2 * MR : BQ; }
/* The forward's, for a team of `team` threads: with a window 2 MR rows
 * (a tile of w + 2 MR keys; w512 at 4096: 5-8 % faster than 64 rows, 8 and
 * 24 slower); without, BQ alone and BQ / 2 in a team, so that a 64-row chunk
 * of 9 heads makes 18 tiles, not 9, for 2 threads to share (10 % faster at
 * 2 threads, 2-6 % slower alone).  Full rows see keys from 0 in the same
 * blocks whatever their tile, so the bits do not depend on the team. */
static int fwd_tile_rows(const mattn_attn_args *a, int team) {
    return a->window >= 0 ? 2 * MR : team > 1 ? BQ / 2 : BQ;
}

/* Keys and values [s0, s0 + nk) of head h of batch b into hp (Kt's columns
 * and V's rows at their positions), zeros to column s0 + ncols. */
static void pack_keys(const mattn_attn_args *a, int b, int h, int s0, int nk, int ncols, head_pack *hp) {
    const int dh = a->dh, dhp = pad_dh(dh);
    const mattn_kv *kv = a->kv;
    if (kv && kv->f16) {
        const int64_t off = (int64_t)b * n_keys(a) * kv->ld + kv_head(a, h) * kv->hstride;
        mattn_pack_kt_f16((const uint16_t *)kv->k + off, kv->ld, s0, nk, dh, hp->Kt + s0, hp->ldk, ncols);
        mattn_pack_rows_f16((const uint16_t *)kv->v + off, kv->ld, s0, nk, dh, dhp, ncols, hp->V + (size_t)s0 * dhp);
    } else {
        const int64_t ldkv = kv ? kv->ld : ld_kv(a), hs = kv ? kv->hstride : dh;
        const int64_t off = (int64_t)b * n_keys(a) * ldkv + kv_head(a, h) * hs;
        const float *kb = (kv ? (const float *)kv->k : a->k) + off, *vb = (kv ? (const float *)kv->v : a->v) + off;
        MATTN_ASSERT(ldkv <= INT32_MAX);
        mattn_pack_kt(kb, (int)ldkv, s0, nk, dh, hp->Kt + s0, hp->ldk, ncols);
        mattn_pack_rows(vb, (int)ldkv, s0, nk, dh, dhp, ncols, hp->V + (size_t)s0 * dhp, 1.0f);
    }
}

/* The keys [*klo, khi] that rows [r0, r1) of batch b see and the sinks
 * [0, *ns) before them, not the prefix between (fwd_tile masks, by
 * overwriting, what it reads past ns); when the sinks touch the window, one
 * range from 0 (*ns = 0). */
static void rows_keys(const mattn_attn_args *a, int b, int64_t r0, int64_t r1, int *klo, int *khi, int *ns) {
    qtile q;
    make_tile(a, b, r0, r0 + 1, &q);
    *klo = q.lo[0];
    make_tile(a, b, r1 - 1, r1, &q);
    *khi = q.hi[0];
    *ns = a->sinks < *klo ? a->sinks : *klo;
    if (*ns == *klo) *klo = 0, *ns = 0;
}

/* (b, h): pack its K/V head's keys and values (the tiles read up to a
 * vector past khi: zeros), then run its query tiles in order. */
static void fwd_head(const mattn_attn_args *a, int b, int h, float scale, head_pack *hp) {
    const int bq = fwd_tile_rows(a, 1);
    int64_t r0, r1;
    batch_rows(a, b, &r0, &r1);
    if (r1 == r0) return;
    int klo, khi, ns;
    rows_keys(a, b, r0, r1, &klo, &khi, &ns);
    if (ns > 0) pack_keys(a, b, h, 0, ns, ns, hp);
    pack_keys(a, b, h, klo, khi - klo + 1, khi - klo + 1 + BK, hp);
    qtile q;
    for (int64_t r = r0; r < r1; r += bq) {
        make_tile(a, b, r, r + bq < r1 ? r + bq : r1, &q);
        fwd_tile(a, &q, h, scale, hp);
    }
}

/* One (batch, query head) with its key/value pack in ws. */
static double fwd_task(void *ctx, int b, int h, float *ws) {
    const mattn_attn_args *a = ctx;
    head_pack hp;
    head_pack_floats(n_keys(a), a->dh, &hp.ldk);
    hp.Kt = ws, hp.V = ws + (size_t)pad_dh(a->dh) * hp.ldk;
    fwd_head(a, b, h, 1.0f / sqrtf((float)a->dh), &hp);
    return 0.0;
}

/* K/V head j's slot of the caller's pack (kernels.h, mattn_attn_pack). */
static size_t shared_slot(int cap, int dh, int *ldk) {
    return mattn_align_up(head_pack_floats(cap, dh, ldk) * sizeof(float));
}
static void shared_pack(const mattn_attn_args *a, int j, head_pack *hp) {
    const size_t slot = shared_slot(a->pack->cap, a->dh, &hp->ldk);
    hp->Kt = (float *)((char *)a->pack->buf + (size_t)j * slot), hp->V = hp->Kt + (size_t)pad_dh(a->dh) * hp->ldk;
}
size_t mattn_attn_pack_bytes(int cap, int dh, int n_kv_heads) {
    int ldk;
    return (size_t)n_kv_heads * shared_slot(cap, dh, &ldk);
}

/* The keys that the rows of batch b of the n calls see, as one pack:
 * [*klo, *khi] and the sinks [0, *ns) before them (a full call's rows: from
 * 0); *khi = -1 when none of them has rows in b. */
static void calls_keys(const mattn_attn_args *c, int n, int b, int *klo, int *khi, int *ns) {
    *klo = INT32_MAX, *khi = -1, *ns = 0;
    for (int i = 0; i < n; i++) {
        int64_t r0, r1;
        batch_rows(&c[i], b, &r0, &r1);
        if (r1 == r0) continue;
        int lo, hi, s;
        rows_keys(&c[i], b, r0, r1, &lo, &hi, &s);
        *klo = lo < *klo ? lo : *klo, *khi = hi > *khi ? hi : *khi, *ns = s > *ns ? s : *ns;
    }
    if (*ns >= *klo) *klo = 0, *ns = 0;
}

/* Scores a tile (rows [r, rend) of batch b) computes: rows x its keys. */
static double tile_cost(const mattn_attn_args *a, int b, int64_t r, int64_t rend) {
    qtile q;
    int klo, khi;
    make_tile(a, b, r, rend, &q);
    tile_keys(&q, &klo, &khi);
    return (double)q.n * (khi - klo + 1 + n_sinks(a, klo));
}

/* Grouped-query heads, n calls over one query chunk (the same queries,
 * keys, geometry and scratch; their own rows, windows, sinks, masks and
 * outputs): the (b, h, call, query tile) in order, each thread a contiguous
 * run of them by cost (a tile's rows x keys, so that full and local tiles
 * weigh what they take; tiles, not heads: SmolLM2's 9 heads split 4/5
 * between 2 threads).  A thread packs a K/V head once for the tiles of its
 * run that read it — the keys every call's rows see, so that a chunk's full
 * and local rows share one pack — in its own slot, where its tiles find it
 * in its own cache.  Every thread walks the same sums (pass 0: the total),
 * so the runs tile the work; a tile's rows and key blocks do not depend on
 * the split. */
static void fwd_grouped(const mattn_attn_args *c, int n, size_t pack) {
    const size_t slot = mattn_align_up(pack * sizeof(float));
    const int n0 = c->pack ? c->pack->n : 0, Tk = n_keys(c), Hkv = c->H / c->kv_group;
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
#endif
    if (!c->pack && (size_t)team > c->scratch_bytes / slot) team = (int)(c->scratch_bytes / slot);
    const float scale = 1.0f / sqrtf((float)c->dh);
    #pragma omp parallel num_threads(team)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nth = omp_get_num_threads();
#endif
        head_pack hp = {NULL, NULL, 0};
        if (!c->pack) {
            head_pack_floats(n_keys(c), c->dh, &hp.ldk);
            hp.Kt = (float *)((char *)c->scratch + (size_t)tid * slot), hp.V = hp.Kt + (size_t)pad_dh(c->dh) * hp.ldk;
        }
        if (c->pack && n0 < Tk) { /* the new keys into the shared pack, K/V heads between the threads */
            for (int j = tid; j < Hkv; j += nth) {
                shared_pack(c, j, &hp);
                pack_keys(c, 0, j * c->kv_group, n0, Tk - n0, Tk - n0, &hp);
            }
            #pragma omp barrier
        }
        double total = 0.0, at = 0.0;
        for (int pass = 0; pass < 2; pass++, total = at, at = 0.0) {
            const double lo = tid ? total * tid / nth : -1.0, hi = tid + 1 < nth ? total * (tid + 1) / nth : INFINITY;
            int64_t packed = -1;
            for (int b = 0; b < c->B; b++) {
                int klo, khi, ns;
                calls_keys(c, n, b, &klo, &khi, &ns);
                for (int h = 0; khi >= 0 && h < c->H; h++)
                    for (int i = 0; i < n; i++) {
                        const int bq = fwd_tile_rows(&c[i], team);
                        int64_t r0, r1;
                        batch_rows(&c[i], b, &r0, &r1);
                        for (int64_t r = r0; r < r1; r += bq) {
                            const int64_t rend = r + bq < r1 ? r + bq : r1;
                            const double cost = tile_cost(&c[i], b, r, rend), mid = at + 0.5 * cost;
                            at += cost;
                            if (pass == 0 || mid < lo || mid >= hi) continue;
                            if (c->pack) {
                                shared_pack(c, kv_head(c, h), &hp);
                            } else if (packed != (int64_t)b * c->H + kv_head(c, h)) {
                                if (ns > 0) pack_keys(c, b, h, 0, ns, ns, &hp);
                                pack_keys(c, b, h, klo, khi - klo + 1, khi - klo + 1 + BK, &hp);
                                packed = (int64_t)b * c->H + kv_head(c, h);
                            }
                            qtile q;
                            make_tile(&c[i], b, r, rend, &q);
                            fwd_tile(&c[i], &q, h, scale, &hp);
                        }
                    }
            }
        }
    }
}

static int same_chunk(const mattn_attn_args *a, const mattn_attn_args *b) {
    return a->B == b->B && a->T == b->T && a->H == b->H && a->dh == b->dh && a->q == b->q && a->ld == b->ld &&
           a->k == b->k && a->v == b->v && a->kv == b->kv && a->kv_group == b->kv_group && a->ldkv == b->ldkv &&
           n_keys(a) == n_keys(b) && a->scratch == b->scratch && a->scratch_bytes == b->scratch_bytes &&
           a->causal == b->causal && a->pack == b->pack;
}

double mattn_attn_softmax_forward_n(const mattn_attn_args *calls, int n) {
    MATTN_ASSERT(n >= 1);
    for (int i = 0; i < n; i++) {
        check_geometry(&calls[i]);
        MATTN_ASSERT(same_chunk(&calls[0], &calls[i]));
    }
    int ldk;
    const size_t pack = head_pack_floats(n_keys(calls), calls->dh, &ldk);
    double fl = 0.0;
    const mattn_attn_pack *sp = calls->pack;
    MATTN_ASSERT(!sp || (calls->kv_group > 1 && calls->B == 1 && n_keys(calls) <= sp->cap && sp->n >= 0 &&
                         sp->n <= n_keys(calls)));
    if (calls->kv_group > 1) {
        if (!sp && (!calls->scratch || calls->scratch_bytes < mattn_align_up(pack * sizeof(float)))) return -1.0;
        fwd_grouped(calls, n, pack);
        if (sp) calls->pack->n = n_keys(calls);
    }
    for (int i = 0; i < n; i++) {
        if (calls->kv_group <= 1 && mattn_for_heads(calls[i].B, calls[i].H, pack, calls[i].scratch,
                                                    calls[i].scratch_bytes, fwd_task, (void *)&calls[i]) < 0)
            return -1.0;
        fl += flops(&calls[i]);
    }
    return fl;
}

double mattn_attn_softmax_forward(const mattn_attn_args *a) { return mattn_attn_softmax_forward_n(a, 1); }

// ----------------------------------------------------------------------------
// tiled backward: one task per (b, h), keys outer, queries inner
//
// For a key tile j: Kt, Vt (transposed) and Kb (rows) packed once, dK and dV
// accumulated in the tile; for each query tile i that sees it, P is
// recomputed from the saved log-sum-exp, dP = dO Vt, dS = P (m dP - D),
// dV += (P m)^T dO, dK += dS^T (scale q), dQ += scale dS K.  A task owns
// every row of its (b, h), so nothing is shared between threads.

/* Per-thread tiles of the backward, carved from one allocation. */
#define BWD_FLOATS (5 * (size_t)BK * DHP_MAX + 3 * (size_t)BQ * DHP_MAX + 2 * (size_t)BQ * BK)

static void bwd_head(const mattn_attn_args *a, const mattn_attn_grad *g, int b, int h, float scale, float *ws) {
    const int T = a->T, dh = a->dh, dhp = pad_dh(dh), bq = tile_rows(a);
    float *Kt = ws, *Vt = Kt + BK * DHP_MAX, *Kb = Vt + BK * DHP_MAX, *dK = Kb + BK * DHP_MAX;
    float *dV = dK + BK * DHP_MAX, *Qb = dV + BK * DHP_MAX, *dOb = Qb + BQ * DHP_MAX, *dQ = dOb + BQ * DHP_MAX;
    float *P = dQ + BQ * DHP_MAX, *dS = P + BQ * BK;
    float Dq[BQ], lse[BQ];
    const size_t hb = (size_t)b * T;
    const float *kb = a->k + hb * a->ld + (size_t)h * dh, *vb = a->v + hb * a->ld + (size_t)h * dh;
    /* local: short key blocks, so the query rows that see a block mostly see all of it */
    const int bk = a->window >= 0 && a->window < BK ? 32 : BK;
    for (int s0 = 0; s0 < T; s0 += bk) {
        const int nb = T - s0 < bk ? T - s0 : bk, nc = (nb + MATTN_VL - 1) / MATTN_VL * MATTN_VL;
        mattn_pack_kt(kb, a->ld, s0, nb, dh, Kt, BK, nc);
        mattn_pack_kt(vb, a->ld, s0, nb, dh, Vt, BK, nc);
        mattn_pack_rows(kb, a->ld, s0, nb, dh, dhp, nb, Kb, 1.0f);
        memset(dK, 0, sizeof(float) * (size_t)nb * dhp);
        memset(dV, 0, sizeof(float) * (size_t)nb * dhp);
        /* query rows that can see a key of [s0, s0+nb) */
        int t_lo = 0, t_hi = T - 1;
        if (a->causal) t_lo = s0;
        if (a->window >= 0 && s0 >= a->sinks) { /* every later query sees a sink */
            t_hi = s0 + nb - 1 + a->window < T - 1 ? s0 + nb - 1 + a->window : T - 1;
            if (!a->causal) t_lo = s0 - a->window > 0 ? s0 - a->window : 0;
        }
        for (int t0 = t_lo; t0 <= t_hi; t0 += bq) {
            qtile q;
            make_tile(a, b, hb + t0, hb + (t0 + bq - 1 < t_hi ? t0 + bq : t_hi + 1), &q);
            for (int i = 0; i < q.n; i++) {
                float *qr = Qb + (size_t)i * dhp, *gr = dOb + (size_t)i * dhp;
                const size_t row = (size_t)q.tok[i];
                const float *x = a->q + row * a->ld + (size_t)h * dh;
                const float *go = g->gout + row * g->ldgo + (size_t)h * dh;
                int d = 0;
                for (; d < dh; d++) qr[d] = scale * x[d], gr[d] = go[d];
                for (; d < dhp; d++) qr[d] = 0.0f, gr[d] = 0.0f;
                Dq[i] = mattn_dot(go, a->out + row * a->ldo + (size_t)h * dh, dh);
                lse[i] = a->lse[((size_t)b * a->H + h) * T + q.t[i]];
            }
            mk_xyt(q.n, dh, Qb, dhp, Kt, BK, nc, P, BK);
            mask_scores(a, &q, s0, nb, nc, P);
            mk_xyt(q.n, dh, dOb, dhp, Vt, BK, nc, dS, BK);
            for (int i = 0; i < q.n; i++) {
                float *p = P + (size_t)i * BK, *ds = dS + (size_t)i * BK;
                if (lse[i] == -INFINITY) { /* saw no key: no gradient */
                    memset(p, 0, sizeof(float) * nc);
                    memset(ds, 0, sizeof(float) * nc);
                    continue;
                }
                const mattn_vf vl = vset1(lse[i]), vd = vset1(Dq[i]);
                const int drop = a->dropout > 0.0f;
                for (int j = 0; j < nc; j += MATTN_VL) {
                    mattn_vf pj = vexp(vload(p + j) - vl);
                    vstore(p + j, pj);
                    if (!drop) vstore(ds + j, pj * (vload(ds + j) - vd));
                }
                for (int j = 0; drop && j < nb; j++) {
                    const float mk = keep(a, b, h, q.t[i], s0 + j);
                    ds[j] = p[j] * (mk * ds[j] - Dq[i]);
                    p[j] *= mk;
                }
            }
            mk_ay(nb, q.n, dhp, P, 1, BK, dOb, dhp, dV, dhp);
            mk_ay(nb, q.n, dhp, dS, 1, BK, Qb, dhp, dK, dhp);
            memset(dQ, 0, sizeof(float) * (size_t)q.n * dhp);
            mk_ay(q.n, nb, dhp, dS, BK, 1, Kb, dhp, dQ, dhp);
            for (int i = 0; i < q.n; i++)
                mattn_axpy(g->gq + (size_t)q.tok[i] * g->ldg + (size_t)h * dh, scale, dQ + (size_t)i * dhp, dh);
        }
        for (int j = 0; j < nb; j++) {
            const size_t row = hb + (size_t)(s0 + j);
            mattn_axpy(g->gk + row * g->ldg + (size_t)h * dh, 1.0f, dK + (size_t)j * dhp, dh);
            mattn_axpy(g->gv + row * g->ldg + (size_t)h * dh, 1.0f, dV + (size_t)j * dhp, dh);
        }
    }
}

typedef struct { const mattn_attn_args *a; const mattn_attn_grad *g; } bwd_ctx;
static double bwd_task(void *ctx, int b, int h, float *ws) {
    const bwd_ctx *c = ctx;
    bwd_head(c->a, c->g, b, h, 1.0f / sqrtf((float)c->a->dh), ws);
    return 0.0;
}

int mattn_attn_softmax_backward(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && a->lse && a->dh <= MATTN_MAX_HEAD_DIM && mha_geometry(a));
    bwd_ctx c = {a, g};
    return mattn_for_heads(a->B, a->H, BWD_FLOATS, a->scratch, a->scratch_bytes, bwd_task, &c) < 0 ? -1 : 0;
}

size_t mattn_attn_softmax_scratch(int T, int dh, int backward, int threads) {
    int ldk;
    return mattn_heads_scratch(backward ? BWD_FLOATS : head_pack_floats(T, dh, &ldk), threads);
}

