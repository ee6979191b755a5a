/*
 * plot.c — `metaattn plot`: PNG charts of a training log (log.jsonl) drawn
 * by gnuplot: loss.png (training and validation loss), routing.png (routing
 * entropy and expected / projected cost per layer) and shares.png (the
 * experts' mean routing weights per layer).  The numbers go to TSV files
 * next to the charts (loss.tsv, routing_l<L>.tsv), so the plots can be
 * redrawn by anything.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>

#include "cli.h"

static const char *usage_plot =
    "usage: metaattn plot --log FILE [--out DIR] [--every N]\n"
    "\n"
    "Turns a training log (log.jsonl from metaattn train) into PNG charts with\n"
    "gnuplot: DIR/loss.png, DIR/routing.png, DIR/shares.png, and the data as\n"
    "DIR/loss.tsv and DIR/routing_l<layer>.tsv.\n"
    "\n"
    "  --log FILE   the JSONL log\n"
    "  --out DIR    where to write (default: the log's directory)\n"
    "  --every N    plot every N-th step of the training curves (default 1)\n"
    "  -h, --help   show this help\n";

/* One JSONL record of a layer: a row of DIR/routing_l<l>.tsv. */
static void routing_row(FILE *f, long long step, int l, const cJSON *ly) {
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(ly, "weights");
#define NUM(k) (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(ly, k)) ? cJSON_GetObjectItemCaseSensitive(ly, k)->valuedouble : 0.0)
    fprintf(f, "%lld\t%d\t%.6g\t%.6g\t%.6g\t%.6g", step, l, NUM("entropy"), NUM("norm_entropy"), NUM("expected_cost"),
            NUM("projected_cost"));
#undef NUM
    for (int k = 0; k < 3; k++) {
        const cJSON *wk = cJSON_GetArrayItem(w, k);
        fprintf(f, "\t%.6g", cJSON_IsNumber(wk) ? wk->valuedouble : 0.0);
    }
    fprintf(f, "\n");
}

/* The numbers of one record: a row of loss.tsv, a row of each layer's TSV
 * (opened on first use).  The layer count, or -1 if a file cannot be made. */
static int record_rows(const char *out, const cJSON *o, long long step, FILE *fl, FILE **fr) {
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(o, "loss"), *vl = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
    const cJSON *lm = cJSON_GetObjectItemCaseSensitive(o, "lm_loss"), *ax = cJSON_GetObjectItemCaseSensitive(o, "aux_loss");
    fprintf(fl, "%lld\t%.6g\t%.6g\t%.6g\t", step, lo->valuedouble, cJSON_IsNumber(lm) ? lm->valuedouble : lo->valuedouble,
            cJSON_IsNumber(ax) ? ax->valuedouble : 0.0);
    if (cJSON_IsNumber(vl)) fprintf(fl, "%.6g\n", vl->valuedouble); else fprintf(fl, "NaN\n");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(o, "layers"), *ly;
    int l = 0;
    cJSON_ArrayForEach(ly, layers) {
        if (l >= 64) break;
        if (!fr[l]) {
            char pr[4200];
            snprintf(pr, sizeof pr, "%s/routing_l%d.tsv", out, l);
            if (!(fr[l] = fopen(pr, "wb"))) return -1;
            fprintf(fr[l], "step\tlayer\tentropy\tnorm_entropy\texpected_cost\tprojected_cost\tw1\tw2\tw3\n");
        }
        routing_row(fr[l], step, l, ly);
        l++;
    }
    return l;
}

/* The log's numbers as TSV files in out: *n records, *L layers.  0, or an
 * error exit code after printing. */
static int write_tsvs(const char *log, const char *out, long long every, int *n, int *L) {
    FILE *f = fopen(log, "rb");
    if (!f) return cli_fail(1, "--log: cannot open '%s': %s", log, strerror(errno));
    char p_loss[4200];
    snprintf(p_loss, sizeof p_loss, "%s/loss.tsv", out);
    FILE *fl = fopen(p_loss, "wb"), *fr[64] = {0};
    if (!fl) {
        fclose(f);
        return cli_fail(1, "--out: cannot write into '%s'", out);
    }
    fprintf(fl, "step\tloss\tlm_loss\taux_loss\tval_loss\n");
    char *line = NULL;
    size_t cap = 0;
    int bad = 0, lineno = 0;
    *n = *L = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        cJSON *o = cJSON_Parse(line);
        const cJSON *st = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        if (!cJSON_IsNumber(st) || !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "loss"))) {
            cJSON_Delete(o);
            bad = lineno;
            break;
        }
        const long long step = (long long)st->valuedouble;
        if (step % every == 0 || cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "val_loss"))) {
            int l = record_rows(out, o, step, fl, fr);
            if (l < 0) bad = -1;
            if (l > *L) *L = l;
        }
        cJSON_Delete(o);
        if (bad) break;
        (*n)++;
    }
    free(line);
    fclose(f);
    fclose(fl);
    for (int l = 0; l < 64; l++) if (fr[l]) fclose(fr[l]);
    if (bad < 0) return cli_fail(1, "--out: cannot write into '%s'", out);
    if (bad) return cli_fail(1, "--log %s: line %d is not a metaattn training record (JSON with step and loss)", log, bad);
    if (*n == 0) return cli_fail(1, "--log %s: no records", log);
    return 0;
}

/* The gnuplot script for L layers' TSV files in out. */
static int write_script(const char *p_gp, const char *out, int L) {
    FILE *g = fopen(p_gp, "wb");
    if (!g) return cli_fail(1, "--out: cannot write '%s'", p_gp);
    fprintf(g, "set terminal pngcairo size 1000,600 font ',10'\nset datafile separator '\\t'\nset key outside right\n"
               "set grid\nset xlabel 'step'\n");
    fprintf(g, "set output '%s/loss.png'\nset title 'loss (nats/byte)'\nset ylabel 'nats/byte'\n"
               "plot '%s/loss.tsv' using 1:3 skip 1 with lines title 'train cross-entropy', "
               "'' using 1:5 skip 1 with linespoints pt 7 ps 0.6 title 'validation', "
               "'' using 1:4 skip 1 with lines title 'aux (sum of layers)'\n",
            out, out);
    fprintf(g, "set output '%s/routing.png'\nset multiplot layout 1,2 title 'routing per layer'\n"
               "f(l) = sprintf('%s/routing_l%%d.tsv', l)\n"
               "set title 'normalised routing entropy H/ln K'\nset ylabel ''\nplot for [l=0:%d] f(l) using 1:4 skip 1 with lines title sprintf('layer %%d', l)\n"
               "set title 'cost (fraction of all-full)'\nplot for [l=0:%d] f(l) using 1:5 skip 1 with lines title sprintf('expected L%%d', l), "
               "for [l=0:%d] f(l) using 1:6 skip 1 with lines dt 2 title sprintf('projected hard L%%d', l)\n"
               "unset multiplot\n",
            out, out, L - 1, L - 1, L - 1);
    fprintf(g, "set output '%s/shares.png'\nset multiplot layout %d,1 title 'mean routing weight per expert'\nset yrange [0:1]\n", out, L);
    for (int l = 0; l < L; l++)
        fprintf(g, "set title 'layer %d'\nplot f(%d) using 1:7 skip 1 with lines title 'full', "
                   "'' using 1:8 skip 1 with lines title 'linear', '' using 1:9 skip 1 with lines title 'local'\n",
                l, l);
    fprintf(g, "unset multiplot\n");
    fclose(g);
    return 0;
}

static int run_gnuplot(const char *p_gp) {
    pid_t pid = fork();
    if (pid < 0) return cli_fail(1, "cannot start gnuplot: %s", strerror(errno));
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", p_gp, (char *)NULL);
        fprintf(stderr, "metaattn: cannot run gnuplot (%s): install it with scripts/install-deps.sh\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return cli_fail(1, "gnuplot failed on %s (exit %d)", p_gp, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

int cmd_plot(int argc, char **argv) {
    const char *log = NULL, *out_arg = NULL;
    long long every = 1;
    const cli_opt opts[] = {
        OPT_STRING("--log", &log), OPT_STRING("--out", &out_arg), OPT_INT("--every", &every, 1, 1 << 30), OPT_END};
    int rc = cli_parse("plot", usage_plot, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!log) return cli_fail(EXIT_USAGE, "plot: --log is required (see metaattn plot --help)");
    char out[4096];
    const int log_dir = !out_arg || !out_arg[0];
    snprintf(out, sizeof out, "%s", log_dir ? log : out_arg);
    if (log_dir) {
        char *slash = strrchr(out, '/');
        if (slash) *slash = 0; else snprintf(out, sizeof out, ".");
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) return cli_fail(1, "--out: cannot create '%s': %s", out, strerror(errno));
    int n = 0, L = 0;
    if ((rc = write_tsvs(log, out, every, &n, &L))) return rc;
    char p_gp[4200];
    snprintf(p_gp, sizeof p_gp, "%s/plot.gp", out);
    if ((rc = write_script(p_gp, out, L)) || (rc = run_gnuplot(p_gp))) return rc;
    printf("wrote %s/loss.png, %s/routing.png, %s/shares.png (%d records, %d layers)\n", out, out, out, n, L);
    return 0;
}
