/*
 * safetensors.c — mmap reader with full validation, atomic writer.
 * See safetensors.h for the format and the guarantees.
 */

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "io/io.h"
#include "base/base.h"

/* Header larger than this is rejected (the reference implementation uses
 * 100 MB as well): a hostile length must not make us allocate gigabytes. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

struct mattn_st_file {
    void *map;
    size_t map_len;
    int n;
    mattn_st_tensor *t;
    int n_meta;
    char **meta;   /* key0, val0, key1, val1, ... */
};

static const struct { const char *name; size_t size; } DTYPES[] = {
    [MATTN_ST_F32] = {"F32", 4}, [MATTN_ST_F64] = {"F64", 8},
    [MATTN_ST_F16] = {"F16", 2}, [MATTN_ST_BF16] = {"BF16", 2},
    [MATTN_ST_I64] = {"I64", 8}, [MATTN_ST_I32] = {"I32", 4},
    [MATTN_ST_I16] = {"I16", 2}, [MATTN_ST_I8] = {"I8", 1},
    [MATTN_ST_U8] = {"U8", 1},   [MATTN_ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

size_t mattn_st_dtype_size(mattn_st_dtype d) {
    return (int)d >= 0 && (int)d < N_DTYPES ? DTYPES[d].size : 0;
}

const char *mattn_st_dtype_name(mattn_st_dtype d) {
    return (int)d >= 0 && (int)d < N_DTYPES ? DTYPES[d].name : "?";
}

static int dtype_from_name(const char *s) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(s, DTYPES[i].name) == 0) return i;
    return -1;
}

static mattn_status fail(char *err, size_t errlen, mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mattn_status fail(char *err, size_t errlen, mattn_status st, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

void mattn_st_close(mattn_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) mattn_free(f->t[i].name);
    for (int i = 0; i < 2 * f->n_meta; i++) mattn_free(f->meta[i]);
    mattn_free(f->t);
    mattn_free(f->meta);
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
    mattn_free(f);
}

/* A JSON number that is a non-negative integer exactly representable. */
static int json_u53(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

typedef struct { uint64_t begin, end; int idx; } span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse one tensor entry {"dtype","shape","data_offsets"}. */
static mattn_status parse_entry(const cJSON *e, mattn_st_tensor *t, uint64_t *b, uint64_t *en,
                                const char *path, char *err, size_t errlen) {
    const char *nm = t->name;
    if (!cJSON_IsObject(e))
        return fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return fail(err, errlen, MATTN_ERR_FORMAT,
                    "%s: tensor '%s': needs string 'dtype', array 'shape' and array 'data_offsets'", path, nm);
    int d = dtype_from_name(dt->valuestring);
    if (d < 0)
        return fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", path, nm,
                    dt->valuestring);
    t->dtype = (mattn_st_dtype)d;
    int nd = cJSON_GetArraySize(sh);
    if (nd > MATTN_ST_MAX_DIMS)
        return fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path, nm,
                    nd, MATTN_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, sh) {
        uint64_t v;
        if (!json_u53(x, &v))
            return fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                        path, nm, i);
        if (v && numel > (UINT64_C(1) << 53) / v)
            return fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, nm);
        numel *= v;
        t->shape[i++] = (int64_t)v;
    }
    t->numel = (int64_t)numel;
    if (cJSON_GetArraySize(of) != 2 || !json_u53(cJSON_GetArrayItem(of, 0), b) ||
        !json_u53(cJSON_GetArrayItem(of, 1), en) || *en < *b)
        return fail(err, errlen, MATTN_ERR_FORMAT,
                    "%s: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", path, nm);
    uint64_t want = numel * DTYPES[d].size;
    if (*en - *b != want)
        return fail(err, errlen, MATTN_ERR_FORMAT,
                    "%s: tensor '%s': %llu bytes at data_offsets but dtype %s and shape need %llu", path, nm,
                    (unsigned long long)(*en - *b), DTYPES[d].name, (unsigned long long)want);
    return MATTN_OK;
}

static mattn_status parse_header(mattn_st_file *f, const char *json, size_t len,
                                 const unsigned char *data, size_t data_len,
                                 const char *path, char *err, size_t errlen) {
    const char *end = NULL;
    mattn_alloc_mark();
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root && mattn_alloc_failed()) return fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory parsing the header", path);
    if (!root) return fail(err, errlen, MATTN_ERR_FORMAT, "%s: header is not valid JSON", path);
    mattn_status st = MATTN_OK;
    span *sp = NULL;
    for (; end < json + len; end++)   /* only padding may follow the object */
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: junk after the header's JSON object", path);
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    int n_all = cJSON_GetArraySize(root);
    f->t = mattn_calloc((size_t)n_all + 1, sizeof *f->t);
    sp = mattn_calloc((size_t)n_all + 1, sizeof *sp);
    if (!f->t || !sp) { st = fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); goto done; }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        const char *key = e->string;
        /* cJSON keeps duplicate keys; the format forbids them. */
        for (const cJSON *p = root->child; p != e; p = p->next)
            if (strcmp(p->string, key) == 0) {
                st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: duplicate key '%s' in header", path, key);
                goto done;
            }
        if (strcmp(key, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                goto done;
            }
            int nm = cJSON_GetArraySize(e);
            f->meta = mattn_calloc(2 * (size_t)nm + 1, sizeof *f->meta);
            if (!f->meta) { st = fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); goto done; }
            const cJSON *m;
            cJSON_ArrayForEach(m, e) {
                if (!cJSON_IsString(m)) {
                    st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: __metadata__['%s'] is not a string", path,
                              m->string);
                    goto done;
                }
                f->meta[2 * f->n_meta] = mattn_strdup(m->string);
                f->meta[2 * f->n_meta + 1] = mattn_strdup(m->valuestring);
                f->n_meta++;
                if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1]) {
                    st = fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path);
                    goto done;
                }
            }
            continue;
        }
        mattn_st_tensor *t = &f->t[f->n];
        t->name = mattn_strdup(key);
        if (!t->name) { st = fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); goto done; }
        f->n++;
        uint64_t b = 0, en = 0;
        st = parse_entry(e, t, &b, &en, path, err, errlen);
        if (st != MATTN_OK) goto done;
        sp[f->n - 1] = (span){b, en, f->n - 1};
    }
    /* Coverage: sorted spans must tile [0, data_len) exactly.  Zero-size
     * tensors may sit anywhere inside (or at the end of) the block. */
    qsort(sp, (size_t)f->n, sizeof *sp, span_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        if (sp[i].begin == sp[i].end) {
            if (sp[i].begin > data_len) {
                st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': data_offsets beyond the data block",
                          path, f->t[sp[i].idx].name);
                goto done;
            }
            continue;
        }
        if (sp[i].begin != pos) {
            st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: tensor '%s': data_offsets %s (begin %llu, expected %llu)",
                      path, f->t[sp[i].idx].name, sp[i].begin < pos ? "overlap another tensor" : "leave a hole",
                      (unsigned long long)sp[i].begin, (unsigned long long)pos);
            goto done;
        }
        if (sp[i].end > data_len) {
            st = fail(err, errlen, MATTN_ERR_FORMAT,
                      "%s: tensor '%s': data_offsets end %llu beyond the data block (%zu bytes); file truncated?",
                      path, f->t[sp[i].idx].name, (unsigned long long)sp[i].end, data_len);
            goto done;
        }
        pos = sp[i].end;
    }
    if (pos != data_len) {
        st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor", path,
                  (unsigned long long)(data_len - pos));
        goto done;
    }
    for (int i = 0; i < f->n; i++) {
        mattn_st_tensor *t = &f->t[sp[i].idx];
        t->nbytes = (size_t)(sp[i].end - sp[i].begin);
        t->data = data + sp[i].begin;
    }
done:
    mattn_free(sp);
    cJSON_Delete(root);
    return st;
}

mattn_status mattn_st_open(const char *path, mattn_st_file **out, char *err, size_t errlen) {
    if (!out) return fail(err, errlen, MATTN_ERR_INVALID_ARG, "mattn_st_open: out is NULL");
    *out = NULL;
    if (!path) return fail(err, errlen, MATTN_ERR_INVALID_ARG, "mattn_st_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, errlen, MATTN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, errlen, MATTN_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        return fail(err, errlen, MATTN_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors file", path, len);
    }
    mattn_st_file *f = mattn_calloc(1, sizeof *f);
    if (!f) { close(fd); return fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); }
    f->map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        mattn_st_close(f);
        return fail(err, errlen, MATTN_ERR_IO, "%s: cannot mmap: %s", path, strerror(errno));
    }
    f->map_len = len;
    const unsigned char *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    mattn_status st;
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > len - 8) {
        st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: header length %llu invalid for a %zu-byte file", path,
                  (unsigned long long)hlen, len);
    } else if (p[8] != '{') {
        st = fail(err, errlen, MATTN_ERR_FORMAT, "%s: header does not start with '{'", path);
    } else {
        st = parse_header(f, (const char *)p + 8, (size_t)hlen, p + 8 + hlen, len - 8 - (size_t)hlen, path,
                          err, errlen);
    }
    if (st != MATTN_OK) { mattn_st_close(f); return st; }
    *out = f;
    return MATTN_OK;
}

int mattn_st_count(const mattn_st_file *f) { return f ? f->n : 0; }

const mattn_st_tensor *mattn_st_get(const mattn_st_file *f, int i) {
    return f && i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const mattn_st_tensor *mattn_st_find(const mattn_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *mattn_st_meta(const mattn_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

void mattn_st_to_f32(const mattn_st_tensor *t, float *dst) {
    const unsigned char *p = t->data;
    size_t es = DTYPES[t->dtype].size;
    for (int64_t i = 0; i < t->numel; i++, p += es) {
        float v = 0;
        switch (t->dtype) {
        case MATTN_ST_F32: memcpy(&v, p, 4); break;
        case MATTN_ST_F64: { double d; memcpy(&d, p, 8); v = (float)d; break; }
        case MATTN_ST_F16: { uint16_t h; memcpy(&h, p, 2); v = mattn_f16_to_f32(h); break; }
        case MATTN_ST_BF16: { uint16_t h; memcpy(&h, p, 2); v = mattn_bf16_to_f32(h); break; }
        case MATTN_ST_I64: { int64_t x; memcpy(&x, p, 8); v = (float)x; break; }
        case MATTN_ST_I32: { int32_t x; memcpy(&x, p, 4); v = (float)x; break; }
        case MATTN_ST_I16: { int16_t x; memcpy(&x, p, 2); v = (float)x; break; }
        case MATTN_ST_I8: v = (float)(int8_t)*p; break;
        case MATTN_ST_U8: v = (float)*p; break;
        case MATTN_ST_BOOL: v = *p ? 1.0f : 0.0f; break;
        }
        dst[i] = v;
    }
}

// ----------------------------------------------------------------------------
// writer

typedef struct { char *s; size_t len, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = mattn_realloc(b->s, cap);
        if (!p) { b->oom = 1; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n);
}

/* JSON string literal, escaping what JSON requires. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { sb_put(b, "\\", 1); sb_put(b, (const char *)&c, 1); }
        else if (c == '\n') sb_put(b, "\\n", 2);
        else if (c == '\t') sb_put(b, "\\t", 2);
        else if (c == '\r') sb_put(b, "\\r", 2);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t entry_nbytes(const mattn_st_entry *e) {
    size_t n = mattn_st_dtype_size(e->dtype);
    for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    return n;
}

mattn_status mattn_st_write(const char *path, const mattn_st_entry *t, int n,
                            const char *const *meta, int n_meta, char *err, size_t errlen) {
    if (!path) return fail(err, errlen, MATTN_ERR_INVALID_ARG, "mattn_st_write: path is NULL");
    if (n < 0 || (n > 0 && !t) || n_meta < 0 || (n_meta > 0 && !meta))
        return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: invalid tensor/metadata list", path);
    for (int i = 0; i < n; i++) {
        if (!t[i].name || !t[i].name[0] || strcmp(t[i].name, "__metadata__") == 0)
            return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: tensor %d has an invalid name", path, i);
        if ((int)t[i].dtype < 0 || (int)t[i].dtype >= N_DTYPES || t[i].ndim < 0 || t[i].ndim > MATTN_ST_MAX_DIMS)
            return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: tensor '%s': bad dtype or ndim %d", path,
                        t[i].name, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            if (t[i].shape[d] < 0)
                return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: tensor '%s': shape[%d] = %lld", path,
                            t[i].name, d, (long long)t[i].shape[d]);
        if (entry_nbytes(&t[i]) && !t[i].data)
            return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: tensor '%s': data is NULL", path, t[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0)
                return fail(err, errlen, MATTN_ERR_INVALID_ARG, "%s: duplicate tensor name '%s'", path, t[i].name);
    }
    sbuf h = {0};
    sb_put(&h, "{", 1);
    int first = 1;
    if (n_meta > 0) {
        sb_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_json_str(&h, meta[2 * i] ? meta[2 * i] : "");
            sb_put(&h, ":", 1);
            sb_json_str(&h, meta[2 * i + 1] ? meta[2 * i + 1] : "");
        }
        sb_put(&h, "}", 1);
        first = 0;
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!first) sb_put(&h, ",", 1);
        first = 0;
        sb_json_str(&h, t[i].name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", DTYPES[t[i].dtype].name);
        for (int d = 0; d < t[i].ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        size_t nb = entry_nbytes(&t[i]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && (8 + h.len) % 8) sb_put(&h, " ", 1);  /* pad so data starts 8-aligned */
    if (h.oom) { mattn_free(h.s); return fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); }

    size_t plen = strlen(path);
    char *tmp = mattn_malloc(plen + 32);
    if (!tmp) { mattn_free(h.s); return fail(err, errlen, MATTN_ERR_NOMEM, "%s: out of memory", path); }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    mattn_status st = MATTN_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = fail(err, errlen, MATTN_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        goto out;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int bad = write_all(fd, lenb, 8) || write_all(fd, h.s, h.len);
    for (int i = 0; i < n && !bad; i++) bad = write_all(fd, t[i].data, entry_nbytes(&t[i]));
    if (!bad) bad = fsync(fd);
    int e = errno;
    if (close(fd) != 0 && !bad) { bad = 1; e = errno; }
    if (bad) {
        unlink(tmp);
        st = fail(err, errlen, MATTN_ERR_IO, "%s: write failed: %s", path, strerror(e));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        st = fail(err, errlen, MATTN_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
        goto out;
    }
    /* Make the rename itself durable (no allocation: this must not fail
     * silently for want of memory). */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path < 4095 ? slash - path : 4095), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    mattn_free(tmp);
    mattn_free(h.s);
    return st;
}

void mattn_st_to_f64(const mattn_st_tensor *t, double *dst) {
    if (t->dtype == MATTN_ST_F64) {
        memcpy(dst, t->data, (size_t)t->numel * sizeof(double));
        return;
    }
    for (int64_t i = 0; i < t->numel; i++) {
        mattn_st_tensor one = *t;
        one.numel = 1;
        one.data = (const char *)t->data + (size_t)i * mattn_st_dtype_size(t->dtype);
        float f;
        mattn_st_to_f32(&one, &f);
        dst[i] = f;
    }
}
