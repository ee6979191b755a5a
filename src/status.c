/*
 * status.c — status strings, error messages (thread-local and per handle),
 * the log callback, the abort hook for broken invariants, aligned
 * allocation and the library version.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mattn_impl.h"

// ----------------------------------------------------------------------------
// version

int mattn_libversion_number(void) { return MATTN_VERSION_NUMBER; }
const char *mattn_libversion(void) { return MATTN_VERSION; }

// ----------------------------------------------------------------------------
// status codes and messages

const char *mattn_status_str(mattn_status s) {
    switch (s) {
    case MATTN_OK: return "ok";
    case MATTN_ERR_NOMEM: return "out of memory";
    case MATTN_ERR_IO: return "I/O error";
    case MATTN_ERR_FORMAT: return "malformed input";
    case MATTN_ERR_VERSION: return "unsupported version";
    case MATTN_ERR_INVALID_ARG: return "invalid argument";
    case MATTN_ERR_SHAPE: return "shape mismatch";
    case MATTN_ERR_NUMERIC: return "non-finite value";
    case MATTN_ERR_MISUSE: return "library misuse";
    case MATTN_ERR_NOT_FOUND: return "not found";
    case MATTN_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

static _Thread_local char g_last_error[MATTN_ERRMSG_LEN];

const char *mattn_last_error(void) { return g_last_error; }

mattn_status mattn_set_error(mattn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return st;
}

mattn_status mattn_set_error_h(char *handle_buf, mattn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    if (handle_buf) memcpy(handle_buf, g_last_error, sizeof g_last_error);
    return st;
}

// ----------------------------------------------------------------------------
// logging and aborts

static mattn_log_fn g_log_fn;
static void *g_log_user;

void mattn_set_log_callback(mattn_log_fn fn, void *user) {
    g_log_fn = fn;
    g_log_user = user;
}

void mattn_log(int level, const char *fmt, ...) {
    if (!g_log_fn) return;
    char buf[MATTN_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}

void mattn_abort(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "metaattn: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

// ----------------------------------------------------------------------------
// memory

double mattn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void *mattn_amalloc(size_t n) {
    if (n == 0) n = MATTN_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, MATTN_ALIGN, mattn_align_up(n)) != 0) return NULL;
    return p;
}

void mattn_afree(void *p) { free(p); }

void mattn_free(void *p) { free(p); }
