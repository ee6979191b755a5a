/*
 * cli.c — what the subcommands share (cli.h): messages, numbers, the option
 * parser, threads, loading a model, next-token logits.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli.h"

const char *cli_prog = "metaattn";
int cli_dry_run = 0;

int cli_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cli_fail(EXIT_USAGE, "%s: expected an integer in [%lld, %lld], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

int cli_double(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return cli_fail(EXIT_USAGE, "%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

int cli_choice(const char *flag, const char *s, const char *const *names, int n) {
    char list[256] = "";
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(s, names[i])) return i;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
        if (len >= sizeof list) len = sizeof list - 1;
    }
    cli_fail(EXIT_USAGE, "%s: expected %s, got '%s'", flag, list, s);
    return -1;
}

// ----------------------------------------------------------------------------
// the option parser

static const cli_opt *find_opt(const cli_opt *opts, const char *name) {
    for (const cli_opt *o = opts; o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

static int set_opt(const cli_opt *o, const char *v) {
    switch (o->kind) {
    case CLI_FLAG:
        if (o->parse) return o->parse(o->name, NULL, o->dst);
        *(int *)o->dst = 1;
        return 0;
    case CLI_INT: return cli_int(o->name, v, (long long)o->lo, (long long)o->hi, o->dst);
    case CLI_DOUBLE: return cli_double(o->name, v, o->lo, o->hi, o->dst);
    case CLI_STRING: *(const char **)o->dst = v; return 0;
    case CLI_CUSTOM: return o->parse(o->name, v, o->dst);
    }
    return EXIT_USAGE;
}

int cli_parse(const char *cmd, const char *usage, const cli_opt *opts, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return CLI_DONE;
        }
        const cli_opt *o = find_opt(opts, a);
        const char *c = cmd ? cmd : "", *sep = cmd ? ": " : "", *sp = cmd ? " " : "";
        if (!o) return cli_fail(EXIT_USAGE, "%s%sunknown option '%s' (see %s%s%s --help)", c, sep, a, cli_prog, sp, c);
        if (o->kind != CLI_FLAG && i + 1 >= argc) return cli_fail(EXIT_USAGE, "%s%soption '%s' needs a value", c, sep, a);
        int rc = set_opt(o, o->kind == CLI_FLAG ? NULL : argv[++i]);
        if (rc) return rc;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// steps several commands take

int cli_set_threads(long long n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads((int)n);
    return omp_get_max_threads();
#else
    (void)n;
    return 1;
#endif
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int cli_load_model(const char *path, mattn_model **out) {
    mattn_lm_config cfg;
    *out = NULL;
    if (mattn_model_file_config(path, &cfg) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    if (mattn_model_init(&cfg, out) != MATTN_OK) return cli_fail(1, "--model %s: %s", path, mattn_last_error());
    if (mattn_model_load(*out, path) != MATTN_OK) {
        mattn_model_free(*out);
        *out = NULL;
        return cli_fail(1, "--model: %s", mattn_last_error());
    }
    mattn_model_set_training(*out, 0);
    mattn_model_set_grad(*out, 0); /* inference only */
    return 0;
}

int cli_next_logits(mattn_model *m, mattn_model_cache *cache, const int32_t *seq, int len, int window, float *logits) {
    const int V = mattn_model_config(m)->vocab_size;
    if (cache) {
        for (int i = mattn_model_cache_length(cache); i < len; i++)
            if (mattn_model_decode(m, cache, &seq[i], logits) != MATTN_OK) return cli_fail(1, "%s", mattn_model_errmsg(m));
        return 0;
    }
    const int start = len > window ? len - window : 0, T = len - start;
    if (mattn_model_forward(m, seq + start, NULL, 1, T, NULL, NULL) != MATTN_OK)
        return cli_fail(1, "%s", mattn_model_errmsg(m));
    memcpy(logits, mattn_model_logits(m) + (size_t)(T - 1) * V, sizeof(float) * V);
    return 0;
}

mattn_route_counts **cli_route_counts(const mattn_lm_config *cfg) {
    mattn_route_counts **c = calloc((size_t)cfg->n_layers, sizeof *c);
    if (!c) {
        cli_fail(1, "out of memory");
        return NULL;
    }
    for (int l = 0; l < cfg->n_layers; l++) /* 8 position buckets of a window */
        if (mattn_route_counts_init(cfg->attn.n_experts, cfg->vocab_size, 8, &c[l]) != MATTN_OK) {
            cli_fail(1, "route counts: %s", mattn_last_error());
            cli_route_counts_free(c, cfg->n_layers);
            return NULL;
        }
    return c;
}

void cli_route_counts_free(mattn_route_counts **c, int n_layers) {
    for (int l = 0; c && l < n_layers; l++) mattn_route_counts_free(c[l]);
    free(c);
}

static const char *const builtin_experts[] = {"full", "linear", "local"};

const char *cli_expert_label(const mattn_config *a, int k) {
    return a->experts[0][0] ? a->experts[k] : k >= 0 && k < 3 ? builtin_experts[k] : "?";
}

int cli_expert_index(const mattn_config *a, const char *name) {
    for (int k = 0; k < a->n_experts; k++)
        if (!strcmp(cli_expert_label(a, k), name)) return k;
    return -1;
}

int cli_force_routes(mattn_model *m, const char *flag, const char *list) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    const int L = cfg->n_layers, T = cfg->max_seq_len;
    int route[64], n = 0;
    for (const char *p = list;; p++) { /* one name for every layer, or one per layer */
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        char name[MATTN_EXPERT_NAME_LEN];
        if (len == 0 || len >= sizeof name)
            return cli_fail(EXIT_USAGE, "%s %s: expected expert names separated by commas", flag, list);
        memcpy(name, p, len);
        name[len] = 0;
        if (n == L || n == 64)
            return cli_fail(EXIT_USAGE, "%s %s: more names than the model's %d layers (give one, or one per layer)",
                            flag, list, L);
        if ((route[n++] = cli_expert_index(&cfg->attn, name)) < 0)
            return cli_fail(1, "%s %s: the model has no expert '%s'", flag, list, name);
        if (!e) break;
        p = e;
    }
    if (n != 1 && n != L)
        return cli_fail(EXIT_USAGE, "%s %s: %d names for a model of %d layers (give one, or one per layer)", flag,
                        list, n, L);
    uint8_t *r = malloc((size_t)T);
    if (!r) return cli_fail(1, "out of memory");
    int rc = 0;
    for (int l = 0; l < L && !rc; l++) {
        memset(r, route[n == 1 ? 0 : l], (size_t)T);
        if (mattn_layer_force_routes(mattn_model_layer(m, l), r, T) != MATTN_OK)
            rc = cli_fail(1, "%s: %s", flag, mattn_last_error());
    }
    free(r);
    return rc;
}
