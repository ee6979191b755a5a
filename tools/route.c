/*
 * route.c — `metaattn route`: which expert each byte of a text is routed to,
 * per layer, with its routing weights: coloured text in the terminal, a TSV
 * table for scripts, and a self-contained HTML heatmap (--html FILE).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_route =
    "usage: metaattn route --model FILE (--text TEXT | --file FILE) [--html OUT] [--tsv] [--hard]\n"
    "                      [--context N]\n"
    "\n"
    "Routes a text through a saved model (eval mode) and shows, for every byte and\n"
    "layer, the chosen expert and the routing weights alpha.\n"
    "\n"
    "  --model FILE   model.safetensors\n"
    "  --text TEXT    the text, or\n"
    "  --file FILE    read it from a file (at most 1 MiB)\n"
    "  --hard         eval-mode hard routing: the expert that ran (default: soft,\n"
    "                 the chosen expert is the argmax of alpha)\n"
    "  --html OUT     write a self-contained HTML page: a heatmap per layer, each\n"
    "                 byte coloured by alpha (red full, green linear, blue local)\n"
    "  --tsv          print a table instead: layer, position, byte, expert, alphas\n"
    "                 (and the uncertainty U_t for the Bayesian controller)\n"
    "  --context N    route consecutive windows of N bytes (default: the model's\n"
    "                 max_seq_len; a model trained on shorter sequences has\n"
    "                 untrained position embeddings beyond them)\n"
    "  --color WHEN   auto (default: when stdout is a terminal), always, never\n"
    "  -h, --help     show this help\n";

static const char *ansi_bg[8] = {"41", "42", "44", "45", "46", "43", "47", "100"};

static int write_html(const char *path, const char *text, int n, int L, int K, const float *alpha, const int *chosen,
                      const char *model, int hard) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return cli_fail(1, "--html: cannot write '%s': %s", path, strerror(errno));
    fprintf(f, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>metaattn route</title>\n<style>\n"
               "body{font-family:sans-serif;margin:2em;max-width:70em}\n"
               ".t{font-family:monospace;white-space:pre-wrap;line-height:1.6;font-size:14px}\n"
               ".t span{border-radius:2px}\n.k span{padding:0 .5em;margin-right:1em;color:#000}\n"
               "</style></head><body>\n<h1>Routing per token</h1>\n<p>model <code>");
    for (const char *p = model; *p; p++) fprintf(f, *p == '<' ? "&lt;" : *p == '&' ? "&amp;" : "%c", *p);
    fprintf(f, "</code>, %d bytes, %s routing. Each byte is coloured by its routing weights: red = full, "
               "green = linear, blue = local (mixed colours: mixed weights); hover for the values.</p>\n"
               "<p class=\"k\"><span style=\"background:#f66\">full</span><span style=\"background:#6d6\">linear</span>"
               "<span style=\"background:#69f\">local</span></p>\n",
            n, hard ? "hard" : "soft");
    for (int l = 0; l < L; l++) {
        int cnt[8] = {0};
        for (int i = 0; i < n; i++) cnt[chosen[(size_t)l * n + i]]++;
        fprintf(f, "<h2>Layer %d</h2>\n<p>chosen:", l);
        for (int k = 0; k < K; k++) fprintf(f, " E%d %.1f%%", k + 1, 100.0 * cnt[k] / n);
        fprintf(f, "</p>\n<div class=\"t\">");
        for (int i = 0; i < n; i++) {
            const float *a = alpha + ((size_t)l * n + i) * K;
            const int r = 255 - (int)(150 * (K > 1 ? a[1] + (K > 2 ? a[2] : 0) : 0));
            const int g = 255 - (int)(150 * (a[0] + (K > 2 ? a[2] : 0)));
            const int b = 255 - (int)(150 * (a[0] + (K > 1 ? a[1] : 0)));
            fprintf(f, "<span style=\"background:rgb(%d,%d,%d)\" title=\"pos %d: E%d;", r, g, b, i,
                    chosen[(size_t)l * n + i] + 1);
            for (int k = 0; k < K; k++) fprintf(f, " %.3f", a[k]);
            fprintf(f, "\">");
            const unsigned char c = (unsigned char)text[i];
            if (c == '<') fputs("&lt;", f);
            else if (c == '>') fputs("&gt;", f);
            else if (c == '&') fputs("&amp;", f);
            else if (c == '"') fputs("&quot;", f);
            else if (c == '\n') fputs("\n", f);
            else if (c < 0x20 || c == 0x7f) fprintf(f, "&#x%x;", 0x2400 + (c == 0x7f ? 0x21 : c));
            else fputc(c, f);
            fprintf(f, "</span>");
        }
        fprintf(f, "</div>\n");
    }
    fprintf(f, "</body></html>\n");
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0) {
        unlink(tmp);
        return cli_fail(1, "--html: write to '%s' failed: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cli_fail(1, "--html: cannot create '%s': %s", path, strerror(e));
    }
    return 0;
}

typedef struct route_opts {
    const char *model_path, *text, *file, *html, *color;
    int hard, tsv;
    long long context;
} route_opts;

/* Every layer's routing of the n bytes of a text. */
typedef struct routing {
    int n, L, K, bayes;
    float *alpha; /* (L, n, K) */
    int *chosen;  /* (L, n): argmax of alpha (soft) or the expert that ran (hard) */
    float *unc;   /* (L, n): U_t (Bayesian), else 0 */
    mattn_route_counts **counts; /* (L): routes against bytes and positions */
} routing;

/* The options, checked; CLI_DONE after --help or in a dry run. */
static int route_args(int argc, char **argv, route_opts *o) {
    *o = (route_opts){.color = "auto"};
    const cli_opt opts[] = {
        OPT_STRING("--model", &o->model_path), OPT_STRING("--text", &o->text),
        OPT_STRING("--file", &o->file),        OPT_STRING("--html", &o->html),
        OPT_STRING("--color", &o->color),      OPT_INT("--context", &o->context, 1, 1 << 20),
        OPT_FLAG("--hard", &o->hard),          OPT_FLAG("--tsv", &o->tsv),
        OPT_END};
    int rc = cli_parse("route", usage_route, opts, argc, argv);
    if (rc) return rc;
    if (cli_dry_run) return CLI_DONE; /* fuzz/fuzz_cli.c: arguments only */
    if (!o->model_path) return cli_fail(EXIT_USAGE, "route: --model is required (see metaattn route --help)");
    if (!o->text == !o->file) return cli_fail(EXIT_USAGE, "route: give exactly one of --text and --file");
    static const char *const whens[] = {"auto", "always", "never"};
    return cli_choice("--color", o->color, whens, 3) < 0 ? EXIT_USAGE : 0;
}

/* --file (at most 1 MiB) into *buf, or --text; its length in *n. */
static int read_text(const route_opts *o, char **buf, int *n) {
    *buf = NULL;
    if (!o->file) {
        *n = (int)strlen(o->text);
        return 0;
    }
    FILE *f = fopen(o->file, "rb");
    if (!f) return cli_fail(1, "--file: cannot open '%s': %s", o->file, strerror(errno));
    char *b = malloc((1 << 20) + 1);
    *n = b ? (int)fread(b, 1, 1 << 20, f) : 0;
    int more = b && fgetc(f) != EOF;
    fclose(f);
    if (!b) return cli_fail(1, "out of memory");
    if (more) { free(b); return cli_fail(1, "--file %s: larger than 1 MiB", o->file); }
    *buf = b;
    return 0;
}

/* Route consecutive windows of Tmax bytes (--context, else max_seq_len). */
static int route_text(mattn_model *m, const char *text, int Tmax, int hard, routing *r) {
    const int n = r->n, L = r->L, K = r->K;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)Tmax);
    if (!idx) return cli_fail(1, "out of memory");
    int rc = 0;
    for (int s0 = 0; s0 < n && !rc; s0 += Tmax) {
        const int T = n - s0 < Tmax ? n - s0 : Tmax;
        for (int t = 0; t < T; t++) idx[t] = (unsigned char)text[s0 + t];
        if (mattn_model_forward(m, idx, NULL, 1, T, NULL, NULL) != MATTN_OK) { rc = cli_fail(1, "%s", mattn_model_errmsg(m)); break; }
        for (int l = 0; l < L; l++) {
            mattn_route_counts_add(r->counts[l], mattn_model_layer(m, l), idx);
            const float *al = mattn_layer_alpha(mattn_model_layer(m, l)), *w = mattn_layer_merge_weights(mattn_model_layer(m, l));
            const float *u = r->bayes ? mattn_layer_uncertainty(mattn_model_layer(m, l)) : NULL;
            for (int t = 0; t < T; t++) {
                int best = 0;
                const float *src = hard ? w : al;
                for (int k = 1; k < K; k++) if (src[(size_t)t * K + k] > src[(size_t)t * K + best]) best = k;
                r->chosen[(size_t)l * n + s0 + t] = best;
                memcpy(r->alpha + ((size_t)l * n + s0 + t) * K, al + (size_t)t * K, sizeof(float) * K);
                r->unc[(size_t)l * n + s0 + t] = u ? u[t] : 0.0f;
            }
        }
    }
    free(idx);
    return rc;
}

static void print_tsv(const char *text, const routing *r) {
    const int n = r->n, K = r->K;
    printf("layer\tpos\tbyte\texpert");
    for (int k = 0; k < K; k++) printf("\talpha%d", k + 1);
    printf(r->bayes ? "\tuncertainty\n" : "\n");
    for (int l = 0; l < r->L; l++)
        for (int i = 0; i < n; i++) {
            printf("%d\t%d\t%d\tE%d", l, i, (unsigned char)text[i], r->chosen[(size_t)l * n + i] + 1);
            for (int k = 0; k < K; k++) printf("\t%.4f", r->alpha[((size_t)l * n + i) * K + k]);
            if (r->bayes) printf("\t%.4f", r->unc[(size_t)l * n + i]);
            printf("\n");
        }
}

static void print_terminal(const char *text, const routing *r, int use_color) {
    const int n = r->n, K = r->K;
    for (int l = 0; l < r->L; l++) {
        int cnt[8] = {0};
        double mean[8] = {0};
        for (int i = 0; i < n; i++) {
            cnt[r->chosen[(size_t)l * n + i]]++;
            for (int k = 0; k < K; k++) mean[k] += r->alpha[((size_t)l * n + i) * K + k] / n;
        }
        printf("layer %d:", l);
        for (int k = 0; k < K; k++) printf("  E%d chosen %.1f%% (mean alpha %.3f)", k + 1, 100.0 * cnt[k] / n, mean[k]);
        printf("  MI(route; byte) %.3f, MI(route; position) %.3f nats\n", mattn_route_counts_mi_token(r->counts[l]),
               mattn_route_counts_mi_position(r->counts[l]));
        if (use_color) {
            for (int i = 0; i < n; i++) {
                const unsigned char c = (unsigned char)text[i];
                if (c == '\n') { printf("\033[0m\n"); continue; }
                printf("\033[30;%sm%c", ansi_bg[r->chosen[(size_t)l * n + i] % 8], c < 0x20 ? ' ' : c);
            }
            printf("\033[0m\n");
        } else {
            /* no colour: the expert number under each byte */
            for (int i = 0; i < n; i++) putchar(text[i] == '\n' ? ' ' : text[i]);
            printf("\n");
            for (int i = 0; i < n; i++) putchar('1' + r->chosen[(size_t)l * n + i]);
            printf("\n");
        }
    }
    if (use_color) printf("colours: \033[30;41m E1 full \033[0m \033[30;42m E2 linear \033[0m \033[30;44m E3 local \033[0m\n");
}

/* Route the text through the model and show it as asked. */
static int route_model(mattn_model *m, const route_opts *o, const char *text, int n) {
    const mattn_lm_config *cfg = mattn_model_config(m);
    if (o->context > cfg->max_seq_len)
        return cli_fail(EXIT_USAGE, "--context %lld exceeds the model's max_seq_len %d", o->context, cfg->max_seq_len);
    mattn_config knobs = cfg->attn;
    knobs.hard_routing = o->hard;
    mattn_model_set_routing(m, &knobs);
    routing r = {.n = n, .L = cfg->n_layers, .K = cfg->attn.n_experts,
                 .bayes = cfg->attn.controller == MATTN_CONTROLLER_BAYESIAN};
    r.alpha = malloc(sizeof(float) * (size_t)r.L * n * r.K);
    r.chosen = malloc(sizeof(int) * (size_t)r.L * n);
    r.unc = malloc(sizeof(float) * (size_t)r.L * n);
    int rc = !r.alpha || !r.chosen || !r.unc ? cli_fail(1, "out of memory") : 0;
    if (!rc && !(r.counts = cli_route_counts(cfg))) rc = 1;
    if (!rc) rc = route_text(m, text, o->context ? (int)o->context : cfg->max_seq_len, o->hard, &r);
    if (!rc && o->html) rc = write_html(o->html, text, n, r.L, r.K, r.alpha, r.chosen, o->model_path, o->hard);
    if (!rc && o->tsv) {
        print_tsv(text, &r);
    } else if (!rc) {
        print_terminal(text, &r, !strcmp(o->color, "always") || (!strcmp(o->color, "auto") && isatty(STDOUT_FILENO)));
        if (o->html) printf("wrote %s\n", o->html);
    }
    cli_route_counts_free(r.counts, r.L);
    free(r.alpha);
    free(r.chosen);
    free(r.unc);
    return rc;
}

int cmd_route(int argc, char **argv) {
    route_opts o;
    int rc = route_args(argc, argv, &o);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    char *buf;
    int n = 0;
    if ((rc = read_text(&o, &buf, &n))) return rc;
    const char *text = buf ? buf : o.text;
    if (n == 0) { free(buf); return cli_fail(EXIT_USAGE, "route: the text is empty"); }
    mattn_model *m;
    if (cli_load_model(o.model_path, &m)) { free(buf); return 1; }
    rc = route_model(m, &o, text, n);
    free(buf);
    mattn_model_free(m);
    return rc;
}
