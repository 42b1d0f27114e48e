/*
 * pocketrec native top-k: fused inner product + bounded top-k selection over a catalog.
 *
 * This header is both the C interface and the cffi cdef: native/csrc/build_cffi.py strips the
 * preprocessor lines and feeds the rest to ffi.cdef(), so keep it to plain declarations.
 *
 * Conventions shared by both kernels
 *   items      row-major [n, d]; queries row-major [b, d].
 *   exclude    NULL, or uint8 flags (nonzero = never return that item): exclude_stride == 0 means
 *              one mask [n] shared by every query, exclude_stride == n means one row per query.
 *   out_ids    int64 [b, k], out_scores float32 [b, k], out_counts int64 [b]: per query the best
 *              min(k, eligible) items, best first, ties broken by lower index; the rest of the row
 *              is padded with id -1 and score -inf. Items whose score is NaN are never returned.
 *   isa        one of PR_ISA_*; must be <= pr_best_isa(), or PR_E_ISA is returned. PORTABLE is
 *              plain C; AVX2 needs AVX2+FMA; AVX512 needs AVX-512 F/BW (float32 with 512-bit FMA;
 *              int8 with VNNI where the CPU has it, else the AVX2 int8 code). Which path is
 *              fastest is decided by measurement in native/c_backend.py, not here.
 *   b >= 2     float32 batches use a kernel that scores up to 32 queries per pass over the
 *              catalog; its float32 sums are rounded in another order than the single-query
 *              kernel's (both within the tests' tolerance of the numpy reference).
 * Return value: PR_OK, or a negative PR_E_* code (PR_E_MEM: scratch memory could not be
 * allocated); outputs are unspecified on error.
 * Thread safety: the functions keep no state; concurrent calls on shared inputs are safe.
 */
#ifndef POCKETREC_TOPK_H
#define POCKETREC_TOPK_H

#include <stdint.h>

#define PR_OK 0
#define PR_E_ARG -1
#define PR_E_ISA -2
#define PR_E_MEM -3

#define PR_ISA_PORTABLE 0
#define PR_ISA_AVX2 1
#define PR_ISA_AVX512 2

/* Best instruction set this CPU and OS support (PR_ISA_*), probed once at run time. */
int pr_best_isa(void);

/* 1 when the PR_ISA_AVX512 int8 path uses VNNI (vpdpbusd), 0 when it runs the AVX2 int8 code. */
int pr_int8_vnni(void);

/* float32: score[j] = sum_t items[j, t] * query[t]. */
int pr_topk_f32(const float *items, int64_t n, int64_t d,
                const float *queries, int64_t b,
                const uint8_t *exclude, int64_t exclude_stride,
                int64_t k, int isa,
                int64_t *out_ids, float *out_scores, int64_t *out_counts);

/* int8: rank[j] = (float)(sum_t codes[j, t] * qcodes[t]) * scales[j] (int32 accumulation, exact),
 * reported score = rank[j] * qscale. Ties and order are decided on rank[j]. */
int pr_topk_i8(const int8_t *codes, const float *scales, int64_t n, int64_t d,
               const int8_t *qcodes, const float *qscales, int64_t b,
               const uint8_t *exclude, int64_t exclude_stride,
               int64_t k, int isa,
               int64_t *out_ids, float *out_scores, int64_t *out_counts);

/* Largest D of pr_topk_screened: int32 sums of D products of codes in [-127, 127] are exact. */
#define PR_SCREEN_MAX_DIM 133144

/* Screened float32: the same result as pr_topk_f32 (same ids and float32 scores up to the
 * summation order), found by an int8 pre-screen with a certified error bound and a float32
 * rescore of the few candidates (native/screen.py derives the bound and builds the inputs).
 *   items     the float32 catalog [n, d]; packed, scales, errs, norms: its int8 shadow from
 *             pocketrec.native.screen_int8: packed uint8 [ceil(n/16), ceil(d/4), 16, 4] (code + 128,
 *             16 rows interleaved in 4-byte groups), scales, errs (the error term, +inf for rows
 *             that are always candidates) and norms float32 [ceil(n/16) * 16]; max_norm bounds
 *             every finite row's norm. d <= PR_SCREEN_MAX_DIM.
 *   out_candidates  NULL, or int64 [b]: rows rescored in float32 per query (-1: the query was
 *             answered by the plain scan, e.g. a zero query or a catalog of ties).
 * Other arguments and outputs as pr_topk_f32. */
int pr_topk_screened(const float *items, const uint8_t *packed, const float *scales,
                     const float *errs, const float *norms, float max_norm, int64_t n, int64_t d,
                     const float *queries, int64_t b, const uint8_t *exclude,
                     int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids,
                     float *out_scores, int64_t *out_counts, int64_t *out_candidates);

#endif
