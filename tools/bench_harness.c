/*
 * bench_harness.c — the measuring harness (bench_harness.h).
 *
 * Each case runs once to warm up, then repeats until --min-time has passed
 * (at least 3 times); the best repetition is reported.  Ratios are measured
 * alternately (kernel, sgemm, kernel, ... and mixed, all-full, mixed, ...)
 * so that a slow spell of a shared machine hits both sides.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_harness.h"
#include "cli.h"

double bench_best_time(const bench *b, bench_fn fn, void *ctx) {
    if (fn(ctx)) return -1.0;
    double best = INFINITY, start = cli_now();
    for (int i = 0; i < 3 || cli_now() - start < b->min_time; i++) {
        double t0 = cli_now();
        if (fn(ctx)) return -1.0;
        double dt = cli_now() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

int bench_best_time2(const bench *b, bench_fn fa, void *ca, bench_fn fb, void *cb, double *ta, double *tb) {
    if (fa(ca) || fb(cb)) return 1;
    *ta = *tb = INFINITY;
    double start = cli_now();
    for (int i = 0; i < 3 || cli_now() - start < 2.0 * b->min_time; i++) {
        double t0 = cli_now();
        if (fa(ca)) return 1;
        double t1 = cli_now();
        if (fb(cb)) return 1;
        double t2 = cli_now();
        *ta = t1 - t0 < *ta ? t1 - t0 : *ta;
        *tb = t2 - t1 < *tb ? t2 - t1 : *tb;
    }
    return 0;
}

double bench_timed(bench *b, bench_fn fn, void *ctx) {
    if (!b->base_fn) return bench_best_time(b, fn, ctx);
    double tg, t;
    if (bench_best_time2(b, b->base_fn, b->base_ctx, fn, ctx, &tg, &t)) return -1.0;
    b->sgemm = b->base_flops / tg * 1e-9;
    return t;
}

void bench_report(bench *b, const char *group, const char *name, double sec, double flops, const char *xname,
                  double xval) {
    const double gf = flops > 0 ? flops / sec * 1e-9 : 0.0;
    fprintf(b->tab, "  %-44s %10.3f ms", name, sec * 1e3);
    if (gf > 0) fprintf(b->tab, " %8.1f GFLOP/s", gf);
    if (gf > 0 && b->sgemm > 0) fprintf(b->tab, " %6.1f%% sgemm", 100.0 * gf / b->sgemm);
    if (xname) fprintf(b->tab, "  %s %.4g", xname, xval);
    fputc('\n', b->tab);
    if (b->js) {
        fprintf(b->js, "%s\n    {\"group\": \"%s\", \"name\": \"%s\", \"seconds\": %.6g, \"flops\": %.6g, \"gflops\": %.6g",
                b->n_js++ ? "," : "", group, name, sec, flops, gf);
        if (b->sgemm > 0 && gf > 0) fprintf(b->js, ", \"pct_sgemm\": %.4g", 100.0 * gf / b->sgemm);
        if (xname) fprintf(b->js, ", \"%s\": %.6g", xname, xval);
        fputc('}', b->js);
    }
}

uint64_t bench_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

float *bench_floats(size_t n) { return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64); }

float *bench_randn(size_t n, uint64_t seed, double std) {
    float *x = bench_floats(n);
    if (!x) return NULL;
    const double half_width = std * sqrt(3.0); /* uniform on [-a, a] has variance a^2 / 3 */
    for (size_t i = 0; i < n; i++) x[i] = (float)(half_width * ((double)(bench_rand(&seed) >> 11) * 0x1p-52 - 1.0));
    return x;
}

// ----------------------------------------------------------------------------
// the layer cases

mattn_config bench_layer_cfg(int share, int hard) {
    mattn_config c = mattn_config_default();
    c.d_model = 512, c.n_heads = 8, c.window_size = 64, c.causal = 1, c.dropout = 0.0;
    c.share_qkv = share, c.hard_routing = hard;
    return c;
}

int bench_layer_setup(bench_layer *x, int T, int share, int hard, uint64_t seed) {
    mattn_config c = bench_layer_cfg(share, hard);
    *x = (bench_layer){.T = T};
    if (mattn_layer_init(&c, NULL, &x->l) != MATTN_OK) return cli_fail(1, "bench: %s", mattn_last_error());
    mattn_layer_set_training(x->l, 0);
    mattn_layer_set_grad(x->l, 0);
    x->x = bench_randn((size_t)T * 512, seed, 1.0);
    x->out = bench_floats((size_t)T * 512);
    if (!x->x || !x->out) return cli_fail(1, "bench: out of memory for T=%d", T);
    return 0;
}

int bench_layer_run(void *p) {
    bench_layer *c = p;
    if (c->routes) mattn_layer_force_routes(c->l, c->routes, c->T);
    if (mattn_layer_forward(c->l, c->x, 1, c->T, NULL, c->out, NULL, &c->s) != MATTN_OK)
        return cli_fail(1, "bench: layer forward: %s", mattn_layer_errmsg(c->l));
    return 0;
}

void bench_layer_teardown(bench_layer *x) {
    free(x->x), free(x->out), mattn_layer_free(x->l);
}

int bench_layer_soft(bench *b) {
    const int T = b->quick ? 256 : 1024;
    bench_layer x;
    if (bench_layer_setup(&x, T, 0, 0, 5)) return 1;
    fprintf(b->tab, "layer, soft routing, eval (T=%d, D=512, H=8, w=64, per-expert projections)\n", T);
    double t = bench_timed(b, bench_layer_run, &x);
    int rc = t < 0;
    if (!rc) bench_report(b, "layer", "soft layer forward", t, x.s.flops_total, NULL, 0);
    bench_layer_teardown(&x);
    return rc;
}

// ----------------------------------------------------------------------------
// the driver

static double cpu_mhz(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    double mhz = 0.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "cpu MHz", 7) && strchr(line, ':')) { mhz = atof(strchr(line, ':') + 1); break; }
    if (f) fclose(f);
    return mhz;
}

static int on_quick(const char *flag, const char *v, void *dst) {
    (void)flag, (void)v;
    bench *b = dst;
    b->quick = 1;
    b->min_time = 0.2;
    return 0;
}

/* --only: which groups; the default set when only is NULL. */
static int parse_groups(const bench_program *p, const char *only, int *want) {
    char list[256] = "", names[256] = "";
    size_t n = 0;
    for (int g = 0; g < p->n_groups; g++) {
        want[g] = !only && p->groups[g].by_default;
        n += (size_t)snprintf(names + n, n < sizeof names ? sizeof names - n : 0, "%s%s", g ? ", " : "", p->groups[g].name);
    }
    if (!only) return 0;
    snprintf(list, sizeof list, "%s", only);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int g = 0; g < p->n_groups; g++)
            if (!strcmp(tok, p->groups[g].name)) want[g] = found = 1;
        if (!found)
            return cli_fail(EXIT_USAGE, "--only: unknown group '%s' (%s%s%s)", tok, names, p->groups_note ? "; " : "",
                            p->groups_note ? p->groups_note : "");
    }
    return 0;
}

/* The table's header and the JSON's opening. */
static void header(const bench_program *p, const bench *b, int nthreads) {
    const double mhz = cpu_mhz();
    mattn_build_info bi;
    mattn_build_info_get(&bi);
    fprintf(b->tab, "%s: %d threads, %.0f MHz (fp32 peak %.0f GFLOP/s at 32 FLOP/cycle/core), %d-byte vectors\n",
            p->title, nthreads, mhz, 32.0 * nthreads * mhz * 1e-3, bi.vector_bytes);
    if (b->js)
        fprintf(b->js, "{\"threads\": %d, \"cpu_mhz\": %.1f, \"vector_bytes\": %d, \"quick\": %d, \"results\": [", nthreads,
                mhz, bi.vector_bytes, b->quick);
}

int bench_main(const bench_program *p, int argc, char **argv) {
    const char *only = NULL, *json = NULL;
    bench b = {.min_time = 1.0, .tab = stdout};
    long long threads = 0;
    const cli_opt opts[] = {
        OPT_STRING("--only", &only),
        OPT_STRING("--json", &json),
        OPT_DOUBLE("--min-time", &b.min_time, 0.0, 3600.0),
        OPT_INT("--threads", &threads, 1, 1024),
        OPT_FLAG_FN("--quick", &b, on_quick),
        OPT_END};
    int want[16], rc = cli_parse(p->cmd, p->usage, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if ((rc = parse_groups(p, only, want))) return rc;
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    const int nthreads = cli_set_threads(threads);
    if (json) {
        if (!strcmp(json, "-")) b.js = stdout, b.tab = stderr;
        else if (!(b.js = fopen(json, "w"))) return cli_fail(1, "--json: cannot write '%s'", json);
    }
    header(p, &b, nthreads);
    if (p->setup) rc = p->setup(&b);
    for (int g = 0; g < p->n_groups && !rc; g++)
        if (want[g]) rc = p->groups[g].run(&b);
    if (b.js) {
        if (b.base_fn) fprintf(b.js, "\n  ], \"sgemm_gflops\": %.6g}\n", b.sgemm);
        else fprintf(b.js, "\n  ]}\n");
        if (b.js != stdout) fclose(b.js);
    }
    if (p->teardown) p->teardown(&b);
    return rc;
}
