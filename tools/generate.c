/*
 * generate.c — `metaattn generate`: text from a saved model.  Models trained
 * with causal positions decode with the cache (one token per step, each
 * routed on its own, hard routing in eval mode by default); others re-run
 * the model over the last max_seq_len bytes for every token, as the Python
 * library's generate does.  Prints the text and a routing summary of the
 * generated tokens.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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
    "  --top-p P          and among those the fewest most likely whose probability\n"
    "                     reaches P (nucleus sampling), in (0, 1]; 1 = off (default)\n"
    "  --seed N           sampling seed (default 1)\n"
    "  --soft             soft routing (default: eval-mode hard routing)\n"
    "  --no-cache         re-run the model over the context for every token\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "  --json             print one JSON object: text, tokens, tokens_per_s, layers\n"
    "  -h, --help         show this help\n";

typedef struct gen_opts {
    const char *model_path, *prompt;
    long long n_tokens, threads;
    mattn_sampler_config sc;
    int soft, json, no_cache;
} gen_opts;

/* What a run produced: the text and, per layer and expert, the summed
 * routing weight and the count of tokens it ran on. */
typedef struct gen_result {
    char *text;
    int n_gen, use_cache;
    double seconds;
    double *wsum; /* (L, K, 2) */
} gen_result;

int cli_parse_top_k(const char *flag, const char *v, void *dst) {
    long long k;
    if (cli_int(flag, v, 0, 1 << 20, &k)) return EXIT_USAGE;
    *(int *)dst = (int)k;
    return 0;
}

int cli_parse_top_p(const char *flag, const char *v, void *dst) {
    char *end;
    errno = 0;
    const double p = strtod(v, &end);
    if (errno || end == v || *end || !(p > 0.0 && p <= 1.0))
        return cli_fail(EXIT_USAGE, "%s: expected a number in (0, 1], got '%s'", flag, v);
    *(double *)dst = p;
    return 0;
}

int cli_parse_seed(const char *flag, const char *v, void *dst) {
    long long s;
    if (cli_int(flag, v, 0, 1LL << 53, &s)) return EXIT_USAGE;
    *(uint64_t *)dst = (uint64_t)s;
    return 0;
}

/* The options, checked; CLI_DONE after --help or in a dry run. */
static int gen_args(int argc, char **argv, gen_opts *o) {
    *o = (gen_opts){.prompt = "And God said", .n_tokens = 200, .sc = mattn_sampler_config_default()};
    const cli_opt opts[] = {
        OPT_STRING("--model", &o->model_path),
        OPT_STRING("--prompt", &o->prompt),
        OPT_INT("--tokens", &o->n_tokens, 1, 1 << 24),
        OPT_CUSTOM("--top-k", &o->sc.top_k, cli_parse_top_k),
        OPT_CUSTOM("--top-p", &o->sc.top_p, cli_parse_top_p),
        OPT_CUSTOM("--seed", &o->sc.seed, cli_parse_seed),
        OPT_INT("--threads", &o->threads, 1, 1024),
        OPT_DOUBLE("--temperature", &o->sc.temperature, 0, 100),
        OPT_FLAG("--soft", &o->soft),
        OPT_FLAG("--json", &o->json),
        OPT_FLAG("--no-cache", &o->no_cache),
        OPT_END};
    int rc = cli_parse("generate", usage_generate, opts, argc, argv);
    if (rc) return rc;
    if (cli_dry_run) return CLI_DONE; /* fuzz/fuzz_cli.c: arguments only */
    if (!o->model_path) return cli_fail(EXIT_USAGE, "generate: --model is required (see metaattn generate --help)");
    if (!o->prompt[0]) return cli_fail(EXIT_USAGE, "--prompt: must not be empty (the model needs a first byte)");
    return 0;
}

/* Add the routing of the token just processed (the newest position: the
 * cache's only row, or the forward's last). */
static void add_routing(mattn_model *m, double *wsum) {
    const int L = mattn_model_config(m)->n_layers, K = mattn_model_config(m)->attn.n_experts;
    for (int l = 0; l < L; l++) {
        mattn_stats s;
        mattn_model_layer_stats(m, l, &s);
        const float *w = mattn_layer_merge_weights(mattn_model_layer(m, l)) + (size_t)(s.n_tokens - 1) * K;
        for (int e = 0; e < K; e++) {
            wsum[((size_t)l * K + e) * 2] += w[e];
            wsum[((size_t)l * K + e) * 2 + 1] += w[e] > 0.0f;
        }
    }
}

/* Sample o->n_tokens bytes after the prompt into g->text. */
static int generate(mattn_model *m, const gen_opts *o, gen_result *g) {
    const int V = mattn_model_config(m)->vocab_size, Tmax = mattn_model_config(m)->max_seq_len;
    const int plen = (int)strlen(o->prompt);
    int32_t *seq = malloc(sizeof(int32_t) * (size_t)(plen + o->n_tokens + 1));
    float *logits = malloc(sizeof(float) * V);
    mattn_model_cache *cache = NULL;
    mattn_sampler *sampler = NULL;
    int rc = 0;
    if (!seq || !logits) { rc = cli_fail(1, "out of memory"); goto done; }
    for (int i = 0; i < plen; i++) seq[i] = (uint8_t)o->prompt[i];
    if (g->use_cache && mattn_model_cache_init(m, 1, &cache) != MATTN_OK) { rc = cli_fail(1, "%s", mattn_model_errmsg(m)); goto done; }
    if (mattn_sampler_init(&o->sc, &sampler) != MATTN_OK) { rc = cli_fail(1, "sampler: %s", mattn_last_error()); goto done; }
    if (g->use_cache && plen > Tmax) { rc = cli_fail(1, "--prompt: %d bytes exceed the model's context %d", plen, Tmax); goto done; }
    int len = plen;
    const double t0 = cli_now();
    for (int k = 0; k < o->n_tokens; k++) {
        if (cache && len > Tmax) {
            if (!o->json) fprintf(stderr, "metaattn: stopped at the model's context of %d positions\n", Tmax);
            break;
        }
        if ((rc = cli_next_logits(m, cache, seq, len, Tmax, logits))) break;
        add_routing(m, g->wsum);
        int32_t c;
        if (mattn_sampler_sample(sampler, logits, V, &c) != MATTN_OK) { rc = cli_fail(1, "sampler: %s", mattn_last_error()); break; }
        seq[len++] = c;
        g->text[g->n_gen++] = (char)c;
    }
    g->seconds = cli_now() - t0;
done:
    mattn_sampler_free(sampler);
    mattn_model_cache_free(cache);
    free(seq);
    free(logits);
    return rc;
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

static void print_json(const gen_opts *o, const gen_result *g, int L, int K) {
    const int n = g->n_gen;
    printf("{\"prompt\": ");
    json_str(o->prompt, (int)strlen(o->prompt));
    printf(", \"text\": ");
    json_str(g->text, n);
    printf(", \"tokens\": %d, \"tokens_per_s\": %.1f, \"cache\": %s, \"routing\": \"%s\", \"layers\": [", n,
           n / g->seconds, g->use_cache ? "true" : "false", o->soft ? "soft" : "hard");
    for (int l = 0; l < L; l++) {
        printf("%s{\"weights\": [", l ? ", " : "");
        for (int e = 0; e < K; e++) printf("%s%.5f", e ? ", " : "", g->wsum[((size_t)l * K + e) * 2] / n);
        printf("], \"executed_fraction\": [");
        for (int e = 0; e < K; e++) printf("%s%.5f", e ? ", " : "", g->wsum[((size_t)l * K + e) * 2 + 1] / n);
        printf("]}");
    }
    printf("]}\n");
}

static void print_text(const gen_opts *o, const gen_result *g, int L, int K) {
    const int n = g->n_gen;
    printf("%s%.*s\n\n", o->prompt, n, g->text);
    printf("%d bytes in %.2f s (%.0f tokens/s, %s, %s routing)\n", n, g->seconds, n / g->seconds,
           g->use_cache ? "decode cache" : "re-running the context", o->soft ? "soft" : "hard");
    printf("routing of the generated tokens (mean weight / share of tokens each expert ran on):\n");
    for (int l = 0; l < L; l++) {
        printf("  layer %d:", l);
        for (int e = 0; e < K; e++)
            printf("  E%d %.3f / %.1f%%", e + 1, g->wsum[((size_t)l * K + e) * 2] / n,
                   100.0 * g->wsum[((size_t)l * K + e) * 2 + 1] / n);
        printf("\n");
    }
}

int cmd_generate(int argc, char **argv) {
    if (cli_model_is_gguf(argc, argv)) return cmd_generate_llama(argc, argv);
    gen_opts o;
    int rc = gen_args(argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    cli_set_threads(o.threads);
    mattn_model *m;
    if (cli_load_model(o.model_path, &m)) return 1;
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int V = cfg->vocab_size, L = cfg->n_layers, K = cfg->attn.n_experts;
    if (V != 256) {
        mattn_model_free(m);
        return cli_fail(1, "--model %s: vocab_size %d, but generate speaks bytes (vocab 256)", o.model_path, V);
    }
    mattn_config knobs = cfg->attn;
    knobs.hard_routing = !o.soft;
    mattn_model_set_routing(m, &knobs);
    gen_result g = {.use_cache = cfg->position_norm && !o.no_cache,
                    .wsum = calloc((size_t)L * K * 2, sizeof(double)), .text = malloc((size_t)o.n_tokens + 1)};
    if (!g.wsum || !g.text) rc = cli_fail(1, "out of memory");
    if (!rc) rc = generate(m, &o, &g);
    if (!rc && o.json) print_json(&o, &g, L, K);
    else if (!rc) print_text(&o, &g, L, K);
    free(g.wsum);
    free(g.text);
    mattn_model_free(m);
    return rc;
}
