/*
 * gguf_meta.c — GGUF metadata: parsing and validating the key/value pairs
 * (every value type, arrays of any element type, nested arrays), and the
 * typed accessors.  Values stay in the mapping: a string is a (pointer,
 * length) view; a top-level array of strings or arrays gets an index of
 * its elements' offsets (one u64 each), so that token i of a vocabulary is
 * found in O(1) without copying the vocabulary.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf_impl.h"
#include "base/base.h"

static const struct { const char *name; size_t size; } VTYPES[] = {
    [MATTN_GGUF_UINT8] = {"UINT8", 1},     [MATTN_GGUF_INT8] = {"INT8", 1},
    [MATTN_GGUF_UINT16] = {"UINT16", 2},   [MATTN_GGUF_INT16] = {"INT16", 2},
    [MATTN_GGUF_UINT32] = {"UINT32", 4},   [MATTN_GGUF_INT32] = {"INT32", 4},
    [MATTN_GGUF_FLOAT32] = {"FLOAT32", 4}, [MATTN_GGUF_BOOL] = {"BOOL", 1},
    [MATTN_GGUF_STRING] = {"STRING", 0},   [MATTN_GGUF_ARRAY] = {"ARRAY", 0},
    [MATTN_GGUF_UINT64] = {"UINT64", 8},   [MATTN_GGUF_INT64] = {"INT64", 8},
    [MATTN_GGUF_FLOAT64] = {"FLOAT64", 8},
};
#define N_VTYPES ((uint32_t)(sizeof VTYPES / sizeof VTYPES[0]))

const char *mattn_gguf_vtype_name(uint32_t vtype) { return vtype < N_VTYPES ? VTYPES[vtype].name : "?"; }

/* A key in a message: at most 200 bytes of it. */
#define KEY_ARG(v) (int)((v)->key.len < 200 ? (v)->key.len : 200), (v)->key.ptr

// ----------------------------------------------------------------------------
// parsing

/* Element i of array v is a string: the fast path checks it silently, a bad
 * one is read again by gguf_rdstr for its message. */
static mattn_status skip_elem_str(gguf_cursor *c, const mattn_gguf_value *v, uint64_t i) {
    if (gguf_left(c) >= 8) {
        const uint64_t n = gguf_ld64(c->p + c->pos);
        if (n <= gguf_left(c) - 8) {
            c->pos += 8 + (size_t)n;
            return MATTN_OK;
        }
    }
    char what[280];
    snprintf(what, sizeof what, "metadata '%.*s' element %llu", KEY_ARG(v), (unsigned long long)i);
    mattn_gguf_str s;
    return gguf_rdstr(c, &s, what);
}

static mattn_status parse_body(gguf_cursor *c, mattn_gguf_value *v, int depth, int top);

/* The elements of array v (its type, count and p already read): counts
 * checked against the bytes left before anything is allocated or walked;
 * bools 0 or 1; strings and nested arrays walked, each checked; a top-
 * level array of strings or arrays indexed. */
static mattn_status parse_elements(gguf_cursor *c, mattn_gguf_value *v, int depth, int top) {
    const size_t esz = VTYPES[v->elem].size, left = gguf_left(c);
    /* the fewest bytes an element takes: a string its length, an array its type and count */
    const size_t min_size = esz ? esz : v->elem == MATTN_GGUF_STRING ? 8 : 12;
    if (v->n > left / min_size)
        return gguf_fail(c, MATTN_ERR_FORMAT,
                         "metadata '%.*s': %llu elements of type %s cannot fit in the %zu bytes left", KEY_ARG(v),
                         (unsigned long long)v->n, VTYPES[v->elem].name, left);
    if (esz) {
        if (v->elem == MATTN_GGUF_BOOL)
            for (uint64_t i = 0; i < v->n; i++)
                if (v->p[i] > 1)
                    return gguf_fail(c, MATTN_ERR_FORMAT,
                                     "metadata '%.*s': element %llu is a BOOL of value %u (0 or 1)", KEY_ARG(v),
                                     (unsigned long long)i, v->p[i]);
        c->pos += (size_t)v->n * esz;
        return MATTN_OK;
    }
    if (v->elem == MATTN_GGUF_ARRAY && depth + 1 >= GGUF_MAX_DEPTH)
        return gguf_fail(c, MATTN_ERR_FORMAT, "metadata '%.*s': arrays nested deeper than %d", KEY_ARG(v),
                         GGUF_MAX_DEPTH);
    uint64_t *index = NULL;
    if (top && v->n > 0) {
        index = mattn_malloc((size_t)v->n * sizeof *index);
        if (!index) return gguf_fail(c, MATTN_ERR_NOMEM, "out of memory indexing metadata '%.*s'", KEY_ARG(v));
        v->index = index;
    }
    const size_t start = c->pos;
    for (uint64_t i = 0; i < v->n; i++) {
        if (index) index[i] = c->pos - start;
        mattn_status st;
        if (v->elem == MATTN_GGUF_STRING) {
            st = skip_elem_str(c, v, i);
        } else {
            mattn_gguf_value sub = {.key = v->key, .at = (int64_t)i, .type = MATTN_GGUF_ARRAY};
            st = parse_body(c, &sub, depth + 1, 0);
        }
        if (st != MATTN_OK) return st;
    }
    return MATTN_OK;
}

/* The body of value v (after its type tag, v->type known) at the cursor. */
static mattn_status parse_body(gguf_cursor *c, mattn_gguf_value *v, int depth, int top) {
    char what[280];
    snprintf(what, sizeof what, "metadata '%.*s'", KEY_ARG(v));
    if (v->type == MATTN_GGUF_STRING) {
        mattn_gguf_str s;
        mattn_status st = gguf_rdstr(c, &s, what);
        v->p = (const unsigned char *)s.ptr;
        v->len = s.len;
        return st;
    }
    if (v->type != MATTN_GGUF_ARRAY) {   /* a scalar */
        const size_t esz = VTYPES[v->type].size;
        if (gguf_left(c) < esz)
            return gguf_fail(c, MATTN_ERR_FORMAT, "file truncated: %s (%s) at byte %zu needs %zu bytes, %zu left", what,
                             VTYPES[v->type].name, c->pos, esz, gguf_left(c));
        v->p = c->p + c->pos;
        if (v->type == MATTN_GGUF_BOOL && v->p[0] > 1)
            return gguf_fail(c, MATTN_ERR_FORMAT, "%s is a BOOL of value %u (0 or 1)", what, v->p[0]);
        c->pos += esz;
        return MATTN_OK;
    }
    uint32_t elem;
    mattn_status st = gguf_rd32(c, &elem, what);
    if (st == MATTN_OK) st = gguf_rd64(c, &v->n, what);
    if (st != MATTN_OK) return st;
    if (elem >= N_VTYPES)
        return gguf_fail(c, MATTN_ERR_FORMAT, "%s: array of unknown element type %u", what, elem);
    v->elem = (mattn_gguf_vtype)elem;
    v->p = c->p + c->pos;
    return parse_elements(c, v, depth, top);
}

static int kv_cmp(const void *a, const void *b) {
    return gguf_str_cmp((*(const mattn_gguf_value *const *)a)->key, (*(const mattn_gguf_value *const *)b)->key);
}

/* general.alignment: an integer, a nonzero power of two (default 32). */
static mattn_status read_alignment(mattn_gguf_file *f, gguf_cursor *c) {
    const mattn_gguf_value *v = mattn_gguf_find_kv(f, "general.alignment");
    f->alignment = 32;
    if (!v) return MATTN_OK;
    uint32_t a = 0;
    char msg[MATTN_ERRMSG_LEN];
    if (gguf_value_u32(f, v, &a, msg, sizeof msg) != MATTN_OK) {
        if (c->err && c->errlen) snprintf(c->err, c->errlen, "%s", msg);
        return MATTN_ERR_FORMAT;
    }
    if (a == 0 || (a & (a - 1)))
        return gguf_fail(c, MATTN_ERR_FORMAT, "general.alignment = %u is not a nonzero power of two", a);
    f->alignment = a;
    return MATTN_OK;
}

mattn_status gguf_read_meta(mattn_gguf_file *f, gguf_cursor *c, uint64_t n_kv) {
    /* a pair takes at least 13 bytes (key length, type, a UINT8): a count
     * that cannot fit is refused before anything is allocated for it */
    if (n_kv > gguf_left(c) / 13)
        return gguf_fail(c, MATTN_ERR_FORMAT, "metadata count %llu cannot fit in the %zu bytes after the header",
                         (unsigned long long)n_kv, gguf_left(c));
    f->kv = mattn_calloc((size_t)n_kv + 1, sizeof *f->kv);
    f->kv_sorted = mattn_calloc((size_t)n_kv + 1, sizeof *f->kv_sorted);
    if (!f->kv || !f->kv_sorted)
        return gguf_fail(c, MATTN_ERR_NOMEM, "out of memory for %llu metadata pairs", (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        mattn_gguf_value *v = &f->kv[i];
        char what[64];
        snprintf(what, sizeof what, "the key of metadata pair %llu", (unsigned long long)i);
        uint32_t type;
        mattn_status st = gguf_rdstr(c, &v->key, what);
        if (st == MATTN_OK) {
            snprintf(what, sizeof what, "the type of metadata pair %llu", (unsigned long long)i);
            st = gguf_rd32(c, &type, what);
        }
        if (st != MATTN_OK) return st;
        if (type >= N_VTYPES)
            return gguf_fail(c, MATTN_ERR_FORMAT, "metadata '%.*s': unknown value type %u", KEY_ARG(v), type);
        v->type = (mattn_gguf_vtype)type;
        v->at = -1;
        f->n_kv = (int64_t)i + 1;   /* before parsing: close frees its index on failure */
        if ((st = parse_body(c, v, 0, 1)) != MATTN_OK) return st;
        f->kv_sorted[i] = v;
    }
    qsort(f->kv_sorted, (size_t)n_kv, sizeof *f->kv_sorted, kv_cmp);
    for (uint64_t i = 1; i < n_kv; i++)
        if (gguf_str_cmp(f->kv_sorted[i - 1]->key, f->kv_sorted[i]->key) == 0)
            return gguf_fail(c, MATTN_ERR_FORMAT, "duplicate metadata key '%.*s'", KEY_ARG(f->kv_sorted[i]));
    return read_alignment(f, c);
}

void gguf_free_meta(mattn_gguf_file *f) {
    for (int64_t i = 0; f->kv && i < f->n_kv; i++) mattn_free((void *)f->kv[i].index);
    mattn_free(f->kv);
    mattn_free(f->kv_sorted);
}

// ----------------------------------------------------------------------------
// lookups

int64_t mattn_gguf_n_kv(const mattn_gguf_file *f) { return f ? f->n_kv : 0; }

const mattn_gguf_value *mattn_gguf_kv_at(const mattn_gguf_file *f, int64_t i) {
    return f && i >= 0 && i < f->n_kv ? &f->kv[i] : NULL;
}

const mattn_gguf_value *mattn_gguf_find_kv(const mattn_gguf_file *f, const char *key) {
    if (!f || !key || !f->kv_sorted) return NULL;
    const mattn_gguf_str k = {key, strlen(key)};
    int64_t lo = 0, hi = f->n_kv;   /* binary search of the sorted keys */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        const int r = gguf_str_cmp(f->kv_sorted[mid]->key, k);
        if (r == 0) return f->kv_sorted[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Bytes of a (validated) value body of the given type at p. */
static size_t body_size(const unsigned char *p, uint32_t type) {
    if (VTYPES[type].size) return VTYPES[type].size;
    if (type == MATTN_GGUF_STRING) return 8 + (size_t)gguf_ld64(p);
    const uint32_t elem = gguf_ld32(p);
    const uint64_t n = gguf_ld64(p + 4);
    if (VTYPES[elem].size) return 12 + (size_t)n * VTYPES[elem].size;
    size_t off = 12;
    for (uint64_t i = 0; i < n; i++) off += body_size(p + off, elem);
    return off;
}

/* "metadata 'k'" or "metadata 'k'[i]", for messages. */
static const char *where(const mattn_gguf_value *v, char *buf, size_t n) {
    if (v->at < 0) snprintf(buf, n, "metadata '%.*s'", KEY_ARG(v));
    else snprintf(buf, n, "metadata '%.*s'[%lld]", KEY_ARG(v), (long long)v->at);
    return buf;
}

mattn_status mattn_gguf_arr_elem(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i,
                                 mattn_gguf_value *out) {
    char w[280];
    if (!f || !arr || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_arr_elem: NULL argument");
    if (arr->type != MATTN_GGUF_ARRAY)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "%s: %s is %s, not an array", f->path, where(arr, w, sizeof w),
                               VTYPES[arr->type].name);
    if (i >= arr->n)
        return mattn_set_error(MATTN_ERR_INVALID_ARG, "%s: %s: index %llu out of range (%llu elements)", f->path,
                               where(arr, w, sizeof w), (unsigned long long)i, (unsigned long long)arr->n);
    const size_t esz = VTYPES[arr->elem].size;
    size_t off = 0;
    if (esz) off = (size_t)i * esz;
    else if (arr->index) off = (size_t)arr->index[i];
    else for (uint64_t j = 0; j < i; j++) off += body_size(arr->p + off, arr->elem);   /* nested: walk */
    const unsigned char *p = arr->p + off;
    const mattn_gguf_vtype elem = arr->elem;   /* out may be arr */
    *out = (mattn_gguf_value){.key = arr->key, .at = (int64_t)i, .type = elem, .p = p};
    if (elem == MATTN_GGUF_STRING) {
        out->len = (size_t)gguf_ld64(p);
        out->p = p + 8;
    } else if (elem == MATTN_GGUF_ARRAY) {
        out->elem = (mattn_gguf_vtype)gguf_ld32(p);
        out->n = gguf_ld64(p + 4);
        out->p = p + 12;
    }
    return MATTN_OK;
}

// ----------------------------------------------------------------------------
// typed values

/* An integer value read as its two's-complement bits and its sign; 0 if
 * v is not an integer. */
static int int_bits(const mattn_gguf_value *v, uint64_t *bits, int *neg) {
    int64_t s;
    switch (v->type) {
    case MATTN_GGUF_UINT8: *bits = v->p[0]; *neg = 0; return 1;
    case MATTN_GGUF_UINT16: *bits = gguf_ld16(v->p); *neg = 0; return 1;
    case MATTN_GGUF_UINT32: *bits = gguf_ld32(v->p); *neg = 0; return 1;
    case MATTN_GGUF_UINT64: *bits = gguf_ld64(v->p); *neg = 0; return 1;
    case MATTN_GGUF_INT8: s = (int8_t)v->p[0]; break;
    case MATTN_GGUF_INT16: s = (int16_t)gguf_ld16(v->p); break;
    case MATTN_GGUF_INT32: s = (int32_t)gguf_ld32(v->p); break;
    case MATTN_GGUF_INT64: s = (int64_t)gguf_ld64(v->p); break;
    default: return 0;
    }
    *bits = (uint64_t)s;
    *neg = s < 0;
    return 1;
}

/* v as an integer in [lo, hi] (its bits in *out), else a message in msg. */
static mattn_status int_in(const mattn_gguf_file *f, const mattn_gguf_value *v, int64_t lo, uint64_t hi,
                           const char *want, uint64_t *out, char *msg, size_t msglen) {
    char w[280];
    uint64_t b;
    int neg;
    if (!int_bits(v, &b, &neg)) {
        snprintf(msg, msglen, "%s: %s is %s, expected an integer (%s)", f->path, where(v, w, sizeof w),
                 VTYPES[v->type].name, want);
        return MATTN_ERR_FORMAT;
    }
    if (neg ? (int64_t)b < lo : b > hi) {
        if (neg) snprintf(msg, msglen, "%s: %s = %lld (%s) does not fit in %s", f->path, where(v, w, sizeof w),
                          (long long)(int64_t)b, VTYPES[v->type].name, want);
        else snprintf(msg, msglen, "%s: %s = %llu (%s) does not fit in %s", f->path, where(v, w, sizeof w),
                      (unsigned long long)b, VTYPES[v->type].name, want);
        return MATTN_ERR_FORMAT;
    }
    *out = b;
    return MATTN_OK;
}

mattn_status gguf_value_u32(const mattn_gguf_file *f, const mattn_gguf_value *v, uint32_t *out, char *msg,
                            size_t msglen) {
    uint64_t b;
    mattn_status st = int_in(f, v, 0, UINT32_MAX, "u32", &b, msg, msglen);
    if (st == MATTN_OK) *out = (uint32_t)b;
    return st;
}

/* The typed getters: check, convert, or leave the message in the thread-
 * local buffer. */
#define INT_GETTER(NAME, T, LO, HI, WANT)                                                            \
    mattn_status mattn_gguf_val_##NAME(const mattn_gguf_file *f, const mattn_gguf_value *v, T *out) { \
        if (!f || !v || !out)                                                                         \
            return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_val_" #NAME ": NULL argument"); \
        char msg[MATTN_ERRMSG_LEN];                                                                   \
        uint64_t b;                                                                                   \
        mattn_status st = int_in(f, v, LO, HI, WANT, &b, msg, sizeof msg);                            \
        if (st != MATTN_OK) return mattn_set_error(st, "%s", msg);                                    \
        *out = (T)b;                                                                                  \
        return MATTN_OK;                                                                              \
    }
INT_GETTER(u32, uint32_t, 0, UINT32_MAX, "u32")
INT_GETTER(i32, int32_t, INT32_MIN, INT32_MAX, "i32")
INT_GETTER(u64, uint64_t, 0, UINT64_MAX, "u64")
INT_GETTER(i64, int64_t, INT64_MIN, INT64_MAX, "i64")

static mattn_status wrong_type(const mattn_gguf_file *f, const mattn_gguf_value *v, const char *want) {
    char w[280];
    return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s is %s, expected %s", f->path, where(v, w, sizeof w),
                           VTYPES[v->type].name, want);
}

static double ld_f64(const unsigned char *p) {
    uint64_t b = gguf_ld64(p);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

static float ld_f32(const unsigned char *p) {
    uint32_t b = gguf_ld32(p);
    float x;
    memcpy(&x, &b, 4);
    return x;
}

mattn_status mattn_gguf_val_f32(const mattn_gguf_file *f, const mattn_gguf_value *v, float *out) {
    if (!f || !v || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_val_f32: NULL argument");
    if (v->type == MATTN_GGUF_FLOAT32) { *out = ld_f32(v->p); return MATTN_OK; }
    if (v->type == MATTN_GGUF_FLOAT64) {
        const double d = ld_f64(v->p);
        if ((double)(float)d == d || isnan(d)) { *out = (float)d; return MATTN_OK; }
        char w[280], num[32];
        for (int prec = 15; prec <= 17; prec++) {   /* the shortest digits that read back as d */
            snprintf(num, sizeof num, "%.*g", prec, d);
            if (strtod(num, NULL) == d) break;
        }
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: %s = %s (FLOAT64) is not exactly a float", f->path,
                               where(v, w, sizeof w), num);
    }
    return wrong_type(f, v, "FLOAT32");
}

mattn_status mattn_gguf_val_f64(const mattn_gguf_file *f, const mattn_gguf_value *v, double *out) {
    if (!f || !v || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_val_f64: NULL argument");
    if (v->type == MATTN_GGUF_FLOAT32) { *out = ld_f32(v->p); return MATTN_OK; }
    if (v->type == MATTN_GGUF_FLOAT64) { *out = ld_f64(v->p); return MATTN_OK; }
    return wrong_type(f, v, "FLOAT32 or FLOAT64");
}

mattn_status mattn_gguf_val_bool(const mattn_gguf_file *f, const mattn_gguf_value *v, int *out) {
    if (!f || !v || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_val_bool: NULL argument");
    if (v->type != MATTN_GGUF_BOOL) return wrong_type(f, v, "BOOL");
    *out = v->p[0];
    return MATTN_OK;
}

mattn_status mattn_gguf_val_str(const mattn_gguf_file *f, const mattn_gguf_value *v, mattn_gguf_str *out) {
    if (!f || !v || !out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_val_str: NULL argument");
    if (v->type != MATTN_GGUF_STRING) return wrong_type(f, v, "STRING");
    *out = (mattn_gguf_str){(const char *)v->p, v->len};
    return MATTN_OK;
}

/* The getters by key: the value, or MATTN_ERR_NOT_FOUND naming the key. */
static mattn_status lookup(const mattn_gguf_file *f, const char *key, const mattn_gguf_value **v) {
    if (!f || !key) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_gguf_get: NULL file or key");
    *v = mattn_gguf_find_kv(f, key);
    return *v ? MATTN_OK : mattn_set_error(MATTN_ERR_NOT_FOUND, "%s: no metadata key '%s'", f->path, key);
}

#define KEY_GETTER(NAME, T)                                                                \
    mattn_status mattn_gguf_get_##NAME(const mattn_gguf_file *f, const char *key, T *out) { \
        const mattn_gguf_value *v;                                                         \
        mattn_status st = lookup(f, key, &v);                                              \
        return st != MATTN_OK ? st : mattn_gguf_val_##NAME(f, v, out);                     \
    }
KEY_GETTER(u32, uint32_t)
KEY_GETTER(i32, int32_t)
KEY_GETTER(u64, uint64_t)
KEY_GETTER(i64, int64_t)
KEY_GETTER(f32, float)
KEY_GETTER(f64, double)
KEY_GETTER(bool, int)
KEY_GETTER(str, mattn_gguf_str)

mattn_status mattn_gguf_get_arr(const mattn_gguf_file *f, const char *key, int elem, const mattn_gguf_value **out) {
    const mattn_gguf_value *v;
    mattn_status st = lookup(f, key, &v);
    if (st != MATTN_OK) return st;
    if (v->type != MATTN_GGUF_ARRAY || (elem != MATTN_GGUF_ANY && (int)v->elem != elem)) {
        char want[32];
        snprintf(want, sizeof want, "an array of %s",
                 elem == MATTN_GGUF_ANY ? "anything" : mattn_gguf_vtype_name((uint32_t)elem));
        if (v->type != MATTN_GGUF_ARRAY) return wrong_type(f, v, want);
        return mattn_set_error(MATTN_ERR_FORMAT, "%s: metadata '%s' is an array of %s, expected %s", f->path, key,
                               VTYPES[v->elem].name, want);
    }
    if (out) *out = v;
    return MATTN_OK;
}

mattn_status mattn_gguf_arr_str(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i,
                                mattn_gguf_str *out) {
    mattn_gguf_value e = {0};
    mattn_status st = mattn_gguf_arr_elem(f, arr, i, &e);
    return st != MATTN_OK ? st : mattn_gguf_val_str(f, &e, out);
}

mattn_status mattn_gguf_arr_i64(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i, int64_t *out) {
    mattn_gguf_value e = {0};
    mattn_status st = mattn_gguf_arr_elem(f, arr, i, &e);
    return st != MATTN_OK ? st : mattn_gguf_val_i64(f, &e, out);
}

mattn_status mattn_gguf_arr_f64(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i, double *out) {
    mattn_gguf_value e = {0};
    mattn_status st = mattn_gguf_arr_elem(f, arr, i, &e);
    if (st != MATTN_OK) return st;
    uint64_t b;
    int neg;
    if (int_bits(&e, &b, &neg)) {
        *out = neg ? (double)(int64_t)b : (double)b;
        return MATTN_OK;
    }
    if (e.type == MATTN_GGUF_FLOAT32 || e.type == MATTN_GGUF_FLOAT64) return mattn_gguf_val_f64(f, &e, out);
    return wrong_type(f, &e, "a number");
}
