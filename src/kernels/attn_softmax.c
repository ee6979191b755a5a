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
 * are the plain formulas (three passes; P materialised in double) the tests
 * compare them against.  Dropout on the probabilities uses a counter-based
 * hash of (b, h, t, s), so every version draws the same mask whatever the
 * threads (the decode step is attn_decode.c).  The forwards also take
 * grouped-query heads (a query head reads K/V head h / kv_group) and a
 * query chunk at the end of a longer key sequence (Tk keys, the queries
 * their last T positions): a LLaMA-style model's prefill against its cache
 * (kernels.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/kernels.h"
#include "kernels/microkernel.h"
#include "kernels/simd.h"

// ----------------------------------------------------------------------------
// shared helpers

static inline int64_t n_queries(const mattn_attn_args *a) {
    return a->rows ? a->n_rows : (int64_t)a->B * a->T;
}

/* The geometry fields with their defaults (kernels.h): keys per sequence,
 * the K/V row stride, the position of query row 0, query head h's K/V head. */
static inline int n_keys(const mattn_attn_args *a) { return a->Tk > 0 ? a->Tk : a->T; }
static inline int ld_kv(const mattn_attn_args *a) { return a->ldkv > 0 ? a->ldkv : a->ld; }
static inline int q_pos0(const mattn_attn_args *a) { return n_keys(a) - a->T; }
static inline int kv_head(const mattn_attn_args *a, int h) { return a->kv_group > 1 ? h / a->kv_group : h; }

/* Element i of query head h's key (v = 0) or value (v = 1) at position s of
 * batch b: from the cache view a->kv when there is one, else from k/v rows. */
static inline float kv_elem(const mattn_attn_args *a, int v, int b, int s, int h, int i) {
    const int64_t pos = (int64_t)b * n_keys(a) + s;
    if (a->kv)
        return mattn_kv_at(v ? a->kv->v : a->kv->k, pos * a->kv->ld + kv_head(a, h) * a->kv->hstride + i,
                           a->kv->f16);
    return (v ? a->v : a->k)[pos * ld_kv(a) + (int64_t)kv_head(a, h) * a->dh + i];
}

/* Sinks a query with key range [lo, hi] sees beside it: keys [0, that). */
static inline int n_sinks(const mattn_attn_args *a, int lo) { return a->sinks < lo ? a->sinks : lo; }
/* The keys a query sees in order: its sinks [0, ns), then [lo, hi]. */
static inline int next_key(int s, int ns, int lo) { return s + 1 == ns ? lo : s + 1; }
static inline int first_key(int ns, int lo) { return ns > 0 ? 0 : lo; }

static void check_geometry(const mattn_attn_args *a) {
    MATTN_ASSERT(a->dh <= MATTN_MAX_HEAD_DIM);
    MATTN_ASSERT(a->sinks >= 0 && (a->sinks == 0 || a->causal));
    MATTN_ASSERT(a->Tk == 0 || a->Tk >= a->T);
    MATTN_ASSERT(a->kv_group <= 1 || a->H % a->kv_group == 0);
}

/* Score of query row t (q) against key s, or -INFINITY when s is masked out. */
static inline float score(const mattn_attn_args *a, const float *q, int b, int t, int s, int h,
                          float scale) {
    const mattn_masks *m = a->masks;
    const int Tk = n_keys(a);
    if (m && m->key_padding && !m->key_padding[(size_t)b * Tk + s]) return -INFINITY;
    float d;
    if (a->kv) {
        d = 0.0f;
        for (int i = 0; i < a->dh; i++) d += q[i] * kv_elem(a, 0, b, s, h, i);
        d *= scale;
    } else {
        d = mattn_dot(q, a->k + ((size_t)b * Tk + s) * ld_kv(a) + (size_t)kv_head(a, h) * a->dh, a->dh) * scale;
    }
    if (m && m->additive) {
        size_t off = m->additive_batched ? (size_t)b * a->T * Tk : 0;
        d += m->additive[off + (size_t)t * Tk + s];
    }
    return d;
}

/* Dropout multiplier for probability (b,h,t,s), t a query row: 0 or 1/(1-p).
 * Hashed on the query's position, so a chunk draws what the whole would. */
static inline float keep(const mattn_attn_args *a, int b, int h, int t, int s) {
    if (a->dropout <= 0.0f) return 1.0f;
    uint64_t key = a->dropout_key ^ mattn_mix64((uint64_t)b * (uint64_t)a->H + (uint64_t)h + 1);
    double u = mattn_hash_u01(key, (uint64_t)(t + q_pos0(a)) * (uint64_t)n_keys(a) + (uint64_t)s);
    return u < a->dropout ? 0.0f : 1.0f / (1.0f - a->dropout);
}

static double flops(const mattn_attn_args *a) {
    double f = 0.0;
    for (int64_t r = 0; r < n_queries(a); r++) {
        int tok = a->rows ? a->rows[r] : (int)r, lo, hi;
        mattn_attn_key_range(tok % a->T + q_pos0(a), n_keys(a), a->causal, a->window, &lo, &hi);
        if (hi >= lo) f += (double)(hi - lo + 1 + n_sinks(a, lo));
    }
    return f * 4.0 * a->H * a->dh; /* q.k and p*v: 2*dh each per key and head */
}

// ----------------------------------------------------------------------------
// tiled (flash-style) version
//
// A task is one (batch, head) — with grouped-query heads a thread's run of
// them, each K/V head packed once for the run's query heads: it packs the
// head's keys transposed (K^T, dh x T) and its values (T x dhp) once, then walks its query rows in tiles
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

/* The key range [klo, khi] a tile touches. */
static void tile_keys(const qtile *q, int *klo, int *khi) {
    int lo = q->lo[0], hi = q->hi[0];
    for (int i = 1; i < q->n; i++) {
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
    float m[BQ], l[BQ];
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
        for (int i = 0; i < q->n; i++) {
            float *row = S + (size_t)i * BK, *o = O + (size_t)i * dhp;
            mattn_vf vm = vset1(-INFINITY);
            for (int j = 0; j < nc; j += MATTN_VL) vm = vmax(vm, vload(row + j));
            const float bm = vhmax(vm);
            const float mn = bm > m[i] ? bm : m[i];
            if (mn == -INFINITY) { /* nothing visible yet: P = 0 */
                memset(row, 0, sizeof(float) * nc);
                continue;
            }
            const float corr = expf(m[i] - mn); /* 0 when m was -inf */
            const mattn_vf vmn = vset1(mn);
            mattn_vf vs = vset1(0.0f);
            for (int j = 0; j < nc; j += MATTN_VL) {
                mattn_vf p = vexp(vload(row + j) - vmn);
                vs += p;
                vstore(row + j, p);
            }
            l[i] = l[i] * corr + vhsum(vs);
            m[i] = mn;
            if (a->dropout > 0.0f)
                for (int j = 0; j < nb; j++) row[j] *= keep(a, q->b, h, q->t[i], s0 + j);
            if (corr != 1.0f) {
                const mattn_vf vc = vset1(corr);
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

/* Tiles of bq rows of batch b's query rows, per head. */
static int64_t head_tiles(const mattn_attn_args *a, int b, int bq) {
    int64_t r0, r1;
    batch_rows(a, b, &r0, &r1);
    return (r1 - r0 + bq - 1) / bq;
}

/* (b, h), its query tiles [j0, j1): pack its K/V head's keys and values
 * unless hp holds them already (*packed: the batch and K/V head it holds,
 * -1: none; the tiles read up to a vector past khi: zeros), then run the
 * tiles in order. */
static void fwd_head(const mattn_attn_args *a, int b, int h, int bq, int64_t j0, int64_t j1, float scale,
                     head_pack *hp, int64_t *packed) {
    int64_t r0, r1;
    batch_rows(a, b, &r0, &r1);
    j0 = j0 > 0 ? j0 : 0;
    j1 = j1 < (r1 - r0 + bq - 1) / bq ? j1 : (r1 - r0 + bq - 1) / bq;
    if (j1 <= j0) return;
    int klo, khi, ns;
    rows_keys(a, b, r0, r1, &klo, &khi, &ns);
    const int64_t key = (int64_t)b * a->H + kv_head(a, h);
    if (*packed != key) {
        if (ns > 0) pack_keys(a, b, h, 0, ns, ns, hp);
        pack_keys(a, b, h, klo, khi - klo + 1, khi - klo + 1 + BK, hp);
        *packed = key;
    }
    qtile q;
    for (int64_t r = r0 + j0 * bq; r < r0 + j1 * bq; r += bq) {
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
    int64_t packed = -1;
    fwd_head(a, b, h, fwd_tile_rows(a, 1), 0, INT64_MAX, 1.0f / sqrtf((float)a->dh), &hp, &packed);
    return 0.0;
}

/* Grouped-query heads: the (b, h, query tile) in order, each thread a
 * contiguous run of them (tiles, not heads: SmolLM2's 9 heads split 4/5
 * between 2 threads), packing a K/V head once for the tiles of its run that
 * read it (1 thread: once per K/V head; a task per query head packed it
 * kv_group times), in its own slot, where its tiles find it in its own
 * cache.  A tile's rows and key blocks do not depend on the split. */
static void fwd_grouped(const mattn_attn_args *a, size_t pack) {
    const size_t slot = mattn_align_up(pack * sizeof(float));
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
#endif
    if ((size_t)team > a->scratch_bytes / slot) team = (int)(a->scratch_bytes / slot);
    const int bq = fwd_tile_rows(a, team);
    int64_t n = 0;
    for (int b = 0; b < a->B; b++) n += a->H * head_tiles(a, b, bq);
    #pragma omp parallel num_threads(team)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nth = omp_get_num_threads();
#endif
        head_pack hp;
        head_pack_floats(n_keys(a), a->dh, &hp.ldk);
        hp.Kt = (float *)((char *)a->scratch + (size_t)tid * slot), hp.V = hp.Kt + (size_t)pad_dh(a->dh) * hp.ldk;
        int64_t packed = -1, base = 0;
        const int64_t i0 = n * tid / nth, i1 = n * (tid + 1) / nth;
        for (int b = 0; b < a->B && base < i1; b++) {
            const int64_t nt = head_tiles(a, b, bq);
            for (int h = 0; h < a->H && base < i1; h++, base += nt)
                fwd_head(a, b, h, bq, i0 - base, i1 - base, 1.0f / sqrtf((float)a->dh), &hp, &packed);
        }
    }
}

double mattn_attn_softmax_forward(const mattn_attn_args *a) {
    check_geometry(a);
    int ldk;
    const size_t pack = head_pack_floats(n_keys(a), a->dh, &ldk);
    if (a->kv_group > 1) {
        if (!a->scratch || a->scratch_bytes < mattn_align_up(pack * sizeof(float))) return -1.0;
        fwd_grouped(a, pack);
    } else if (mattn_for_heads(a->B, a->H, pack, a->scratch, a->scratch_bytes, fwd_task, (void *)a) < 0) {
        return -1.0;
    }
    return flops(a);
}

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

/* The backward passes take plain multi-head geometry only (sinks: causal). */
static int mha_geometry(const mattn_attn_args *a) {
    return a->kv_group <= 1 && (a->Tk == 0 || a->Tk == a->T) && (a->ldkv == 0 || a->ldkv == a->ld) && !a->kv &&
           a->sinks >= 0 && (!a->sinks || a->causal);
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

// ----------------------------------------------------------------------------
// reference: three passes over the visible keys

double mattn_attn_softmax_forward_ref(const mattn_attn_args *a) {
    check_geometry(a);
    const int H = a->H, dh = a->dh, T = a->T, Tk = n_keys(a);
    const float scale = 1.0f / sqrtf((float)dh);
    for (int64_t r = 0; r < n_queries(a); r++) {
        for (int h = 0; h < H; h++) {
            int tok = a->rows ? a->rows[r] : (int)r, b = tok / T, t = tok % T, lo, hi;
            mattn_attn_key_range(t + q_pos0(a), Tk, a->causal, a->window, &lo, &hi);
            const int ns = hi >= lo ? n_sinks(a, lo) : 0, s1 = first_key(ns, lo);
            const float *q = a->q + (size_t)tok * a->ld + (size_t)h * dh;
            float *o = a->out + (size_t)tok * a->ldo + (size_t)h * dh;
            double m = -INFINITY, l = 0.0;
            for (int s = s1; s <= hi; s = next_key(s, ns, lo)) {
                double sc = score(a, q, b, t, s, h, scale);
                if (sc > m) m = sc;
            }
            for (int s = s1; s <= hi && m > -INFINITY; s = next_key(s, ns, lo))
                l += exp(score(a, q, b, t, s, h, scale) - m);
            for (int i = 0; i < dh; i++) {
                double acc = 0.0;
                for (int s = s1; s <= hi && l > 0.0; s = next_key(s, ns, lo)) {
                    double p = exp(score(a, q, b, t, s, h, scale) - m) / l * keep(a, b, h, t, s);
                    acc += p * kv_elem(a, 1, b, s, h, i);
                }
                o[i] = (float)acc;
            }
            if (a->lse) a->lse[((size_t)b * H + h) * T + t] = l > 0.0 ? (float)(m + log(l)) : -INFINITY;
        }
    }
    return flops(a);
}

// ----------------------------------------------------------------------------
// backward (every query row; training runs every expert on every token)
//
// o_t = sum_s P_ts m_ts v_s with P = softmax(scores), m the dropout multiplier:
//   D_t    = <go_t, o_t>                   (= sum_s P_ts dP_ts)
//   dP_ts  = m_ts <go_t, v_s>
//   dS_ts  = P_ts (dP_ts - D_t)
//   gv_s  += P_ts m_ts go_t,  gq_t += scale dS_ts k_s,  gk_s += scale dS_ts q_t
// P_ts is recomputed from the saved log-sum-exp: exp(score - lse_t).

static inline float *grow(float *base, const mattn_attn_grad *g, int b, int T, int t, int h, int dh) {
    return base + ((size_t)b * T + t) * g->ldg + (size_t)h * dh;
}

/* Reference: materialise P (T x T, double) per (b, h) and apply the matrix
 * formulas; recomputes everything from q, k, v (ignores lse and out). */
void mattn_attn_softmax_backward_ref(const mattn_attn_args *a, const mattn_attn_grad *g) {
    MATTN_ASSERT(!a->rows && mha_geometry(a));
    const int B = a->B, T = a->T, H = a->H, dh = a->dh;
    const float scale = 1.0f / sqrtf((float)dh);
    double *P = mattn_malloc(sizeof(double) * (size_t)T * T), *dS = mattn_malloc(sizeof(double) * (size_t)T * T);
    MATTN_ASSERT(P && dS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int t = 0; t < T; t++) {
                const float *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                double m = -INFINITY, l = 0.0;
                for (int s = 0; s < T; s++) {
                    int lo, hi;
                    mattn_attn_key_range(t, T, a->causal, a->window, &lo, &hi);
                    double sc = (s >= lo || s < a->sinks) && s <= hi ? score(a, q, b, t, s, h, scale) : -INFINITY;
                    P[(size_t)t * T + s] = sc;
                    if (sc > m) m = sc;
                }
                for (int s = 0; s < T; s++) {
                    double e = m > -INFINITY ? exp(P[(size_t)t * T + s] - m) : 0.0;
                    P[(size_t)t * T + s] = e;
                    l += e;
                }
                for (int s = 0; s < T; s++) P[(size_t)t * T + s] = l > 0.0 ? P[(size_t)t * T + s] / l : 0.0;
            }
            /* dP = (go v^T) .* mask;  dS = P .* (dP - rowsum(P .* dP)) */
            for (int t = 0; t < T; t++) {
                const float *go = g->gout + ((size_t)b * T + t) * g->ldgo + (size_t)h * dh;
                double Dt = 0.0;
                for (int s = 0; s < T; s++) {
                    const float *v = a->v + ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    double dp = 0.0;
                    for (int i = 0; i < dh; i++) dp += (double)go[i] * v[i];
                    dp *= keep(a, b, h, t, s);
                    dS[(size_t)t * T + s] = dp;
                    Dt += P[(size_t)t * T + s] * dp;
                }
                for (int s = 0; s < T; s++) {
                    double p = P[(size_t)t * T + s], ds = p * (dS[(size_t)t * T + s] - Dt) * scale;
                    float *gq = grow(g->gq, g, b, T, t, h, dh), *gk = grow(g->gk, g, b, T, s, h, dh);
                    float *gv = grow(g->gv, g, b, T, s, h, dh);
                    const size_t ks = ((size_t)b * T + s) * a->ld + (size_t)h * dh;
                    const float *k = a->k + ks, *q = a->q + ((size_t)b * T + t) * a->ld + (size_t)h * dh;
                    double pm = p * keep(a, b, h, t, s);
                    for (int i = 0; i < dh; i++) {
                        gv[i] += (float)(pm * go[i]);
                        gq[i] += (float)(ds * k[i]);
                        gk[i] += (float)(ds * q[i]);
                    }
                }
            }
        }
    }
    mattn_free(P);
    mattn_free(dS);
}
