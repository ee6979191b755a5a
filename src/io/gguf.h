/*
 * gguf.h — internal reader for GGUF files (llama.cpp's model format),
 * versions 2 and 3, little-endian.
 *
 * Format: magic "GGUF", u32 version, u64 tensor count, u64 metadata count;
 * the metadata (key: u64-length-prefixed string, u32 value type, value);
 * the tensor infos (name, u32 n_dims <= 4, u64 dims in ggml order — ne[0]
 * is the row length, the contiguous one —, u32 ggml type, u64 offset into
 * the data section); padding to general.alignment (default 32); the data
 * section.  Strings are u64-length-prefixed, not NUL-terminated; an array
 * is u32 element type, u64 count, the elements (an element that is itself
 * an array is again type, count, elements).
 *
 * The reader mmaps the file read-only and checks everything before anyone
 * touches a byte: magic, version, byte order; every count, string and array
 * length against the bytes left (so a hostile count cannot make it allocate
 * much); value types; bools 0 or 1; arrays nested at most 16 deep; unique
 * keys; general.alignment a nonzero power of two; per tensor n_dims, each
 * dim, the element count and byte size without overflow, a supported type,
 * a row length that is a multiple of the block size, an aligned offset and
 * a data range inside the file; unique names; no two tensors' data
 * overlapping.  Like llama.cpp's
 * mmap loader it allows tensors in any order, gaps between them, and a file
 * that ends without the last tensor's padding.  Nothing is copied: strings
 * are views into the mapping, tensor data is a pointer into it.
 *
 * Errors: mattn_gguf_open writes its message (naming the path and what is
 * wrong) into err; the accessors leave theirs in the thread-local buffer
 * (mattn_last_error), naming the path and the key.  Thread safety: a file
 * once open is read-only, any number of threads may read it.
 */
#ifndef MATTN_GGUF_H
#define MATTN_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "metaattn.h"

/* Metadata value types (the numbers are the format's). */
typedef enum mattn_gguf_vtype {
    MATTN_GGUF_UINT8 = 0, MATTN_GGUF_INT8 = 1, MATTN_GGUF_UINT16 = 2, MATTN_GGUF_INT16 = 3,
    MATTN_GGUF_UINT32 = 4, MATTN_GGUF_INT32 = 5, MATTN_GGUF_FLOAT32 = 6, MATTN_GGUF_BOOL = 7,
    MATTN_GGUF_STRING = 8, MATTN_GGUF_ARRAY = 9, MATTN_GGUF_UINT64 = 10, MATTN_GGUF_INT64 = 11,
    MATTN_GGUF_FLOAT64 = 12
} mattn_gguf_vtype;
#define MATTN_GGUF_ANY (-1) /* mattn_gguf_get_arr: any element type */

/* The ggml tensor types this reader accepts (ggml's numbers).  Every other
 * type is refused at open, by name where known (mattn_gguf_type_name). */
typedef enum mattn_ggml_type {
    MATTN_GGML_F32 = 0,
    MATTN_GGML_F16 = 1,
    MATTN_GGML_Q4_0 = 2,  /* blocks of 32: f16 d, 16 bytes; x = d * (nibble - 8) */
    MATTN_GGML_Q4_1 = 3,  /* blocks of 32: f16 d, f16 m, 16 bytes; x = d * nibble + m */
    MATTN_GGML_Q8_0 = 8,  /* blocks of 32: f16 d, 32 int8; x = d * q */
    MATTN_GGML_BF16 = 30
} mattn_ggml_type;
/* Q4_0/Q4_1 nibbles: byte j of a block's 16 holds element j in its low
 * nibble and element j + 16 in its high nibble. */
#define MATTN_GGML_QK 32      /* elements per block of the quantised types */
#define MATTN_GGUF_MAX_DIMS 4

/* A string in the file: ptr into the mapping, len bytes, NOT NUL-terminated
 * (print with "%.*s", (int)s.len, s.ptr). */
typedef struct mattn_gguf_str {
    const char *ptr;
    size_t len;
} mattn_gguf_str;

/* A metadata value, or an element of an array value: a view into the
 * mapping, valid until mattn_gguf_close.  Read it with the accessors below
 * rather than through p (the bytes are little-endian and unaligned). */
typedef struct mattn_gguf_value {
    mattn_gguf_str key;          /* the key it is (or is an element of): for messages */
    int64_t at;                  /* -1: the key's own value; i: element i of its array */
    mattn_gguf_vtype type;
    const unsigned char *p;      /* scalar: its bytes; string: its first byte; array: its first element */
    size_t len;                  /* string: its length in bytes */
    mattn_gguf_vtype elem;       /* array: the element type */
    uint64_t n;                  /* array: the element count */
    const uint64_t *index;       /* array of strings/arrays (top level only): offset of element i from p; else NULL */
} mattn_gguf_value;

typedef struct mattn_gguf_tensor {
    mattn_gguf_str name;
    mattn_ggml_type type;
    int n_dims;                  /* 0..4 as in the file; ne[] beyond it is 1 */
    int64_t ne[MATTN_GGUF_MAX_DIMS]; /* ggml order: ne[0] = row length (contiguous), ne[1] = rows, ... */
    int64_t n_elements;
    size_t nbytes;
    uint64_t offset;             /* into the data section, a multiple of the alignment */
    const void *data;            /* into the mapping (a mapped file: aligned to min(alignment, page size)) */
} mattn_gguf_tensor;

typedef struct mattn_gguf_file mattn_gguf_file;

// ----------------------------------------------------------------------------
// file

/* Open and validate.  On failure *out = NULL and err (if non-NULL) holds a
 * message naming the path and the problem.  MATTN_ERR_IO: cannot open/map;
 * MATTN_ERR_FORMAT: anything malformed, an unsupported version, byte order or
 * tensor type; MATTN_ERR_NOMEM. */
mattn_status mattn_gguf_open(const char *path, mattn_gguf_file **out, char *err, size_t errlen);
/* The same on len bytes in memory, which must stay valid and unchanged until
 * mattn_gguf_close (views and tensor data point into them); name stands for
 * the path in messages.  The tests and the fuzz target use it on buffers of
 * the exact size, where AddressSanitizer sees any read past the end. */
mattn_status mattn_gguf_open_memory(const void *data, size_t len, const char *name, mattn_gguf_file **out,
                                    char *err, size_t errlen);
void mattn_gguf_close(mattn_gguf_file *f); /* NULL is fine */

const char *mattn_gguf_path(const mattn_gguf_file *f);
uint32_t mattn_gguf_version(const mattn_gguf_file *f);
size_t mattn_gguf_alignment(const mattn_gguf_file *f);
size_t mattn_gguf_data_offset(const mattn_gguf_file *f);   /* file offset of the data section */
size_t mattn_gguf_file_size(const mattn_gguf_file *f);

// ----------------------------------------------------------------------------
// tensors

int64_t mattn_gguf_n_tensors(const mattn_gguf_file *f);
const mattn_gguf_tensor *mattn_gguf_tensor_at(const mattn_gguf_file *f, int64_t i);  /* file order; NULL out of range */
const mattn_gguf_tensor *mattn_gguf_find_tensor(const mattn_gguf_file *f, const char *name); /* NULL if absent */

/* ggml's name of a tensor type ("Q4_K"), "?" if unknown; whether this reader
 * supports it; elements per block (1 for F32/F16/BF16) and bytes per block,
 * 0 for an unsupported type; bytes of n elements (n a multiple of the block
 * size), 0 for an unsupported type. */
const char *mattn_gguf_type_name(uint32_t type);
int mattn_gguf_type_supported(uint32_t type);
int64_t mattn_gguf_block_size(uint32_t type);
size_t mattn_gguf_block_bytes(uint32_t type);
size_t mattn_gguf_nbytes(uint32_t type, int64_t n);

/* Reference dequantisation, exactly ggml's (and the gguf package's)
 * arithmetic in float: n elements of type from src to dst.  n must be >= 0
 * and, for the quantised types, a multiple of 32.  MATTN_ERR_INVALID_ARG for
 * an unsupported type or a bad n (nothing written). */
mattn_status mattn_gguf_dequant_ref(mattn_ggml_type type, const void *src, float *dst, int64_t n);

// ----------------------------------------------------------------------------
// metadata

const char *mattn_gguf_vtype_name(uint32_t vtype);  /* "UINT32"; "?" if unknown */
int64_t mattn_gguf_n_kv(const mattn_gguf_file *f);
const mattn_gguf_value *mattn_gguf_kv_at(const mattn_gguf_file *f, int64_t i);     /* file order; NULL out of range */
const mattn_gguf_value *mattn_gguf_find_kv(const mattn_gguf_file *f, const char *key); /* NULL if absent */

/* A value as a C type.  Integers convert from any integer type whose value
 * fits (a UINT8 or an INT64 holding 7 reads as u32; -1 does not); f32 reads
 * FLOAT32, or FLOAT64 when the value is exactly a float; f64 reads FLOAT32
 * and FLOAT64; bool reads BOOL; str reads STRING.  MATTN_ERR_FORMAT (naming
 * the key, its type and the value) otherwise; *out is then unchanged. */
mattn_status mattn_gguf_val_u32(const mattn_gguf_file *f, const mattn_gguf_value *v, uint32_t *out);
mattn_status mattn_gguf_val_i32(const mattn_gguf_file *f, const mattn_gguf_value *v, int32_t *out);
mattn_status mattn_gguf_val_u64(const mattn_gguf_file *f, const mattn_gguf_value *v, uint64_t *out);
mattn_status mattn_gguf_val_i64(const mattn_gguf_file *f, const mattn_gguf_value *v, int64_t *out);
mattn_status mattn_gguf_val_f32(const mattn_gguf_file *f, const mattn_gguf_value *v, float *out);
mattn_status mattn_gguf_val_f64(const mattn_gguf_file *f, const mattn_gguf_value *v, double *out);
mattn_status mattn_gguf_val_bool(const mattn_gguf_file *f, const mattn_gguf_value *v, int *out);
mattn_status mattn_gguf_val_str(const mattn_gguf_file *f, const mattn_gguf_value *v, mattn_gguf_str *out);

/* The same by key: MATTN_ERR_NOT_FOUND (naming the path and key) if absent. */
mattn_status mattn_gguf_get_u32(const mattn_gguf_file *f, const char *key, uint32_t *out);
mattn_status mattn_gguf_get_i32(const mattn_gguf_file *f, const char *key, int32_t *out);
mattn_status mattn_gguf_get_u64(const mattn_gguf_file *f, const char *key, uint64_t *out);
mattn_status mattn_gguf_get_i64(const mattn_gguf_file *f, const char *key, int64_t *out);
mattn_status mattn_gguf_get_f32(const mattn_gguf_file *f, const char *key, float *out);
mattn_status mattn_gguf_get_f64(const mattn_gguf_file *f, const char *key, double *out);
mattn_status mattn_gguf_get_bool(const mattn_gguf_file *f, const char *key, int *out);
mattn_status mattn_gguf_get_str(const mattn_gguf_file *f, const char *key, mattn_gguf_str *out);

/* An array by key, its elements of type elem (MATTN_GGUF_ANY: any):
 * MATTN_ERR_NOT_FOUND if absent, MATTN_ERR_FORMAT if not an array of elem.
 * (*out)->n is the length, (*out)->elem the element type. */
mattn_status mattn_gguf_get_arr(const mattn_gguf_file *f, const char *key, int elem, const mattn_gguf_value **out);
/* Element i of an array value, as a value of its own (a nested array too):
 * O(1) for fixed-size elements and for the strings/arrays of a top-level
 * array, a walk over the earlier elements inside a nested array.
 * MATTN_ERR_INVALID_ARG if arr is not an array or i is out of range.  out
 * may be arr (to walk down nested arrays). */
mattn_status mattn_gguf_arr_elem(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i,
                                 mattn_gguf_value *out);
/* Element i as a string (STRING elements only) / integer (any integer
 * type, as val_i64) / number (any integer or float type; 64-bit integers
 * beyond 2^53 round). */
mattn_status mattn_gguf_arr_str(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i, mattn_gguf_str *out);
mattn_status mattn_gguf_arr_i64(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i, int64_t *out);
mattn_status mattn_gguf_arr_f64(const mattn_gguf_file *f, const mattn_gguf_value *arr, uint64_t i, double *out);

/* s equals the NUL-terminated c (a convenience for views). */
int mattn_gguf_str_eq(mattn_gguf_str s, const char *c);

#endif
