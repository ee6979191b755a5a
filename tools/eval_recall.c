/*
 * eval_recall.c — `metaattn eval --task recall`: the recall task of
 * bench/experiments/recall.py scored as deployed.  Each window (a record) is
 * decoded token by token with the decode cache in the routing eval asked
 * for; a query "@KEY:VALUE" is answered when the greedy (argmax) prediction
 * of each of its 4 VALUE bytes is right — teacher-forced argmax equals greedy
 * decoding here, since every earlier prediction of a right answer is the
 * byte fed next.  Also how the routes met the task: per layer, the share of
 * the positions that predict a value byte (the query's ':' and its first 3
 * digits) that ran the "full" expert (recall), the share of all positions
 * that did, and the precision.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Positions t of a record whose next byte is a queried value digit: after
 * "@" + 4 upper-case letters + ":" the 4 digits.  mask[t] = 1 there. */
static int value_positions(const int32_t *seq, int T, uint8_t *mask) {
    int n = 0;
    if (T < 1) return 0;
    memset(mask, 0, (size_t)T);
    for (int t = 0; t + 9 <= T; t++) { /* seq[t..t+9]: @ K K K K : d d d d, predicted from t+5 .. t+8 */
        if (seq[t] != '@') continue;
        int ok = 1;
        for (int i = 1; i <= 4 && ok; i++) ok = seq[t + i] >= 'A' && seq[t + i] <= 'Z';
        ok = ok && seq[t + 5] == ':';
        for (int i = 6; i <= 9 && ok; i++) ok = t + i < T + 1 && seq[t + i] >= '0' && seq[t + i] <= '9';
        if (!ok) continue;
        for (int i = 5; i <= 8; i++) mask[t + i] = 1;
        n++;
    }
    return n;
}

int eval_recall(mattn_model *m, const uint8_t *bytes, int64_t n_win, int64_t n_all, int T, int json) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int L = cfg->n_layers, V = cfg->vocab_size, fk = cli_expert_index(&cfg->attn, "full");
    if (!cfg->position_norm) return cli_fail(1, "--task recall decodes with the cache: the model needs position_norm max_seq_len");
    mattn_model_cache *c = NULL;
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(T + 1));
    uint8_t *mask = malloc((size_t)T + 1);
    float *logits = malloc(sizeof(float) * (size_t)V);
    int64_t *full_val = calloc((size_t)L, sizeof *full_val), *full_all = calloc((size_t)L, sizeof *full_all);
    int64_t queries = 0, right = 0, n_val = 0, n_tok = 0, any_val = 0;
    double val_ce = 0.0; /* cross-entropy on the value bytes (ln 10 = 2.30: no recall) */
    int rc = !seq || !mask || !logits || !full_val || !full_all ? cli_fail(1, "out of memory") : 0;
    if (!rc && mattn_model_cache_init(m, 1, &c) != MATTN_OK) rc = cli_fail(1, "decode cache: %s", mattn_model_errmsg(m));
    for (int64_t wi = 0; wi < n_win && !rc; wi++) {
        const int64_t w = n_win == n_all ? wi : wi * n_all / n_win;
        const uint8_t *p = bytes + (size_t)w * (size_t)(T + 1);
        for (int t = 0; t <= T; t++) seq[t] = p[t];
        const int nq = value_positions(seq, T, mask);
        int wrong[64] = {0}; /* per query of this record (at most T/10) */
        mattn_model_cache_reset(c);
        for (int t = 0, q = -1; t < T && !rc; t++) {
            if (mattn_model_decode(m, c, &seq[t], logits) != MATTN_OK) {
                rc = cli_fail(1, "decode: %s", mattn_model_errmsg(m));
                break;
            }
            int best = 0, any = 0;
            for (int v = 1; v < V; v++) best = logits[v] > logits[best] ? v : best;
            if (mask[t] && (t == 0 || !mask[t - 1])) q++;
            if (mask[t] && q < 64) wrong[q] |= best != seq[t + 1];
            if (mask[t]) {
                double mx = logits[0], z = 0.0;
                for (int v = 1; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
                for (int v = 0; v < V; v++) z += exp((double)logits[v] - mx);
                val_ce += mx + log(z) - logits[seq[t + 1]];
            }
            for (int l = 0; l < L; l++) {
                mattn_stats s;
                mattn_model_layer_stats(m, l, &s);
                const int ran = fk >= 0 && s.exec_frac[fk] > 0.0;
                full_all[l] += ran;
                if (mask[t]) full_val[l] += ran, any |= ran;
            }
            n_tok++;
            n_val += mask[t];
            any_val += mask[t] && any;
        }
        queries += nq;
        for (int q = 0; q < nq && q < 64; q++) right += !wrong[q];
    }
    if (!rc && json) {
        printf("{\"task\": \"recall\", \"records\": %lld, \"queries\": %lld, \"accuracy\": %.6f, "
               "\"value_loss\": %.6f, \"value_positions\": %lld, \"positions\": %lld, \"full_recall_any_layer\": %.6f, "
               "\"layers\": [",
               (long long)n_win, (long long)queries, queries ? (double)right / queries : 0.0,
               n_val ? val_ce / n_val : 0.0, (long long)n_val,
               (long long)n_tok, n_val ? (double)any_val / n_val : 0.0);
        for (int l = 0; l < L; l++)
            printf("%s{\"full_recall\": %.6f, \"full_share\": %.6f, \"full_precision\": %.6f}", l ? ", " : "",
                   n_val ? (double)full_val[l] / n_val : 0.0, n_tok ? (double)full_all[l] / n_tok : 0.0,
                   full_all[l] ? (double)full_val[l] / full_all[l] : 0.0);
        printf("]}\n");
    } else if (!rc) {
        printf("recall: %lld of %lld queries answered (accuracy %.4f), %lld records decoded with the cache\n",
               (long long)right, (long long)queries, queries ? (double)right / queries : 0.0, (long long)n_win);
        printf("cross-entropy on the value bytes: %.4f nats (ln 10 = 2.3026: no recall)\n", n_val ? val_ce / n_val : 0.0);
        printf("positions that predict a value byte routed to full in at least one layer: %.1f%% (%lld)\n",
               n_val ? 100.0 * any_val / n_val : 0.0, (long long)n_val);
        for (int l = 0; l < L; l++)
            printf("layer %d: full on %.1f%% of value positions, %.2f%% of all positions (precision %.3f)\n", l,
                   n_val ? 100.0 * full_val[l] / n_val : 0.0, n_tok ? 100.0 * full_all[l] / n_tok : 0.0,
                   full_all[l] ? (double)full_val[l] / full_all[l] : 0.0);
    }
    mattn_model_cache_free(c);
    free(seq), free(mask), free(logits), free(full_val), free(full_all);
    return rc;
}
