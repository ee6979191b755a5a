/*
 * replay.c — runs a libFuzzer target's LLVMFuzzerTestOneInput on files
 * (the checked-in seeds and every crash the fuzzers found, fuzz/regress/),
 * without libFuzzer: the regression tests of `make test`, with gcc.
 *   replay_TARGET FILE|DIR...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) { free(buf); fprintf(stderr, "replay: cannot read %s\n", path); return 1; }
    LLVMFuzzerTestOneInput(buf, (size_t)n);  /* a failure aborts: ctest reports it */
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int n = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) continue;  /* e.g. no regressions yet */
        if (!S_ISDIR(sb.st_mode)) { bad |= run_file(argv[i]); n++; continue; }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            bad |= run_file(p);
            n++;
        }
        if (d) closedir(d);
    }
    fprintf(stderr, "replay: %d inputs\n", n);
    return bad || n == 0;
}
