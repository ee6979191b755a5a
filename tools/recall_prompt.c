/*
 * recall_prompt.c — the prompts of the long-range retrieval tasks, built
 * from a filler text's tokens, for `metaattn eval --task passkey|copy`
 * (llama_recall.c scores a model's greedy answers) and for `metaattn
 * surgery --recall` (surgery_train.c distils routers on them, the right
 * answer appended):
 *
 *   passkey  an intro, filler, "The pass key is NNNNN. Remember it. NNNNN is
 *            the pass key." at a depth, filler, "What is the pass key? The
 *            pass key is"; the answer " NNNNN.";
 *   copy     filler, a run of 16 words drawn from a fixed list at a depth,
 *            filler, the run's first 4 words; the answer the other 12.
 *
 * Prompt i takes its filler at an offset, its number or words and its depth
 * ((i % 5 + 0.5) / 5 of the filler: 10 %, 30 %, ... 90 %) from SplitMix64
 * seeded (seed, i), so that two models see the same prompts.
 */
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

const char *cli_recall_word(int k) { return k >= 0 && k < N_WORDS ? WORDS[k] : ""; }

/* Append the tokens of text to ids (n so far, room for cap). */
static int add_text(const char *flag, mattn_llama *m, const char *text, int32_t *ids, int *n, int cap) {
    size_t k;
    if (mattn_llama_tokenize(m, text, strlen(text), 0, NULL, 0, &k) != MATTN_OK)
        return cli_fail(1, "%s: %s", flag, mattn_llama_errmsg(m));
    if (*n + (int)k > cap)
        return cli_fail(1, "%s: the prompt's fixed text does not fit in %d tokens (--context less the answer's)",
                        flag, cap);
    mattn_llama_tokenize(m, text, strlen(text), 0, ids + *n, k, &k);
    *n += (int)k;
    return 0;
}

/* head, filler, needle at the depth of prompt i, filler, tail: N tokens. */
static int assemble(const char *flag, mattn_llama *m, const int32_t *filler, size_t n_filler, uint64_t *rng, int i,
                    const char *head, const char *needle, const char *tail, int32_t *ids, int N, cli_recall_prompt *p) {
    int32_t *fixed = N > 0 ? malloc(sizeof *fixed * (size_t)N * 3) : NULL;
    if (N <= 0)
        return cli_fail(1, "%s: a prompt of %d tokens (--context less the answer's) leaves no filler", flag, N);
    if (!fixed) return cli_fail(1, "%s: out of memory", flag);
    int nh = 0, nn = 0, nt = 0, rc = 0;
    int32_t *h = fixed, *nd = fixed + N, *tl = fixed + 2 * N;
    if ((head[0] && add_text(flag, m, head, h, &nh, N)) || add_text(flag, m, needle, nd, &nn, N) ||
        add_text(flag, m, tail, tl, &nt, N))
        rc = 1;
    const int nf = N - nh - nn - nt;
    if (!rc && (nf < 10 || (size_t)nf > n_filler))
        rc = cli_fail(1, "%s: a prompt of %d tokens (--context less the answer's) leaves %d filler tokens (the "
                      "filler text has %zu)", flag, N, nf, n_filler);
    if (!rc) {
        const size_t off = (size_t)(bench_rand(rng) % (uint64_t)(n_filler - (size_t)nf + 1));
        const int at = (int)(nf * ((i % 5) + 0.5) / 5.0);
        int n = 0;
        memcpy(ids + n, h, sizeof *ids * (size_t)nh), n += nh;
        memcpy(ids + n, filler + off, sizeof *ids * (size_t)at), n += at;
        memcpy(ids + n, nd, sizeof *ids * (size_t)nn), n += nn;
        memcpy(ids + n, filler + off + at, sizeof *ids * (size_t)(nf - at)), n += nf - at;
        p->needle[0] = nh + at, p->needle[1] = nh + at + nn;
        memcpy(ids + n, tl, sizeof *ids * (size_t)nt), n += nt;
        p->tail[0] = n - nt, p->tail[1] = n;
        p->n = n;
    }
    free(fixed);
    return rc;
}

int cli_recall_build(const char *flag, mattn_llama *m, const int32_t *filler, size_t n_filler, int copy,
                     uint64_t seed, int i, int N, int32_t *ids, cli_recall_prompt *p) {
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xD1B54A32D192ED03ULL + 1;
    memset(p, 0, sizeof *p);
    p->copy = copy;
    char needle[512], tail[256];
    size_t at = 0;
    if (!copy) {
        p->key = 10000 + (int)(bench_rand(&rng) % 90000);
        snprintf(needle, sizeof needle, "\nThe pass key is %d. Remember it. %d is the pass key.\n", p->key, p->key);
        snprintf(p->answer, sizeof p->answer, " %d.", p->key);
        return assemble(flag, m, filler, n_filler, &rng, i, "There is a pass key hidden inside a lot of irrelevant text. "
                        "Find it and memorize it. I will quiz you about the pass key.\n", needle,
                        "\nWhat is the pass key? The pass key is", ids, N, p);
    }
    for (int k = 0; k < CLI_RECALL_RUN; k++) { /* distinct words */
        int w, dup;
        do {
            w = (int)(bench_rand(&rng) % N_WORDS);
            dup = 0;
            for (int j = 0; j < k; j++) dup |= p->idx[j] == w;
        } while (dup);
        p->idx[k] = w;
    }
    at += (size_t)snprintf(needle + at, sizeof needle - at, "\n");
    for (int k = 0; k < CLI_RECALL_RUN; k++)
        at += (size_t)snprintf(needle + at, sizeof needle - at, "%s ", WORDS[p->idx[k]]);
    snprintf(needle + at - 1, sizeof needle - at + 1, "\n");
    at = 0;
    at += (size_t)snprintf(tail + at, sizeof tail - at, "\n");
    for (int k = 0; k < CLI_RECALL_GIVEN; k++)
        at += (size_t)snprintf(tail + at, sizeof tail - at, "%s%s", k ? " " : "", WORDS[p->idx[k]]);
    at = 0;
    for (int k = CLI_RECALL_GIVEN; k < CLI_RECALL_RUN; k++)
        at += (size_t)snprintf(p->answer + at, sizeof p->answer - at, " %s", WORDS[p->idx[k]]);
    return assemble(flag, m, filler, n_filler, &rng, i, "", needle, tail, ids, N, p);
}
