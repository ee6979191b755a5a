/*
 * main.c — the command-line tool: dispatches `metaattn <command> ...` to the
 * subcommands, one file each (layer.c, train.c, eval.c, generate.c, route.c,
 * plot.c, bench.c, tokenize.c; on GGUF models llama_cli.c,
 * llama_eval.c and surgery.c), which share cli.c.
 *
 * Exit status: 0 success, 2 bad usage, 1 any other error; one line on stderr
 * naming the problem (docs/cli.md).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_main =
    "usage: metaattn <command> [options]\n"
    "\n"
    "commands:\n"
    "  layer     run one Meta-Attention layer on a safetensors input\n"
    "  train     train a byte-level Meta-Attention language model\n"
    "  eval      score a saved model on a text, with per-layer routing and FLOPs\n"
    "            (a GGUF model: perplexity over sliding windows)\n"
    "  generate  sample text from a saved model (decode cache), with its routing,\n"
    "            or from a GGUF model, streaming\n"
    "  chat      talk with an instruction-tuned GGUF model (ChatML)\n"
    "  route     show each byte's expert and routing weights (terminal, TSV, HTML)\n"
    "  plot      draw PNG charts of a training log with gnuplot\n"
    "  bench     measure the layer, sparse routing, decoding and training\n"
    "  tokenize  token ids and pieces of stdin under a GGUF model's tokenizer\n"
    "  surgery   make a routing file for a GGUF model (full / linear / local per token)\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (or `metaattn <command> --help`)\n"
    "  --version      print the library version\n";

static const struct { const char *name; int (*run)(int argc, char **argv); } commands[] = {
    {"layer", cmd_layer}, {"train", cmd_train}, {"eval", cmd_eval}, {"generate", cmd_generate},
    {"route", cmd_route}, {"plot", cmd_plot},   {"bench", cmd_bench},
    {"tokenize", cmd_tokenize}, {"chat", cmd_chat}, {"surgery", cmd_surgery}};

int cli_main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("metaattn %s\n", mattn_libversion());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "metaattn: unknown command '%s'\n%s", cmd, usage_main);
    return EXIT_USAGE;
}

#ifndef METAATTN_NO_MAIN
/* OpenMP threads that wait for work spin only briefly before they sleep.
 * libgomp's default spins 300000 rounds at every barrier, which on a loaded
 * machine burns the time slice of a partner thread that is descheduled
 * (a decode step 5x slower beside one busy process); OMP_WAIT_POLICY=PASSIVE
 * (sleep at once) pays a futex wake per parallel region instead — a
 * SmolLM2 decode step has ~150 of them: 3.4x slower on an idle machine.
 * GOMP_SPINCOUNT=1000 keeps the idle speed (within 5 %) and most of
 * PASSIVE's gain under load (docs/performance.md, bench/under_load.py).
 * libgomp — and OpenBLAS's OpenMP build — read these variables when they
 * are loaded, before main, so the program sets the count and starts itself
 * again, once; either variable set by the user is kept. */
#define CLI_SPINCOUNT "1000"
static void short_spin(char **argv) {
#ifndef _OPENMP
    (void)argv; /* no OpenMP, no threads waiting */
    return;
#endif
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", CLI_SPINCOUNT, 0) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with libgomp's default */
}

int main(int argc, char **argv) {
    short_spin(argv);
    return cli_main(argc, argv);
}
#endif
