/*
 * fuzz_util.h — shared by the libFuzzer targets: put the input in an
 * in-memory file (memfd) so the loaders run their real path-based code
 * (open, fstat, mmap) on it, at /proc/self/fd/N.
 */
#ifndef MATTN_FUZZ_UTIL_H
#define MATTN_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Write data to a fresh memfd; *path receives its /proc path.  Returns the
 * fd (close it when done), or -1. */
static inline int fuzz_memfile(const uint8_t *data, size_t n, char *path, size_t path_len) {
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0) { close(fd); return -1; }
        off += (size_t)w;
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}

/* A broken invariant of the target itself: crash so libFuzzer records it. */
#define FUZZ_CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #x, __FILE__, __LINE__); abort(); } } while (0)

#endif
