/*
 * llama_recall.c — `metaattn eval --model FILE.gguf --task passkey|copy`:
 * long-range retrieval, greedy answers, on prompts built from a filler text
 * (--data), the prompt and its greedy answer (8 tokens, copy 36) filling
 * --context tokens:
 *
 *   passkey  an intro, filler, "The pass key is NNNNN. Remember it. NNNNN is
 *            the pass key." at a depth, filler, "What is the pass key? The
 *            pass key is": right when the first number of the answer is NNNNN;
 *   copy     filler, a run of 16 words drawn from a fixed list at a depth,
 *            filler, the run's first 4 words: the score is the share of the
 *            other 12 the continuation repeats in place.
 *
 * Prompt i takes its filler at an offset, its number or words and its depth
 * ((i % 5 + 0.5) / 5 of the filler: 10 %, 30 %, ... 90 %) from SplitMix64
 * seeded (seed, i), so that two models see the same prompts.  Reports the
 * accuracy with its standard error over prompts; --routes FILE writes the
 * last prompt's routes (position, then the expert of each block) as TSV,
 * after a comment line with the needle's and the question's spans.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_harness.h"
#include "cli.h"

static const char *const WORDS[] = {
    "apple", "river", "candle", "mountain", "garden", "window", "silver", "horse", "pencil", "ocean", "thunder",
    "basket", "forest", "mirror", "copper", "lemon", "tiger", "blanket", "harbor", "violin", "desert", "ladder",
    "marble", "pepper", "rocket", "saddle", "tunnel", "wagon", "yellow", "zebra", "anchor", "bridge", "castle",
    "dragon", "engine", "feather", "glacier", "hammer", "island", "jacket", "kettle", "lantern", "meadow", "needle",
    "orchard", "parrot", "quarry", "ribbon", "shadow", "temple", "umbrella", "valley", "walnut", "button", "cotton",
    "dolphin", "falcon", "ginger", "helmet", "insect", "jungle", "kitten", "lizard", "magnet", "nickel", "oyster",
    "pillow", "rabbit", "salmon", "tomato", "velvet", "whistle", "bottle", "carpet", "donkey", "garlic", "hollow",
    "iron", "jelly", "kernel", "locket", "mustard", "napkin", "olive", "puzzle", "raisin", "spider", "turtle"};
#define N_WORDS (int)(sizeof WORDS / sizeof WORDS[0])
#define RUN 16
#define GIVEN 4
#define PASSKEY_OUT 8              /* tokens of the answers: prompt + answer = --context */
#define COPY_OUT (3 * (RUN - GIVEN))

typedef struct {
    mattn_llama *m;
    mattn_llama_cache *c;
    int32_t *filler;
    size_t n_filler;
    float *logits;
    int V;
    int needle[2], tail[2]; /* the last prompt's spans [a, b) of the needle and of the question */
} rc_run;

/* Append the tokens of text to ids (n so far, room for cap). */
static int add_text(rc_run *r, const char *text, int32_t *ids, int *n, int cap) {
    size_t k;
    if (mattn_llama_tokenize(r->m, text, strlen(text), 0, NULL, 0, &k) != MATTN_OK)
        return cli_fail(1, "eval: %s", mattn_llama_errmsg(r->m));
    if (*n + (int)k > cap) return cli_fail(1, "eval --task: the prompt's fixed text does not fit in --context %d", cap);
    mattn_llama_tokenize(r->m, text, strlen(text), 0, ids + *n, k, &k);
    *n += (int)k;
    return 0;
}

/* The greedy continuation of prompt ids[0..n) (n_out tokens) as text. */
static int answer(rc_run *r, const int32_t *ids, int n, int n_out, char *text, size_t cap) {
    mattn_llama_cache_reset(r->c);
    if (mattn_llama_forward(r->m, r->c, ids, n - 1, NULL) != MATTN_OK ||
        mattn_llama_decode(r->m, r->c, ids[n - 1], r->logits) != MATTN_OK)
        return cli_fail(1, "eval: %s", mattn_llama_errmsg(r->m));
    size_t len = 0;
    for (int i = 0; i < n_out; i++) {
        int32_t best = 0;
        for (int v = 1; v < r->V; v++) best = r->logits[v] > r->logits[best] ? v : best;
        const char *p;
        size_t pl;
        mattn_llama_token_piece(r->m, best, 0, &p, &pl);
        if (len + pl < cap) memcpy(text + len, p, pl), len += pl;
        if (i + 1 < n_out && mattn_llama_cache_length(r->c) < mattn_llama_cache_context(r->c) &&
            mattn_llama_decode(r->m, r->c, best, r->logits) != MATTN_OK)
            return cli_fail(1, "eval: %s", mattn_llama_errmsg(r->m));
    }
    text[len] = 0;
    return 0;
}

/* Prompt i: head text, filler, needle at depth, filler, tail, n tokens in all. */
static int build(rc_run *r, uint64_t *rng, int i, const char *head, const char *needle, const char *tail, int32_t *ids,
                 int N, int *n_out) {
    int32_t *fixed = malloc(sizeof *fixed * (size_t)N * 3);
    if (!fixed) return cli_fail(1, "eval: out of memory");
    int nh = 0, nn = 0, nt = 0, rc = 0;
    int32_t *h = fixed, *nd = fixed + N, *tl = fixed + 2 * N;
    if ((head[0] && add_text(r, head, h, &nh, N)) || add_text(r, needle, nd, &nn, N) || add_text(r, tail, tl, &nt, N))
        rc = 1;
    const int nf = N - nh - nn - nt;
    if (!rc && (nf < 10 || (size_t)nf > r->n_filler))
        rc = cli_fail(1, "eval --task: a prompt of %d tokens (--context less the answer's) leaves %d filler tokens "
                      "(the filler text has %zu)", N, nf, r->n_filler);
    if (!rc) {
        const size_t off = (size_t)(bench_rand(rng) % (uint64_t)(r->n_filler - (size_t)nf + 1));
        const int at = (int)(nf * ((i % 5) + 0.5) / 5.0);
        int n = 0;
        memcpy(ids + n, h, sizeof *ids * (size_t)nh), n += nh;
        memcpy(ids + n, r->filler + off, sizeof *ids * (size_t)at), n += at;
        memcpy(ids + n, nd, sizeof *ids * (size_t)nn), n += nn;
        memcpy(ids + n, r->filler + off + at, sizeof *ids * (size_t)(nf - at)), n += nf - at;
        r->needle[0] = nh + at, r->needle[1] = nh + at + nn;
        memcpy(ids + n, tl, sizeof *ids * (size_t)nt), n += nt;
        r->tail[0] = n - nt, r->tail[1] = n;
        *n_out = n;
    }
    free(fixed);
    return rc;
}

/* The score of prompt i of the task, in [0, 1]. */
static int one_prompt(rc_run *r, int copy, uint64_t seed, int i, int N, double *score, char *got, size_t cap) {
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xD1B54A32D192ED03ULL + 1;
    int32_t *ids = malloc(sizeof *ids * (size_t)N);
    if (!ids) return cli_fail(1, "eval: out of memory");
    char needle[512], tail[256];
    int idx[RUN], n = 0, rc;
    if (!copy) {
        const int key = 10000 + (int)(bench_rand(&rng) % 90000);
        snprintf(needle, sizeof needle, "\nThe pass key is %d. Remember it. %d is the pass key.\n", key, key);
        rc = build(r, &rng, i, "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
                   "I will quiz you about the pass key.\n", needle, "\nWhat is the pass key? The pass key is", ids,
                   N - PASSKEY_OUT, &n);
        if (!rc) rc = answer(r, ids, n, PASSKEY_OUT, got, cap);
        const char *p = got;
        while (!rc && *p && !isdigit((unsigned char)*p)) p++;
        *score = !rc && atoi(p) == key;
    } else {
        for (int k = 0; k < RUN; k++) { /* distinct words */
            int w, dup;
            do {
                w = (int)(bench_rand(&rng) % N_WORDS);
                dup = 0;
                for (int j = 0; j < k; j++) dup |= idx[j] == w;
            } while (dup);
            idx[k] = w;
        }
        size_t at = 0;
        at += (size_t)snprintf(needle + at, sizeof needle - at, "\n");
        for (int k = 0; k < RUN; k++) at += (size_t)snprintf(needle + at, sizeof needle - at, "%s ", WORDS[idx[k]]);
        snprintf(needle + at - 1, sizeof needle - at + 1, "\n");
        at = 0;
        at += (size_t)snprintf(tail + at, sizeof tail - at, "\n");
        for (int k = 0; k < GIVEN; k++)
            at += (size_t)snprintf(tail + at, sizeof tail - at, "%s%s", k ? " " : "", WORDS[idx[k]]);
        rc = build(r, &rng, i, "", needle, tail, ids, N - COPY_OUT, &n);
        if (!rc) rc = answer(r, ids, n, COPY_OUT, got, cap);
        int hit = 0;
        const char *p = got;
        for (int k = GIVEN; k < RUN && !rc; k++) { /* word k of the run at word k - GIVEN of the answer */
            while (*p && !isalpha((unsigned char)*p)) p++;
            const char *e = p;
            while (isalpha((unsigned char)*e)) e++;
            hit += (size_t)(e - p) == strlen(WORDS[idx[k]]) && !strncmp(p, WORDS[idx[k]], (size_t)(e - p));
            p = e;
        }
        *score = (double)hit / (RUN - GIVEN);
    }
    free(ids);
    return rc;
}

int cli_llama_recall(mattn_llama *m, const cli_recall_opts *o, const int32_t *filler, size_t n_filler) {
    mattn_llama_info info;
    mattn_llama_get_info(m, &info);
    rc_run r = {.m = m, .filler = (int32_t *)filler, .n_filler = n_filler, .V = info.vocab_size};
    const int copy = !strcmp(o->task, "copy"), N = (int)o->context;
    r.logits = malloc(sizeof(float) * (size_t)r.V);
    if (!r.logits) return cli_fail(1, "eval: out of memory");
    int rc = mattn_llama_cache_init_kv(m, N, o->kv, &r.c) != MATTN_OK
                 ? cli_fail(1, "eval: %s", mattn_llama_errmsg(m)) : 0;
    double sum = 0.0, sum2 = 0.0, t0 = cli_now();
    int done = 0;
    char got[512] = "";
    const int out = copy ? COPY_OUT : PASSKEY_OUT;
    if (!rc && N <= out + 32)
        rc = cli_fail(EXIT_USAGE, "--context %d: too short for --task %s (its answer alone takes %d tokens)", N, o->task,
                      out);
    for (int i = 0; !rc && i < o->prompts; i++) {
        double s = 0.0;
        rc = one_prompt(&r, copy, o->seed, i, N, &s, got, sizeof got);
        if (rc) break;
        sum += s, sum2 += s * s, done++;
        if (o->verbose) fprintf(stderr, "prompt %d (depth %d %%): %.3f  %s\n", i, (i % 5) * 20 + 10, s, got);
    }
    if (!rc) {
        const double mean = sum / done, var = done > 1 ? (sum2 - done * mean * mean) / (done - 1) : 0.0;
        const double se = sqrt(var > 0 ? var / done : 0.0);
        int64_t *counts = calloc((size_t)info.n_layers * MATTN_ROUTE_EXPERTS, sizeof *counts);
        double share[MATTN_ROUTE_EXPERTS] = {1, 0, 0};
        if (counts) mattn_llama_cache_routing(r.c, counts, NULL, NULL, NULL), cli_llama_shares(m, counts, share);
        free(counts);
        if (o->json)
            printf("{\"task\": \"%s\", \"context\": %d, \"prompts\": %d, \"seed\": %llu, \"accuracy\": %.4f, "
                   "\"stderr\": %.4f, \"share_full\": %.4f, \"share_linear\": %.4f, \"share_local\": %.4f, "
                   "\"seconds\": %.1f}\n", o->task, N, done, (unsigned long long)o->seed, mean, se, share[0],
                   share[1], share[2], cli_now() - t0);
        else
            printf("%s at %d tokens: accuracy %.3f +- %.3f over %d prompts (seed %llu); the last prompt's routes: full "
                   "%.1f %%, linear %.1f %%, local %.1f %%; %.1f s\n", o->task, N, mean, se, done,
                   (unsigned long long)o->seed, 100 * share[0], 100 * share[1], 100 * share[2], cli_now() - t0);
        if (o->routes) {
            const uint8_t *routes = NULL;
            FILE *f = fopen(o->routes, "w");
            mattn_llama_cache_routing(r.c, NULL, NULL, NULL, &routes);
            if (!f) rc = cli_fail(1, "--routes: cannot write '%s'", o->routes);
            if (f) fprintf(f, "# %s prompt %lld of %d tokens: needle [%d, %d), question [%d, %d), answer from %d; "
                           "columns: position, the expert of each block (0 full, 1 linear, 2 local)\n", o->task,
                           o->prompts - 1, N, r.needle[0], r.needle[1], r.tail[0], r.tail[1], r.tail[1]);
            for (int t = 0; f && routes && t < mattn_llama_cache_length(r.c); t++) {
                fprintf(f, "%d", t);
                for (int l = 0; l < info.n_layers; l++) fprintf(f, "\t%d", routes[(size_t)t * info.n_layers + l]);
                fputc('\n', f);
            }
            if (f && fclose(f) != 0) rc = cli_fail(1, "--routes: cannot write '%s'", o->routes);
        }
    }
    mattn_llama_cache_free(r.c);
    free(r.logits);
    return rc;
}
