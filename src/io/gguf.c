/*
 * gguf.c — GGUF reader: mapping, header, tensor infos and their checks,
 * the tensor accessors and the ggml type table.  The metadata is
 * gguf_meta.c, the reference dequantisation gguf_dequant.c.  See gguf.h
 * for the format and the guarantees.
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/gguf_impl.h"
#include "base/base.h"

/* Tensor data is handed out as pointers into the little-endian file. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader needs a little-endian host");

// ----------------------------------------------------------------------------
// ggml types: every name ggml defines (for messages), sizes of the supported

static const struct { const char *name; int64_t block; size_t bytes; } TYPES[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},   [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 0, 0},      [7] = {"Q5_1", 0, 0},      [8] = {"Q8_0", 32, 34},   [9] = {"Q8_1", 0, 0},
    [10] = {"Q2_K", 0, 0},     [11] = {"Q3_K", 0, 0},     [12] = {"Q4_K", 0, 0},    [13] = {"Q5_K", 0, 0},
    [14] = {"Q6_K", 0, 0},     [15] = {"Q8_K", 0, 0},     [16] = {"IQ2_XXS", 0, 0}, [17] = {"IQ2_XS", 0, 0},
    [18] = {"IQ3_XXS", 0, 0},  [19] = {"IQ1_S", 0, 0},    [20] = {"IQ4_NL", 0, 0},  [21] = {"IQ3_S", 0, 0},
    [22] = {"IQ2_S", 0, 0},    [23] = {"IQ4_XS", 0, 0},   [24] = {"I8", 0, 0},      [25] = {"I16", 0, 0},
    [26] = {"I32", 0, 0},      [27] = {"I64", 0, 0},      [28] = {"F64", 0, 0},     [29] = {"IQ1_M", 0, 0},
    [30] = {"BF16", 1, 2},     [34] = {"TQ1_0", 0, 0},    [35] = {"TQ2_0", 0, 0},   [39] = {"MXFP4", 0, 0},
    [40] = {"NVFP4", 0, 0},    [41] = {"Q1_0", 0, 0},
};
#define N_TYPES ((uint32_t)(sizeof TYPES / sizeof TYPES[0]))

const char *mattn_gguf_type_name(uint32_t type) {
    return type < N_TYPES && TYPES[type].name ? TYPES[type].name : "?";
}

int mattn_gguf_type_supported(uint32_t type) { return type < N_TYPES && TYPES[type].block > 0; }

int64_t mattn_gguf_block_size(uint32_t type) { return mattn_gguf_type_supported(type) ? TYPES[type].block : 0; }

size_t mattn_gguf_block_bytes(uint32_t type) { return mattn_gguf_type_supported(type) ? TYPES[type].bytes : 0; }

size_t mattn_gguf_nbytes(uint32_t type, int64_t n) {
    if (!mattn_gguf_type_supported(type) || n < 0) return 0;
    return (size_t)(n / TYPES[type].block) * TYPES[type].bytes;
}

// ----------------------------------------------------------------------------
// the cursor (gguf_impl.h)

mattn_status gguf_fail(const gguf_cursor *c, mattn_status st, const char *fmt, ...) {
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: ", c->path);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return st;
}

/* The bytes of "what" are not all there: say so, with the offset. */
static mattn_status truncated(const gguf_cursor *c, size_t need, const char *what) {
    return gguf_fail(c, MATTN_ERR_FORMAT,
                     "file truncated: %s at byte %zu needs %zu bytes, %zu left (file is %zu bytes)", what, c->pos,
                     need, gguf_left(c), c->len);
}

mattn_status gguf_rd32(gguf_cursor *c, uint32_t *v, const char *what) {
    if (gguf_left(c) < 4) return truncated(c, 4, what);
    *v = gguf_ld32(c->p + c->pos);
    c->pos += 4;
    return MATTN_OK;
}

mattn_status gguf_rd64(gguf_cursor *c, uint64_t *v, const char *what) {
    if (gguf_left(c) < 8) return truncated(c, 8, what);
    *v = gguf_ld64(c->p + c->pos);
    c->pos += 8;
    return MATTN_OK;
}

mattn_status gguf_rdstr(gguf_cursor *c, mattn_gguf_str *s, const char *what) {
    const size_t at = c->pos;
    uint64_t n = 0;
    mattn_status st = gguf_rd64(c, &n, what);
    if (st != MATTN_OK) return st;
    if (n > gguf_left(c)) {   /* a hostile length, or the file is short */
        st = gguf_fail(c, MATTN_ERR_FORMAT, "%s at byte %zu: string length %llu exceeds the %zu bytes left", what, at,
                       (unsigned long long)n, gguf_left(c));
        c->pos = at;
        return st;
    }
    s->ptr = (const char *)c->p + c->pos;
    s->len = (size_t)n;
    c->pos += (size_t)n;
    return MATTN_OK;
}

int gguf_str_cmp(mattn_gguf_str a, mattn_gguf_str b) {
    int r = memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len);
    return r ? r : (a.len > b.len) - (a.len < b.len);
}

int mattn_gguf_str_eq(mattn_gguf_str s, const char *c) {
    return c && strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0;
}

/* A name in a message: at most 200 bytes of it. */
#define NAME_ARG(s) (int)((s).len < 200 ? (s).len : 200), (s).ptr

// ----------------------------------------------------------------------------
// header and tensor infos

/* Magic, version (2 or 3, little-endian) and the two counts. */
static mattn_status read_header(mattn_gguf_file *f, gguf_cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    const unsigned char *m = c->p;
    if (memcmp(m, "GGUF", 4) != 0) {
        char shown[5];
        for (int i = 0; i < 4; i++) shown[i] = isprint(m[i]) ? (char)m[i] : '?';
        shown[4] = 0;
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "not a GGUF file: magic '%s' (bytes %02x %02x %02x %02x), expected 'GGUF'", shown, m[0], m[1],
                         m[2], m[3]);
    }
    uint32_t v = gguf_ld32(m + 4);
    c->pos = 8;
    /* A big-endian file reads here as version << 24: the low half is 0. */
    if (v != 0 && (v & 0xFFFF) == 0)
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "byte-swapped version field (0x%08x: version %u written big-endian): only little-endian GGUF "
                         "files are supported", v, (unsigned)__builtin_bswap32(v));
    if (v == 1)
        return gguf_fail(c, MATTN_ERR_FORMAT, "GGUF version 1 is not supported (32-bit counts; versions 2 and 3 are)");
    if (v != 2 && v != 3)
        return gguf_fail(c, MATTN_ERR_FORMAT, "GGUF version %u is not supported (versions 2 and 3 are)", v);
    f->version = v;
    mattn_status st = gguf_rd64(c, n_tensors, "the tensor count");
    if (st == MATTN_OK) st = gguf_rd64(c, n_kv, "the metadata count");
    return st;
}

/* One tensor info: name, n_dims, dims, type, offset; the shape's element
 * count and byte size without overflow, the type supported and the row a
 * whole number of blocks, the offset aligned.  The data range is checked
 * once the data section's start is known (check_data). */
static mattn_status read_tensor_info(mattn_gguf_file *f, gguf_cursor *c, int64_t i, mattn_gguf_tensor *t) {
    char what[64];
    snprintf(what, sizeof what, "the name of tensor %lld", (long long)i);
    mattn_status st = gguf_rdstr(c, &t->name, what);
    uint32_t nd = 0, type = 0;
    snprintf(what, sizeof what, "tensor %lld's info", (long long)i);
    if (st == MATTN_OK) st = gguf_rd32(c, &nd, what);
    if (st != MATTN_OK) return st;
    if (nd > MATTN_GGUF_MAX_DIMS)
        return gguf_fail(c, MATTN_ERR_FORMAT, "tensor '%.*s': %u dimensions (GGUF allows at most %d)",
                         NAME_ARG(t->name), nd, MATTN_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    int64_t n = 1;
    for (int d = 0; d < MATTN_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < (int)nd && (st = gguf_rd64(c, &ne, what)) != MATTN_OK) return st;
        if (ne > (uint64_t)INT64_MAX)
            return gguf_fail(c, MATTN_ERR_FORMAT, "tensor '%.*s': ne[%d] = %llu is out of range", NAME_ARG(t->name), d,
                             (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        if (ne && n > INT64_MAX / (int64_t)ne)
            return gguf_fail(c, MATTN_ERR_FORMAT, "tensor '%.*s': the element count of its shape overflows",
                             NAME_ARG(t->name));
        n *= (int64_t)ne;
    }
    t->n_elements = n;
    if ((st = gguf_rd32(c, &type, what)) != MATTN_OK || (st = gguf_rd64(c, &t->offset, what)) != MATTN_OK) return st;
    if (!mattn_gguf_type_supported(type))
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "tensor '%.*s': ggml type %u (%s) is not supported (F32, F16, Q4_0, Q4_1, Q8_0 and BF16 are)",
                         NAME_ARG(t->name), type, mattn_gguf_type_name(type));
    t->type = (mattn_ggml_type)type;
    const int64_t bs = TYPES[type].block;
    if (t->ne[0] % bs)
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "tensor '%.*s': row length ne[0] = %lld is not a multiple of %s's block size %lld",
                         NAME_ARG(t->name), (long long)t->ne[0], TYPES[type].name, (long long)bs);
    /* bytes = blocks * block bytes; no tensor is larger than the file */
    if ((uint64_t)(n / bs) > c->len / TYPES[type].bytes)
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "tensor '%.*s': %lld elements of %s are more bytes than the whole file (%zu)",
                         NAME_ARG(t->name), (long long)n, TYPES[type].name, c->len);
    t->nbytes = (size_t)(n / bs) * TYPES[type].bytes;
    if (t->offset % f->alignment)
        return gguf_fail(c, MATTN_ERR_FORMAT, "tensor '%.*s': offset %llu is not a multiple of the alignment %zu",
                         NAME_ARG(t->name), (unsigned long long)t->offset, f->alignment);
    return MATTN_OK;
}

static mattn_status read_tensor_infos(mattn_gguf_file *f, gguf_cursor *c, uint64_t n) {
    /* each info takes at least 24 bytes (empty name, no dims): a count that
     * cannot fit is refused before anything is allocated for it */
    if (n > gguf_left(c) / 24)
        return gguf_fail(c, MATTN_ERR_FORMAT, "tensor count %llu cannot fit in the %zu bytes left after the metadata",
                         (unsigned long long)n, gguf_left(c));
    f->t = mattn_calloc((size_t)n + 1, sizeof *f->t);
    if (!f->t) return gguf_fail(c, MATTN_ERR_NOMEM, "out of memory for %llu tensor infos", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        mattn_status st = read_tensor_info(f, c, (int64_t)i, &f->t[i]);
        if (st != MATTN_OK) return st;
        f->n_tensors++;
    }
    return MATTN_OK;
}

typedef struct { uint64_t begin, end; const mattn_gguf_tensor *t; } span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static int tensor_cmp(const void *a, const void *b) {
    return gguf_str_cmp((*(const mattn_gguf_tensor *const *)a)->name, (*(const mattn_gguf_tensor *const *)b)->name);
}

/* The data section starts at the first aligned offset after the infos;
 * every tensor's bytes lie inside the file and no two tensors overlap (zero-
 * size tensors overlap nothing); names are unique. */
static mattn_status check_data(mattn_gguf_file *f, gguf_cursor *c) {
    const size_t a = f->alignment, start = (c->pos + a - 1) / a * a;   /* pos <= len, a <= 2^31: no overflow */
    if (start > c->len && f->n_tensors > 0)
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "file truncated: the data section would start at byte %zu, the file has %zu", start, c->len);
    f->data_offset = start;
    const size_t data_len = start <= c->len ? c->len - start : 0;
    const size_t n = (size_t)f->n_tensors;
    span *sp = mattn_calloc(n + 1, sizeof *sp);
    f->t_sorted = mattn_calloc(n + 1, sizeof *f->t_sorted);
    mattn_status st = MATTN_OK;
    if (!sp || !f->t_sorted) { st = gguf_fail(c, MATTN_ERR_NOMEM, "out of memory"); goto done; }
    for (size_t i = 0; i < n; i++) {
        mattn_gguf_tensor *t = &f->t[i];
        if (t->offset > data_len || t->nbytes > data_len - t->offset) {
            const uint64_t end = t->offset > UINT64_MAX - t->nbytes ? UINT64_MAX : t->offset + t->nbytes;
            st = gguf_fail(c, MATTN_ERR_FORMAT,
                           "tensor '%.*s': data [%llu, %llu) exceeds the file (%zu bytes; data section at byte %zu, "
                           "%zu bytes)", NAME_ARG(t->name), (unsigned long long)t->offset, (unsigned long long)end,
                           c->len, start, data_len);
            goto done;
        }
        t->data = f->map + start + t->offset;
        sp[i] = (span){t->offset, t->offset + t->nbytes, t};
        f->t_sorted[i] = t;
    }
    qsort(sp, n, sizeof *sp, span_cmp);
    const span *last = NULL;   /* the span reaching furthest so far */
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (last && sp[i].begin < last->end) {
            st = gguf_fail(c, MATTN_ERR_FORMAT, "tensors '%.*s' [%llu, %llu) and '%.*s' [%llu, %llu) overlap",
                           NAME_ARG(last->t->name), (unsigned long long)last->begin, (unsigned long long)last->end,
                           NAME_ARG(sp[i].t->name), (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end);
            goto done;
        }
        if (!last || sp[i].end > last->end) last = &sp[i];
    }
    qsort(f->t_sorted, n, sizeof *f->t_sorted, tensor_cmp);
    for (size_t i = 1; i < n; i++)
        if (gguf_str_cmp(f->t_sorted[i - 1]->name, f->t_sorted[i]->name) == 0) {
            st = gguf_fail(c, MATTN_ERR_FORMAT, "duplicate tensor name '%.*s'", NAME_ARG(f->t_sorted[i]->name));
            goto done;
        }
done:
    mattn_free(sp);
    return st;
}

// ----------------------------------------------------------------------------
// open, close

void mattn_gguf_close(mattn_gguf_file *f) {
    if (!f) return;
    gguf_free_meta(f);
    mattn_free(f->t);
    mattn_free(f->t_sorted);
    if (f->mapped) munmap((void *)f->map, f->len);
    mattn_free(f->path);
    mattn_free(f);
}

/* The file, mapped read-only; *len its size. */
static mattn_status map_file(const gguf_cursor *c, const unsigned char **map, size_t *len) {
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gguf_fail(c, MATTN_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return gguf_fail(c, MATTN_ERR_IO, "not a regular file");
    }
    *len = (size_t)sb.st_size;
    if (*len < 24) {   /* an empty file cannot be mapped; the header alone is 24 bytes */
        close(fd);
        return MATTN_OK;
    }
    void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return gguf_fail(c, MATTN_ERR_IO, "cannot mmap: %s", strerror(e));
    *map = m;
    return MATTN_OK;
}

/* Open path (map it) or the buffer data of len bytes, then check it all. */
static mattn_status open_impl(const char *path, const void *data, size_t len, mattn_gguf_file **out, char *err,
                              size_t errlen) {
    gguf_cursor c = {.path = "mattn_gguf_open", .err = err, .errlen = errlen};
    if (!out) return gguf_fail(&c, MATTN_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!path || (!data && len)) return gguf_fail(&c, MATTN_ERR_INVALID_ARG, "path or data is NULL");
    c.path = path;
    mattn_gguf_file *f = mattn_calloc(1, sizeof *f);
    if (!f || !(f->path = mattn_strdup(path))) {
        mattn_free(f);
        return gguf_fail(&c, MATTN_ERR_NOMEM, "out of memory");
    }
    mattn_status st = MATTN_OK;
    if (data) f->map = data, f->len = len;
    else if ((st = map_file(&c, &f->map, &f->len)) == MATTN_OK) f->mapped = f->map != NULL;
    uint64_t n_tensors = 0, n_kv = 0;
    c.p = f->map;
    c.len = f->len;
    f->alignment = 32;
    if (st == MATTN_OK && f->len < 24)
        st = gguf_fail(&c, MATTN_ERR_FORMAT, "%zu bytes, too short for a GGUF file (the header alone is 24)", f->len);
    if (st == MATTN_OK) st = read_header(f, &c, &n_tensors, &n_kv);
    if (st == MATTN_OK) st = gguf_read_meta(f, &c, n_kv);        /* sets f->alignment */
    if (st == MATTN_OK) st = read_tensor_infos(f, &c, n_tensors);
    if (st == MATTN_OK) st = check_data(f, &c);
    if (st != MATTN_OK) {
        mattn_gguf_close(f);
        return st;
    }
    *out = f;
    return MATTN_OK;
}

mattn_status mattn_gguf_open(const char *path, mattn_gguf_file **out, char *err, size_t errlen) {
    return open_impl(path, NULL, 0, out, err, errlen);
}

mattn_status mattn_gguf_open_memory(const void *data, size_t len, const char *name, mattn_gguf_file **out, char *err,
                                    size_t errlen) {
    static const unsigned char empty[1];
    return open_impl(name, data ? data : (len ? NULL : empty), len, out, err, errlen);
}

// ----------------------------------------------------------------------------
// accessors

const char *mattn_gguf_path(const mattn_gguf_file *f) { return f ? f->path : NULL; }
uint32_t mattn_gguf_version(const mattn_gguf_file *f) { return f ? f->version : 0; }
size_t mattn_gguf_alignment(const mattn_gguf_file *f) { return f ? f->alignment : 0; }
size_t mattn_gguf_data_offset(const mattn_gguf_file *f) { return f ? f->data_offset : 0; }
size_t mattn_gguf_file_size(const mattn_gguf_file *f) { return f ? f->len : 0; }
int64_t mattn_gguf_n_tensors(const mattn_gguf_file *f) { return f ? f->n_tensors : 0; }

const mattn_gguf_tensor *mattn_gguf_tensor_at(const mattn_gguf_file *f, int64_t i) {
    return f && i >= 0 && i < f->n_tensors ? &f->t[i] : NULL;
}

const mattn_gguf_tensor *mattn_gguf_find_tensor(const mattn_gguf_file *f, const char *name) {
    if (!f || !name) return NULL;
    const mattn_gguf_str key = {name, strlen(name)};
    int64_t lo = 0, hi = f->n_tensors;   /* binary search of the sorted names */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int r = gguf_str_cmp(f->t_sorted[mid]->name, key);
        if (r == 0) return f->t_sorted[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
