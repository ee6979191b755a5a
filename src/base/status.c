/*
 * status.c — status strings, error messages (thread-local and per handle),
 * the log callback, the abort hook for broken invariants, aligned
 * allocation and the library version.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/base.h"

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

/* Formatted into a local buffer first: callers pass mattn_last_error() (or
 * a handle's message) as an argument when they re-raise an error, and
 * vsnprintf into its own source is undefined (glibc yields ""). */
static void set_error_v(char *handle_buf, const char *fmt, va_list ap) {
    char buf[MATTN_ERRMSG_LEN];
    vsnprintf(buf, sizeof buf, fmt, ap);
    memcpy(g_last_error, buf, sizeof buf);
    if (handle_buf) memcpy(handle_buf, buf, sizeof buf);
}

mattn_status mattn_set_error(mattn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error_v(NULL, fmt, ap);
    va_end(ap);
    return st;
}

mattn_status mattn_set_error_h(char *handle_buf, mattn_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error_v(handle_buf, fmt, ap);
    va_end(ap);
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

int mattn_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void mattn_set_max_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

double mattn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every allocation of the library goes through these wrappers, so a test can
 * make the n-th one fail (mattn_fault_alloc) and count what is still live
 * after an error path (mattn_alloc_live).  Counters are atomics: layers may
 * be used from several threads. */
static atomic_long g_alloc_count, g_alloc_live, g_fail_at;
static atomic_int g_fail_persist;

void mattn_fault_alloc(long n, int persistent) {
    atomic_store(&g_alloc_count, 0);
    atomic_store(&g_fail_persist, persistent);
    atomic_store(&g_fail_at, n);
}

long mattn_alloc_live(void) { return atomic_load(&g_alloc_live); }
long mattn_alloc_count(void) { return atomic_load(&g_alloc_count); }

static _Thread_local int g_alloc_failed;  /* an allocation failed since mattn_alloc_mark() */

void mattn_alloc_mark(void) { g_alloc_failed = 0; }
int mattn_alloc_failed(void) { return g_alloc_failed; }

static int alloc_fails(void) {
    const long at = atomic_load_explicit(&g_fail_at, memory_order_relaxed);
    if (at <= 0) return 0;
    const long n = atomic_fetch_add(&g_alloc_count, 1) + 1;
    const int fails = n == at || (n > at && atomic_load(&g_fail_persist));
    if (fails) g_alloc_failed = 1;   /* sticky: a later allocation that succeeds does not clear it */
    return fails;
}

static void *counted(void *p) {
    if (p) atomic_fetch_add_explicit(&g_alloc_live, 1, memory_order_relaxed);
    else g_alloc_failed = 1;
    return p;
}

/* Tests only: fill every new malloc/amalloc block with this byte (-1: off).
 * 0xff makes every float read before it is written a NaN, which then shows
 * in the result instead of hiding behind a multiplication by zero. */
static atomic_int g_fill = -1;

void mattn_alloc_fill(int byte) { atomic_store(&g_fill, byte); }

static void *filled(void *p, size_t n) {
    const int b = atomic_load_explicit(&g_fill, memory_order_relaxed);
    if (p && b >= 0) memset(p, b, n);
    return p;
}

void *mattn_malloc(size_t n) { return alloc_fails() ? NULL : counted(filled(malloc(n ? n : 1), n)); }
void *mattn_calloc(size_t n, size_t size) { return alloc_fails() ? NULL : counted(calloc(n ? n : 1, size ? size : 1)); }

void *mattn_realloc(void *p, size_t n) {
    if (!p) return mattn_malloc(n);
    void *q = alloc_fails() ? NULL : realloc(p, n ? n : 1);
    if (!q) g_alloc_failed = 1;
    return q;
}

char *mattn_strdup(const char *s) {
    const size_t n = strlen(s) + 1;
    char *d = mattn_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void *mattn_amalloc(size_t n) {
    if (n == 0) n = MATTN_ALIGN;
    void *p = NULL;
    if (alloc_fails() || posix_memalign(&p, MATTN_ALIGN, mattn_align_up(n)) != 0) p = NULL;
    return counted(filled(p, mattn_align_up(n)));
}

void mattn_free(void *p) {
    if (!p) return;
    atomic_fetch_sub_explicit(&g_alloc_live, 1, memory_order_relaxed);
    free(p);
}

void mattn_afree(void *p) { mattn_free(p); }
