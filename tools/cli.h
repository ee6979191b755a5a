/*
 * cli.h — helpers shared by the CLI's subcommands: error exit, strict number
 * parsing that names the flag and the value, the exit codes.
 */
#ifndef MATTN_CLI_H
#define MATTN_CLI_H

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define EXIT_USAGE 2

/* Print "metaattn: <message>" on stderr and return code. */
static inline int __attribute__((format(printf, 2, 3))) cli_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("metaattn: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/* Parse an integer in [lo, hi]; 0 on success, else prints and returns EXIT_USAGE. */
static inline int cli_int(const char *flag, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cli_fail(EXIT_USAGE, "%s: expected an integer in [%lld, %lld], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

static inline int cli_double(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return cli_fail(EXIT_USAGE, "%s: expected a number in [%g, %g], got '%s'", flag, lo, hi, s);
    *out = v;
    return 0;
}

/* The CLI without main(): tools/metaattn.c, and the fuzz target.  With
 * cli_dry_run set, each command returns 0 after checking its arguments,
 * before touching any file. */
int cli_main(int argc, char **argv);
extern int cli_dry_run;

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_route(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_bench(int argc, char **argv);

struct mattn_lm_config;
/* The LM presets tiny | small | base of `metaattn train` (train.c). */
int cli_model_preset(const char *name, struct mattn_lm_config *c);

struct mattn_model;
/* Load a saved model (config from its metadata), eval mode; prints errors. */
int cli_load_model(const char *path, struct mattn_model **out);

#endif
