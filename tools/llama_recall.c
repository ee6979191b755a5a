/*
 * llama_recall.c — `metaattn eval --model FILE.gguf --task passkey|copy`:
 * long-range retrieval, greedy answers, on the prompts of recall_prompt.c
 * built from a filler text (--data), the prompt and its greedy answer (8
 * tokens, copy 36) filling --context tokens: passkey is right when the
 * first number of the answer is the pass key; copy scores the share of the
 * run's other 12 words the continuation repeats in place.  Reports the
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

#define PASSKEY_OUT 8              /* tokens of the answers: prompt + answer = --context */
#define COPY_OUT (3 * (CLI_RECALL_RUN - CLI_RECALL_GIVEN))

typedef struct {
    mattn_llama *m;
    mattn_llama_cache *c;
    int32_t *filler;
    size_t n_filler;
    float *logits;
    int V;
    int needle[2], tail[2]; /* the last prompt's spans [a, b) of the needle and of the question */
} rc_run;

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

/* The score of prompt i of the task, in [0, 1]. */
static int one_prompt(rc_run *r, int copy, uint64_t seed, int i, int N, double *score, char *got, size_t cap) {
    int32_t *ids = malloc(sizeof *ids * (size_t)N);
    if (!ids) return cli_fail(1, "eval: out of memory");
    cli_recall_prompt p;
    const int room = N - (copy ? COPY_OUT : PASSKEY_OUT);
    int rc = cli_recall_build("eval --task", r->m, r->filler, r->n_filler, copy, seed, i, room, ids, &p);
    if (!rc) rc = answer(r, ids, p.n, copy ? COPY_OUT : PASSKEY_OUT, got, cap);
    memcpy(r->needle, p.needle, sizeof p.needle), memcpy(r->tail, p.tail, sizeof p.tail);
    if (rc) *score = 0.0;
    else if (!copy) {
        const char *q = got;
        while (*q && !isdigit((unsigned char)*q)) q++;
        *score = atoi(q) == p.key;
    } else {
        int hit = 0;
        const char *q = got;
        for (int k = CLI_RECALL_GIVEN; k < CLI_RECALL_RUN; k++) { /* word k of the run, word k - GIVEN of the answer */
            const char *want = cli_recall_word(p.idx[k]);
            while (*q && !isalpha((unsigned char)*q)) q++;
            const char *e = q;
            while (isalpha((unsigned char)*e)) e++;
            hit += (size_t)(e - q) == strlen(want) && !strncmp(q, want, (size_t)(e - q));
            q = e;
        }
        *score = (double)hit / (CLI_RECALL_RUN - CLI_RECALL_GIVEN);
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
