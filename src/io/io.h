/*
 * safetensors.h — internal reader/writer for the safetensors format.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data block; offsets are relative to the data block.
 *
 * The reader mmaps the file read-only and checks everything before anyone
 * touches a byte: header length within the file, JSON well-formed, known
 * dtypes, shapes non-negative without overflow, nbytes == prod(shape) *
 * dtype size, offsets within the data block, no overlapping tensors, the data
 * block fully covered (no holes, no trailing bytes), unique names.  The writer
 * writes to "<path>.tmp.<pid>", fsyncs, and renames over path.
 */
#ifndef MATTN_SAFETENSORS_H
#define MATTN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "metaattn.h"

typedef enum mattn_st_dtype {
    MATTN_ST_F32 = 0, MATTN_ST_F64, MATTN_ST_F16, MATTN_ST_BF16,
    MATTN_ST_I64, MATTN_ST_I32, MATTN_ST_I16, MATTN_ST_I8,
    MATTN_ST_U8, MATTN_ST_BOOL
} mattn_st_dtype;

#define MATTN_ST_MAX_DIMS 8

typedef struct mattn_st_tensor {
    char *name;
    mattn_st_dtype dtype;
    int ndim;
    int64_t shape[MATTN_ST_MAX_DIMS];
    int64_t numel;
    const void *data;  /* into the mapping; may be unaligned: memcpy out */
    size_t nbytes;
} mattn_st_tensor;

typedef struct mattn_st_file mattn_st_file;

/* Size in bytes of one element, and the format's name ("F32"). */
size_t mattn_st_dtype_size(mattn_st_dtype d);
const char *mattn_st_dtype_name(mattn_st_dtype d);

/* Open and validate.  On failure *out = NULL and err (if non-NULL) holds a
 * message naming the path and the problem.  MATTN_ERR_IO: cannot open/map;
 * MATTN_ERR_FORMAT: anything malformed; MATTN_ERR_NOMEM. */
mattn_status mattn_st_open(const char *path, mattn_st_file **out, char *err, size_t errlen);
void mattn_st_close(mattn_st_file *f);

int mattn_st_count(const mattn_st_file *f);
const mattn_st_tensor *mattn_st_get(const mattn_st_file *f, int i);       /* NULL if out of range */
const mattn_st_tensor *mattn_st_find(const mattn_st_file *f, const char *name); /* NULL if absent */
/* __metadata__ value for key, or NULL. */
const char *mattn_st_meta(const mattn_st_file *f, const char *key);

/* Copy a tensor into dst as float32, converting from F32/F64/F16/BF16/ints/
 * bool; numel elements. */
void mattn_st_to_f32(const mattn_st_tensor *t, float *dst);
/* The same into double: F64 exactly, the other types through float. */
void mattn_st_to_f64(const mattn_st_tensor *t, double *dst);

typedef struct mattn_st_entry {
    const char *name;
    mattn_st_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;   /* prod(shape) * dtype size bytes */
} mattn_st_entry;

/* Write n tensors (in the given order, 8-byte-aligned data) and metadata
 * pairs meta[0]=key0, meta[1]=val0, ... (n_meta pairs; may be 0) atomically.
 * Duplicate names: MATTN_ERR_INVALID_ARG.  Failure leaves path untouched. */
mattn_status mattn_st_write(const char *path, const mattn_st_entry *t, int n,
                            const char *const *meta, int n_meta, char *err, size_t errlen);

#include "io/gguf.h"   /* the GGUF reader */

#endif
