/*
 * build_info.c — what this build of the library was compiled with
 * (metaattn.h, "Build information"), for reports: `metaattn bench` prints
 * it with its figures.
 */
#include "kernels/kernels.h"
#include "kernels/simd.h"

mattn_status mattn_build_info_get(mattn_build_info *out) {
    if (!out) return mattn_set_error(MATTN_ERR_INVALID_ARG, "mattn_build_info_get: out is NULL");
    memset(out, 0, sizeof *out);
    out->vector_bytes = MATTN_VBYTES;
    out->gemm = mattn_gemm_backend();
#ifdef _OPENMP
    out->openmp = 1;
#endif
    return MATTN_OK;
}
