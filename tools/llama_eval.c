/*
 * llama_eval.c — `metaattn eval` on a GGUF model: the perplexity of a text
 * over sliding windows (the way Hugging Face's perplexity guide strides a
 * fixed-length model over a long text).
 *
 * The file is tokenized whole (no BOS).  Window w covers tokens
 * [w S, w S + C) (C = --context, S = --stride); it scores only the tokens
 * no earlier window scored, each from the logits of the position before it
 * in that window, so every token but the first is scored once, with at
 * least C - S tokens of context (all it has at the start; with S = C each
 * window's first token has none and is not scored).  A window runs
 * its unscored prefix without logits and the scored rest in chunks of 64
 * with them, so memory is 64 rows of logits whatever C.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_eval_llama =
    "usage: metaattn eval --model FILE.gguf --data FILE [--context N] [--stride S] [options]\n"
    "\n"
    "Perplexity of a GGUF model on a text: the file is tokenized whole and scored\n"
    "over sliding windows of N tokens, S apart, each token once (with at least\n"
    "N - S tokens of context past the start).  Reports nats per token (and\n"
    "perplexity) and nats per byte of the scored tokens.\n"
    "\n"
    "  --model FILE        a GGUF model\n"
    "  --data FILE         the text (any bytes, at most 1 GiB)\n"
    "  --context N         tokens per window (default 512, at most the model's)\n"
    "  --stride S          tokens between windows, in [1, N] (default N / 2)\n"
    "  --tokens N          score only the first N tokens of the text (default all)\n"
    "  --activations A     q8 (default) or f32\n"
    "  --kv T              f16 (default) or f32 cache\n"
    "  --routing FILE      route each block's tokens by this routing file (metaattn\n"
    "                      surgery); the report adds the share of each expert\n"
    "  --threads N         OpenMP threads (default: all cores)\n"
    "  --json              print one JSON object\n"
    "\n"
    "Long-range retrieval instead (greedy answers; --data is the filler text):\n"
    "  --task T            passkey (a 5-digit number at a depth, asked for at the\n"
    "                      end) or copy (16 words at a depth, later their first 4:\n"
    "                      the share of the other 12 continued in place)\n"
    "  --prompts N         prompts of --context tokens each (default 10), depths\n"
    "                      10 %, 30 %, ... 90 % in turn\n"
    "  --seed N            the prompts' draws (default 0)\n"
    "  --routes FILE       the last prompt's routes as TSV (position, expert per block)\n"
    "  --verbose           each prompt's score and answer on standard error\n"
    "  -h, --help          show this help\n";

#define EVAL_CHUNK 64

typedef struct ev_opts {
    const char *model_path, *data_path, *activations, *kv, *routing;
    long long context, stride, max_tokens, threads;
    int json;
    cli_recall_opts rc;
} ev_opts;

typedef struct ev_sum {
    double nats, seconds, attn_secs;
    long long scored, bytes, windows;
    int64_t *counts, *win; /* (n_layers, MATTN_ROUTE_EXPERTS) over every window, of one */
    int n_counts;
} ev_sum;

/* -log softmax(lg)[target], in double. */
static double nll_of(const float *lg, int V, int32_t target) {
    double mx = lg[0];
    for (int i = 1; i < V; i++) mx = lg[i] > mx ? lg[i] : mx;
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)lg[i] - mx);
    return mx + log(s) - (double)lg[target];
}

/* Score targets [t0, t1) of ids in the window [b, e): prefix [b, t0 - 1)
 * without logits, then positions [t0 - 1, t1 - 1) with them, 64 at a time. */
static int score_window(mattn_llama *m, mattn_llama_cache *c, const int32_t *ids, long long b, long long t0,
                        long long t1, float *lg, int V, ev_sum *sum) {
    mattn_llama_cache_reset(c);
    if (t0 - 1 > b && mattn_llama_forward(m, c, ids + b, (int)(t0 - 1 - b), NULL) != MATTN_OK)
        return cli_fail(1, "eval: %s", mattn_llama_errmsg(m));
    for (long long p = t0 - 1; p < t1 - 1; p += EVAL_CHUNK) {
        const int n = t1 - 1 - p < EVAL_CHUNK ? (int)(t1 - 1 - p) : EVAL_CHUNK;
        if (mattn_llama_forward(m, c, ids + p, n, lg) != MATTN_OK) return cli_fail(1, "eval: %s", mattn_llama_errmsg(m));
        for (int i = 0; i < n; i++) {
            const int32_t tgt = ids[p + i + 1];
            const char *piece;
            size_t pl;
            sum->nats += nll_of(lg + (size_t)i * V, V, tgt);
            if (mattn_llama_token_piece(m, tgt, 0, &piece, &pl) != MATTN_OK)
                return cli_fail(1, "eval: %s", mattn_llama_errmsg(m));
            sum->bytes += (long long)pl;
        }
        sum->scored += n;
    }
    double secs = 0.0;
    mattn_llama_cache_routing(c, sum->win, NULL, &secs, NULL);
    sum->attn_secs += secs;
    for (int i = 0; i < sum->n_counts; i++) sum->counts[i] += sum->win[i];
    sum->windows++;
    return 0;
}

static int eval_run(mattn_llama *m, const ev_opts *o, const int32_t *ids, long long n, ev_sum *sum) {
    mattn_llama_info info;
    mattn_llama_get_info(m, &info);
    mattn_llama_cache *c = NULL;
    float *lg = malloc(sizeof(float) * (size_t)EVAL_CHUNK * info.vocab_size);
    sum->n_counts = info.n_layers * MATTN_ROUTE_EXPERTS;
    sum->counts = calloc((size_t)sum->n_counts, sizeof *sum->counts);
    sum->win = calloc((size_t)sum->n_counts, sizeof *sum->win);
    if (!lg || !sum->counts || !sum->win) {
        free(lg);
        return cli_fail(1, "eval: out of memory");
    }
    int rc = 0;
    if (mattn_llama_cache_init_kv(m, (int)o->context, cli_llama_kv(o->kv), &c) != MATTN_OK)
        rc = cli_fail(1, "eval: %s", mattn_llama_errmsg(m));
    const double t0 = cli_now();
    for (long long b = 0, done = 1; !rc && done < n; b += o->stride) {
        const long long e = b + o->context < n ? b + o->context : n;
        const long long t0 = done > b ? done : b + 1; /* --stride = --context: a window's first token has no context */
        if (e > t0) rc = score_window(m, c, ids, b, t0, e, lg, info.vocab_size, sum);
        done = e;
    }
    sum->seconds = cli_now() - t0;
    mattn_llama_cache_free(c);
    free(lg);
    return rc;
}

int cmd_eval_llama(int argc, char **argv) {
    ev_opts o = {.context = 512};
    const cli_opt opts[] = {OPT_STRING("--model", &o.model_path), OPT_STRING("--data", &o.data_path),
                            OPT_STRING("--activations", &o.activations), OPT_STRING("--kv", &o.kv),
                            OPT_STRING("--routing", &o.routing), OPT_INT("--context", &o.context, 2, 1 << 20),
                            OPT_INT("--stride", &o.stride, 1, 1 << 20), OPT_INT("--tokens", &o.max_tokens, 2, 1LL << 40),
                            OPT_INT("--threads", &o.threads, 1, 1024), OPT_FLAG("--json", &o.json),
                            OPT_STRING("--task", &o.rc.task), OPT_INT("--prompts", &o.rc.prompts, 1, 1000000),
                            OPT_CUSTOM("--seed", &o.rc.seed, cli_parse_seed), OPT_STRING("--routes", &o.rc.routes),
                            OPT_FLAG("--verbose", &o.rc.verbose), OPT_END};
    int rc = cli_parse("eval", usage_eval_llama, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if ((rc = cli_llama_modes(o.activations, o.kv))) return rc;
    if (!o.data_path) return cli_fail(EXIT_USAGE, "eval: --data is required (see metaattn eval --help)");
    if (o.rc.task && strcmp(o.rc.task, "passkey") && strcmp(o.rc.task, "copy"))
        return cli_fail(EXIT_USAGE, "--task: expected passkey or copy, got '%s'", o.rc.task);
    if (!o.stride) o.stride = o.context / 2;
    if (o.stride > o.context) return cli_fail(EXIT_USAGE, "--stride %lld exceeds --context %lld", o.stride, o.context);
    cli_set_threads(o.threads);
    mattn_llama *m = NULL;
    if (mattn_llama_open(o.model_path, &m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    mattn_llama_info info;
    mattn_llama_get_info(m, &info);
    if (o.activations && !strcmp(o.activations, "f32")) mattn_llama_set_activations(m, MATTN_LLAMA_ACT_F32);
    size_t n = 0;
    int32_t *ids = NULL;
    rc = cli_llama_routing(m, o.routing);
    if (!rc && o.context > info.context_length)
        rc = cli_fail(EXIT_USAGE, "--context %lld exceeds the model's context %d", o.context, info.context_length);
    if (!rc) rc = cli_llama_read_tokens(m, o.data_path, "--data", &ids, &n);
    if (!rc && n < 2) rc = cli_fail(1, "--data '%s': %zu token%s, at least 2 are needed", o.data_path, n, n == 1 ? "" : "s");
    if (!rc && o.max_tokens && (long long)n > o.max_tokens) n = (size_t)o.max_tokens;
    if (!rc && o.rc.task) {
        o.rc.context = o.context, o.rc.kv = cli_llama_kv(o.kv), o.rc.json = o.json;
        if (!o.rc.prompts) o.rc.prompts = 10;
        rc = cli_llama_recall(m, &o.rc, ids, n);
        free(ids);
        mattn_llama_free(m);
        return rc;
    }
    ev_sum s = {0};
    if (!rc) rc = eval_run(m, &o, ids, (long long)n, &s);
    if (!rc) {
        const double npt = s.nats / (double)s.scored, npb = s.nats / (double)s.bytes;
        double share[MATTN_ROUTE_EXPERTS];
        cli_llama_shares(m, s.counts, share);
        if (o.json) {
            printf("{\"model\": \"%s\", \"data\": \"%s\", \"tokens\": %zu, \"scored_tokens\": %lld, \"bytes\": %lld, "
                   "\"context\": %lld, \"stride\": %lld, \"windows\": %lld, \"activations\": \"%s\", \"kv\": \"%s\", "
                   "\"nats_per_token\": %.6f, \"perplexity\": %.4f, \"nats_per_byte\": %.6f, \"bits_per_byte\": %.6f, "
                   "\"seconds\": %.3f, \"tokens_per_s\": %.1f, \"attention_s\": %.3f",
                   o.model_path, o.data_path, n, s.scored, s.bytes, o.context, o.stride, s.windows,
                   o.activations ? o.activations : "q8", o.kv ? o.kv : "f16", npt, exp(npt), npb, npb / log(2.0),
                   s.seconds, s.scored / s.seconds, s.attn_secs);
            if (o.routing) {
                printf(", \"routing\": \"%s\", \"share_full\": %.4f, \"share_linear\": %.4f, \"share_local\": %.4f, "
                       "\"blocks\": [", o.routing, share[0], share[1], share[2]);
                for (int l = 0; l < info.n_layers; l++) { /* each block's shares */
                    const int64_t *c = s.counts + (size_t)l * MATTN_ROUTE_EXPERTS;
                    const double n = (double)(c[0] + c[1] + c[2]) + 1e-300;
                    printf("%s[%.4f, %.4f, %.4f]", l ? ", " : "", c[0] / n, c[1] / n, c[2] / n);
                }
                printf("]");
            }
            printf("}\n");
        } else {
            printf("%s on %s: %zu tokens, %lld scored (%lld bytes) in %lld windows of %lld, stride %lld\n"
                   "  %.4f nats/token (perplexity %.3f)   %.4f nats/byte (%.4f bits/byte)\n"
                   "  %.1f s, %.0f tokens/s scored (%s activations, %s cache), %.2f s in attention\n",
                   o.model_path, o.data_path, n, s.scored, s.bytes, s.windows, o.context, o.stride, npt, exp(npt),
                   npb, npb / log(2.0), s.seconds, s.scored / s.seconds, o.activations ? o.activations : "q8",
                   o.kv ? o.kv : "f16", s.attn_secs);
            if (o.routing)
                printf("  routed by %s: full %.1f %%, linear %.1f %%, local %.1f %% of the blocks' tokens\n",
                       o.routing, 100 * share[0], 100 * share[1], 100 * share[2]);
        }
    }
    free(s.counts);
    free(s.win);
    free(ids);
    mattn_llama_free(m);
    return rc;
}
