/*
 * fuzz_cli.c — the CLI's argument parsing: the input, split at NUL bytes,
 * becomes argv of `metaattn ...`; cli_dry_run makes every command return
 * after checking its arguments, before touching a file.  Whatever the
 * arguments, the exit code is 0 (help), 1 or 2 (a message on stderr).
 */
#include <string.h>

#include "../tools/cli.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    cli_dry_run = 1;
    if (!freopen("/dev/null", "w", stdout)) return 0;  /* --help texts */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    char *argv[66];
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    int argc = 0;
    argv[argc++] = "metaattn";
    for (char *p = buf; p <= buf + size && argc < 65; p += strlen(p) + 1) argv[argc++] = p;
    argv[argc] = NULL;
    int rc = cli_main(argc, argv);
    FUZZ_CHECK(rc == 0 || rc == 1 || rc == 2);
    free(buf);
    return 0;
}
