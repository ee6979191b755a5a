/*
 * tensors.c — safetensors files of named tensors for applications
 * (metaattn.h, "Tensor files"): a thin public wrapper over the internal
 * reader and atomic writer (safetensors.c), which check every offset and
 * write through a fsynced temporary file.  `metaattn layer` reads its input
 * and writes its outputs with it.
 */
#include "io/io.h"
#include "base/base.h"

/* the public dtype codes are the reader's */
_Static_assert((int)MATTN_DTYPE_F32 == (int)MATTN_ST_F32 && (int)MATTN_DTYPE_BF16 == (int)MATTN_ST_BF16 &&
               (int)MATTN_DTYPE_I64 == (int)MATTN_ST_I64 && (int)MATTN_DTYPE_BOOL == (int)MATTN_ST_BOOL,
               "mattn_dtype and mattn_st_dtype disagree");
_Static_assert(MATTN_TENSORS_MAX_DIMS == MATTN_ST_MAX_DIMS, "MATTN_TENSORS_MAX_DIMS");

struct mattn_tensors {
    mattn_st_file *f;
    char *path;
};

#define BAD(...) return mattn_set_error(MATTN_ERR_INVALID_ARG, __VA_ARGS__)

const char *mattn_dtype_name(mattn_dtype d) { return mattn_st_dtype_name((mattn_st_dtype)d); }

int mattn_dtype_is_float(mattn_dtype d) {
    return d == MATTN_DTYPE_F32 || d == MATTN_DTYPE_F64 || d == MATTN_DTYPE_F16 || d == MATTN_DTYPE_BF16;
}

mattn_status mattn_tensors_open(const char *path, mattn_tensors **out) {
    if (!out) BAD("mattn_tensors_open: out is NULL");
    *out = NULL;
    if (!path) BAD("mattn_tensors_open: path is NULL");
    char err[MATTN_ERRMSG_LEN];
    mattn_tensors *t = mattn_calloc(1, sizeof *t);
    if (!t || !(t->path = mattn_strdup(path))) {
        mattn_free(t);
        return mattn_set_error(MATTN_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    mattn_status st = mattn_st_open(path, &t->f, err, sizeof err);
    if (st != MATTN_OK) {
        mattn_tensors_free(t);
        return mattn_set_error(st, "%s", err);
    }
    *out = t;
    return MATTN_OK;
}

void mattn_tensors_free(mattn_tensors *t) {
    if (!t) return;
    mattn_st_close(t->f);
    mattn_free(t->path);
    mattn_free(t);
}

int mattn_tensors_count(const mattn_tensors *t) { return t ? mattn_st_count(t->f) : 0; }

const char *mattn_tensors_meta(const mattn_tensors *t, const char *key) {
    return t && key ? mattn_st_meta(t->f, key) : NULL;
}

static void to_info(const mattn_st_tensor *s, mattn_tensor_info *info) {
    memset(info, 0, sizeof *info);
    info->name = s->name;
    info->dtype = (mattn_dtype)s->dtype;
    info->ndim = s->ndim;
    memcpy(info->shape, s->shape, sizeof(int64_t) * (size_t)s->ndim);
    info->numel = s->numel;
}

mattn_status mattn_tensors_info(const mattn_tensors *t, int i, mattn_tensor_info *info) {
    if (!t || !info) BAD("mattn_tensors_info: %s is NULL", !t ? "file" : "info");
    const mattn_st_tensor *s = mattn_st_get(t->f, i);
    if (!s) BAD("%s: tensor index %d out of range [0, %d)", t->path, i, mattn_st_count(t->f));
    to_info(s, info);
    return MATTN_OK;
}

static mattn_status find(const mattn_tensors *t, const char *name, const mattn_st_tensor **s) {
    if (!t || !name) BAD("mattn_tensors: %s is NULL", !t ? "file" : "name");
    if (!(*s = mattn_st_find(t->f, name)))
        return mattn_set_error(MATTN_ERR_NOT_FOUND, "%s: no tensor named '%s'", t->path, name);
    return MATTN_OK;
}

mattn_status mattn_tensors_find(const mattn_tensors *t, const char *name, mattn_tensor_info *info) {
    const mattn_st_tensor *s;
    mattn_status st = find(t, name, &s);
    if (st != MATTN_OK) return st;
    if (info) to_info(s, info);
    return MATTN_OK;
}

mattn_status mattn_tensors_read_f32(const mattn_tensors *t, const char *name, float *dst, int64_t n) {
    const mattn_st_tensor *s;
    mattn_status st = find(t, name, &s);
    if (st != MATTN_OK) return st;
    if (!dst && s->numel > 0) BAD("mattn_tensors_read_f32: dst is NULL");
    if (n != s->numel)
        return mattn_set_error(MATTN_ERR_SHAPE, "%s: tensor '%s' has %lld elements, the buffer %lld", t->path, name,
                               (long long)s->numel, (long long)n);
    mattn_st_to_f32(s, dst);
    return MATTN_OK;
}

mattn_status mattn_tensors_write(const char *path, const mattn_tensors_entry *t, int n, const char *const *meta,
                                 int n_meta) {
    if (!path) BAD("mattn_tensors_write: path is NULL");
    if (n < 0 || (n > 0 && !t)) BAD("%s: invalid tensor list (n = %d)", path, n);
    mattn_st_entry *e = mattn_calloc(n > 0 ? (size_t)n : 1, sizeof *e);
    if (!e) return mattn_set_error(MATTN_ERR_NOMEM, "out of memory writing '%s'", path);
    for (int i = 0; i < n; i++) {
        if (t[i].ndim > 0 && !t[i].shape) {
            mattn_free(e);
            BAD("%s: tensor %d ('%s'): shape is NULL", path, i, t[i].name ? t[i].name : "");
        }
        e[i] = (mattn_st_entry){t[i].name, MATTN_ST_F32, t[i].ndim, t[i].shape, t[i].data};
    }
    char err[MATTN_ERRMSG_LEN];
    mattn_status st = mattn_st_write(path, e, n, meta, n_meta, err, sizeof err);
    mattn_free(e);
    return st == MATTN_OK ? MATTN_OK : mattn_set_error(st, "%s", err);
}
