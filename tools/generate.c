/*
 * generate.c — `metaattn generate`: text from a saved model.  Models trained
 * with causal positions decode with the cache (one token per step, each
 * routed on its own, hard routing in eval mode by default); others re-run
 * the model over the last max_seq_len bytes for every token, as the Python
 * library's generate does.  Prints the text and a routing summary of the
 * generated tokens.
 */
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"
#include "train/train.h"
#include "metaattn.h"

static const char *usage_generate =
    "usage: metaattn generate --model FILE [--prompt TEXT] [--tokens N] [--seed N] [options]\n"
    "\n"
    "Samples text from a saved model and summarises how the generated tokens were routed.\n"
    "\n"
    "  --model FILE       model.safetensors (metaattn train or PyTorch)\n"
    "  --prompt TEXT      text to continue (default \"And God said\")\n"
    "  --tokens N         bytes to generate (default 200)\n"
    "  --temperature X    sampling temperature, 0 = greedy (default 0.8)\n"
    "  --top-k K          sample among the K most likely bytes, 0 = all (default 40)\n"
    "  --seed N           sampling seed (default 1)\n"
    "  --soft             soft routing (default: eval-mode hard routing)\n"
    "  --no-cache         re-run the model over the context for every token\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "  --json             print one JSON object: text, tokens, tokens_per_s, layers\n"
    "  -h, --help         show this help\n";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Sample from logits (V) with temperature and top-k. */
static int sample(const float *lg, int V, double temp, int top_k, mattn_rng *r) {
    int best = 0;
    for (int v = 1; v < V; v++) if (lg[v] > lg[best]) best = v;
    if (temp <= 0.0) return best;
    float kth = -INFINITY;
    if (top_k > 0 && top_k < V) { /* k-th largest by repeated selection (V is small) */
        float prev = INFINITY;
        int taken = 0;
        while (taken < top_k) {
            float mx = -INFINITY;
            int cnt = 0;
            for (int v = 0; v < V; v++) if (lg[v] < prev && lg[v] > mx) mx = lg[v];
            for (int v = 0; v < V; v++) cnt += lg[v] == mx;
            taken += cnt;
            kth = mx;
            prev = mx;
        }
    }
    double Z = 0.0;
    for (int v = 0; v < V; v++) if (lg[v] >= kth) Z += exp((lg[v] - lg[best]) / temp);
    double u = mattn_rng_u01(r) * Z, acc = 0.0;
    int pick = best;
    for (int v = 0; v < V; v++) {
        if (lg[v] < kth) continue;
        acc += exp((lg[v] - lg[best]) / temp);
        pick = v;
        if (acc >= u) break;
    }
    return pick;
}

static void json_str(const char *s, int n) {
    putchar('"');
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c); /* bytes as code points: always valid JSON */
        else putchar(c);
    }
    putchar('"');
}

int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *prompt = "And God said";
    long long n_tokens = 200, top_k = 40, seed = 1, threads = 0;
    double temp = 0.8;
    int soft = 0, json = 0, no_cache = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_generate, stdout); return 0; }
        if (!strcmp(a, "--soft")) { soft = 1; continue; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        if (!strcmp(a, "--no-cache")) { no_cache = 1; continue; }
        if (i + 1 >= argc)
            return cli_fail(EXIT_USAGE, strstr(usage_generate, a) && !strncmp(a, "--", 2) ? "generate: option '%s' needs a value"
                                                                                           : "generate: unknown option '%s' (see metaattn generate --help)", a);
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokens")) rc = cli_int(a, v, 1, 1 << 24, &n_tokens);
        else if (!strcmp(a, "--top-k")) rc = cli_int(a, v, 0, 1 << 20, &top_k);
        else if (!strcmp(a, "--seed")) rc = cli_int(a, v, 0, 1LL << 53, &seed);
        else if (!strcmp(a, "--threads")) rc = cli_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--temperature")) rc = cli_double(a, v, 0, 100, &temp);
        else return cli_fail(EXIT_USAGE, "generate: unknown option '%s' (see metaattn generate --help)", a);
        if (rc) return rc;
    }
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!model_path) return cli_fail(EXIT_USAGE, "generate: --model is required (see metaattn generate --help)");
    if (!prompt[0]) return cli_fail(EXIT_USAGE, "--prompt: must not be empty (the model needs a first byte)");
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads((int)threads);
#endif
    mattn_model *m;
    if (cli_load_model(model_path, &m)) return 1;
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int V = cfg->vocab_size, L = cfg->n_layers, K = cfg->attn.n_experts, Tmax = cfg->max_seq_len;
    if (V != 256) {
        mattn_model_free(m);
        return cli_fail(1, "--model %s: vocab_size %d, but generate speaks bytes (vocab 256)", model_path, V);
    }
    mattn_config knobs = cfg->attn;
    knobs.hard_routing = !soft;
    mattn_model_set_routing(m, &knobs);
    const int use_cache = cfg->causal_positions && !no_cache;
    const int plen = (int)strlen(prompt);
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(plen + n_tokens + 1));
    float *logits = malloc(sizeof(float) * V);
    double *wsum = calloc((size_t)L * K * 2, sizeof(double));
    char *text = malloc((size_t)n_tokens + 1);
    mattn_model_cache *cache = NULL;
    int rc = 0, n_gen = 0;
    if (!seq || !logits || !wsum || !text) { rc = cli_fail(1, "out of memory"); goto done; }
    for (int i = 0; i < plen; i++) seq[i] = (uint8_t)prompt[i];
    if (use_cache && mattn_model_cache_init(m, 1, &cache) != MATTN_OK) { rc = cli_fail(1, "%s", mattn_model_errmsg(m)); goto done; }
    mattn_rng r;
    mattn_rng_seed(&r, mattn_stream_seed((uint64_t)seed, 0, 0, MATTN_PURPOSE_SAMPLE));
    int len = plen;
    if (use_cache && plen > Tmax) { rc = cli_fail(1, "--prompt: %d bytes exceed the model's context %d", plen, Tmax); goto done; }
    double t0 = now_s();
    if (use_cache)
        for (int i = 0; i < plen - 1 && !rc; i++)
            if (mattn_model_decode(m, cache, &seq[i], logits) != MATTN_OK) rc = cli_fail(1, "%s", mattn_model_errmsg(m));
    for (int k = 0; k < n_tokens && !rc; k++) {
        if (use_cache) {
            if (mattn_model_cache_length(cache) >= Tmax) {
                if (!json) fprintf(stderr, "metaattn: stopped at the model's context of %d positions\n", Tmax);
                break;
            }
            if (mattn_model_decode(m, cache, &seq[len - 1], logits) != MATTN_OK) { rc = cli_fail(1, "%s", mattn_model_errmsg(m)); break; }
        } else {
            const int start = len > Tmax ? len - Tmax : 0, T = len - start;
            if (mattn_model_forward(m, seq + start, NULL, 1, T, NULL, NULL) != MATTN_OK) { rc = cli_fail(1, "%s", mattn_model_errmsg(m)); break; }
            memcpy(logits, mattn_model_logits(m) + (size_t)(T - 1) * V, sizeof(float) * V);
        }
        /* routing of the token just processed (the newest position) */
        for (int l = 0; l < L; l++) {
            mattn_stats s;
            mattn_model_layer_stats(m, l, &s);
            const float *w = mattn_layer_weights(mattn_model_layer(m, l)) + (size_t)(s.n_tokens - 1) * K;
            for (int e = 0; e < K; e++) { /* the newest position: the cache's only row, or the forward's last */
                wsum[((size_t)l * K + e) * 2] += w[e];
                wsum[((size_t)l * K + e) * 2 + 1] += w[e] > 0.0f;
            }
        }
        const int c = sample(logits, V, temp, (int)top_k, &r);
        seq[len++] = c;
        text[n_gen++] = (char)c;
    }
    const double dt = now_s() - t0;
    if (!rc) {
        if (json) {
            printf("{\"prompt\": ");
            json_str(prompt, plen);
            printf(", \"text\": ");
            json_str(text, n_gen);
            printf(", \"tokens\": %d, \"tokens_per_s\": %.1f, \"cache\": %s, \"routing\": \"%s\", \"layers\": [", n_gen,
                   n_gen / dt, use_cache ? "true" : "false", soft ? "soft" : "hard");
            for (int l = 0; l < L; l++) {
                printf("%s{\"weights\": [", l ? ", " : "");
                for (int e = 0; e < K; e++) printf("%s%.5f", e ? ", " : "", wsum[((size_t)l * K + e) * 2] / n_gen);
                printf("], \"executed_fraction\": [");
                for (int e = 0; e < K; e++) printf("%s%.5f", e ? ", " : "", wsum[((size_t)l * K + e) * 2 + 1] / n_gen);
                printf("]}");
            }
            printf("]}\n");
        } else {
            printf("%s%.*s\n\n", prompt, n_gen, text);
            printf("%d bytes in %.2f s (%.0f tokens/s, %s, %s routing)\n", n_gen, dt, n_gen / dt,
                   use_cache ? "decode cache" : "re-running the context", soft ? "soft" : "hard");
            printf("routing of the generated tokens (mean weight / share of tokens each expert ran on):\n");
            for (int l = 0; l < L; l++) {
                printf("  layer %d:", l);
                for (int e = 0; e < K; e++)
                    printf("  E%d %.3f / %.1f%%", e + 1, wsum[((size_t)l * K + e) * 2] / n_gen,
                           100.0 * wsum[((size_t)l * K + e) * 2 + 1] / n_gen);
                printf("\n");
            }
        }
    }
done:
    mattn_model_cache_free(cache);
    free(seq);
    free(logits);
    free(wsum);
    free(text);
    mattn_model_free(m);
    return rc;
}
