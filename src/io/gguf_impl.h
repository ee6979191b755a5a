/*
 * gguf_impl.h — private to src/io/gguf*.c: the file handle, the bounds-
 * checked cursor the parser reads through, little-endian loads.
 */
#ifndef MATTN_GGUF_IMPL_H
#define MATTN_GGUF_IMPL_H

#include <stdio.h>

#include "io/gguf.h"

/* Arrays nest at most this deep (each level is a recursion of the parser;
 * a hostile file must not exhaust the stack). */
#define GGUF_MAX_DEPTH 16

struct mattn_gguf_file {
    char *path;
    const unsigned char *map;
    size_t len;
    int mapped;                         /* map is ours to munmap (not mattn_gguf_open_memory's) */
    uint32_t version;
    size_t alignment;
    size_t data_offset;                 /* file offset of the data section */
    int64_t n_kv;
    mattn_gguf_value *kv;               /* file order */
    const mattn_gguf_value **kv_sorted; /* by key, for lookups */
    int64_t n_tensors;
    mattn_gguf_tensor *t;               /* file order */
    const mattn_gguf_tensor **t_sorted; /* by name */
};

/* Everything is read through a cursor: pos never passes len, and each
 * read first checks that its bytes are there. */
typedef struct gguf_cursor {
    const unsigned char *p;
    size_t len, pos;
    const char *path;
    char *err;
    size_t errlen;
} gguf_cursor;

mattn_status gguf_fail(const gguf_cursor *c, mattn_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline size_t gguf_left(const gguf_cursor *c) { return c->len - c->pos; }

static inline uint16_t gguf_ld16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t gguf_ld32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t gguf_ld64(const unsigned char *p) { return gguf_ld32(p) | (uint64_t)gguf_ld32(p + 4) << 32; }

/* Read a u32 / u64 / string at the cursor; on a short file fail with a
 * message saying what was being read ("what") and where. */
mattn_status gguf_rd32(gguf_cursor *c, uint32_t *v, const char *what);
mattn_status gguf_rd64(gguf_cursor *c, uint64_t *v, const char *what);
mattn_status gguf_rdstr(gguf_cursor *c, mattn_gguf_str *s, const char *what);

/* Views compare as byte strings, shorter first on a tie (sort order). */
int gguf_str_cmp(mattn_gguf_str a, mattn_gguf_str b);

/* gguf_meta.c: parse the n_kv metadata pairs at the cursor into f->kv and
 * f->kv_sorted (checking unique keys), then general.alignment. */
mattn_status gguf_read_meta(mattn_gguf_file *f, gguf_cursor *c, uint64_t n_kv);
void gguf_free_meta(mattn_gguf_file *f);
/* The value as u32 (as mattn_gguf_val_u32), the message into msg. */
mattn_status gguf_value_u32(const mattn_gguf_file *f, const mattn_gguf_value *v, uint32_t *out, char *msg,
                            size_t msglen);

#endif
