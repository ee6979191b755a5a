/*
 * tokenize.c — `metaattn tokenize`: the token ids and pieces of standard
 * input under a GGUF model's tokenizer, for scripts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_tokenize =
    "usage: metaattn tokenize --model FILE.gguf [--ids] [--special]\n"
    "\n"
    "Tokenizes standard input (any bytes, at most 64 MiB) with the model's\n"
    "byte-level BPE tokenizer, adding nothing (no BOS/EOS), and prints one\n"
    "token per line: its id, a tab, its bytes with \\\\, \\t, \\n, \\r and\n"
    "non-printable bytes escaped (\\xHH).\n"
    "\n"
    "  --model FILE  a GGUF model (scripts/get-model.sh smollm2)\n"
    "  --ids         print only the ids, separated by spaces, on one line\n"
    "  --special     chat mode: the text of special tokens (<|im_start|>, ...)\n"
    "                becomes their id\n"
    "  -h, --help    show this help\n";

/* All of stdin (at most 64 MiB) into *buf, its length in *n. */
static int read_stdin(char **buf, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, stdin);
        if (len < cap) break;
        if (cap >= (size_t)64 << 20) {
            free(b);
            return cli_fail(1, "tokenize: standard input is larger than 64 MiB");
        }
        char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    if (!b) return cli_fail(1, "tokenize: out of memory reading standard input");
    if (ferror(stdin)) {
        free(b);
        return cli_fail(1, "tokenize: cannot read standard input");
    }
    *buf = b, *n = len;
    return 0;
}

static void print_piece(const char *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)p[i];
        if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c); /* UTF-8 bytes of a whole or partial character as they are */
    }
}

int cmd_tokenize(int argc, char **argv) {
    const char *model_path = NULL;
    int ids_only = 0, special = 0;
    const cli_opt opts[] = {OPT_STRING("--model", &model_path), OPT_FLAG("--ids", &ids_only),
                            OPT_FLAG("--special", &special), OPT_END};
    int rc = cli_parse("tokenize", usage_tokenize, opts, argc, argv);
    if (rc) return rc == CLI_DONE ? 0 : rc;
    if (cli_dry_run) return 0; /* fuzz/fuzz_cli.c: arguments only */
    if (!model_path) return cli_fail(EXIT_USAGE, "tokenize: --model is required (see metaattn tokenize --help)");
    mattn_llama *m = NULL;
    if (mattn_llama_open(model_path, &m) != MATTN_OK) return cli_fail(1, "--model: %s", mattn_last_error());
    char *text = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    rc = read_stdin(&text, &len);
    if (!rc && mattn_llama_tokenize(m, text, len, special, NULL, 0, &n) != MATTN_OK)
        rc = cli_fail(1, "--model: %s", mattn_llama_errmsg(m));
    if (!rc && !(ids = malloc(sizeof *ids * (n ? n : 1)))) rc = cli_fail(1, "tokenize: out of memory");
    if (!rc && mattn_llama_tokenize(m, text, len, special, ids, n, &n) != MATTN_OK)
        rc = cli_fail(1, "tokenize: %s", mattn_llama_errmsg(m));
    for (size_t i = 0; !rc && i < n; i++) {
        if (ids_only) {
            printf("%s%d", i ? " " : "", ids[i]);
            continue;
        }
        const char *p;
        size_t pl;
        if (mattn_llama_token_piece(m, ids[i], special, &p, &pl) != MATTN_OK) {
            rc = cli_fail(1, "tokenize: %s", mattn_llama_errmsg(m));
            break;
        }
        printf("%d\t", ids[i]);
        print_piece(p, pl);
        putchar('\n');
    }
    if (!rc && ids_only) putchar('\n');
    if (!rc && fflush(stdout) != 0) rc = cli_fail(1, "tokenize: cannot write standard output");
    free(ids);
    free(text);
    mattn_llama_free(m);
    return rc;
}
