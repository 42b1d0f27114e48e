/*
 * Broken kernels that check_topk.c must reject (tests/test_native_c.py): this file wraps the real
 * kernels, compiled with -Dpr_topk_f32=real_pr_topk_f32 -Dpr_topk_i8=real_pr_topk_i8
 * -Dpr_topk_screened=real_pr_topk_screened, and breaks
 * their results through the public API in the way the environment variable PR_MUTANT names:
 *
 *   ties      swap the first two results of a row when their scores are equal
 *   exclude   ignore the exclude mask
 *   nan       return an item whose float32 score is NaN
 *   padding   pad rows with score 0 instead of -inf
 *   int8      report int8 scores one float step too high
 *
 * Unset, the wrapper passes everything through unchanged.
 */
#include "topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int real_pr_topk_f32(const float *items, int64_t n, int64_t d, const float *queries, int64_t b,
                     const uint8_t *exclude, int64_t exclude_stride, int64_t k, int isa,
                     int64_t *out_ids, float *out_scores, int64_t *out_counts);
int real_pr_topk_i8(const int8_t *codes, const float *scales, int64_t n, int64_t d,
                    const int8_t *qcodes, const float *qscales, int64_t b,
                    const uint8_t *exclude, int64_t exclude_stride, int64_t k, int isa,
                    int64_t *out_ids, float *out_scores, int64_t *out_counts);

int real_pr_topk_screened(const float *items, const uint8_t *packed, const float *scales,
                          const float *errs, const float *norms, float max_norm, int64_t n,
                          int64_t d, const float *queries, int64_t b, const uint8_t *exclude,
                          int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids,
                          float *out_scores, int64_t *out_counts, int64_t *out_candidates);

static int mutant(const char *name) {
    const char *m = getenv("PR_MUTANT");
    return m != NULL && strcmp(m, name) == 0;
}

static void break_rows(int64_t b, int64_t k, int64_t *ids, float *scores, int64_t *counts) {
    for (int64_t i = 0; i < b; i++) {
        int64_t *row_ids = ids + i * k;
        float *row_sc = scores + i * k;
        if (mutant("ties") && counts[i] >= 2 && row_sc[0] == row_sc[1]) {
            int64_t t = row_ids[0];
            row_ids[0] = row_ids[1];
            row_ids[1] = t;
        }
        if (mutant("padding"))
            for (int64_t j = counts[i]; j < k; j++) row_sc[j] = 0.0f;
        if (mutant("int8"))
            for (int64_t j = 0; j < counts[i]; j++) row_sc[j] = nextafterf(row_sc[j], INFINITY);
    }
}

int pr_topk_f32(const float *items, int64_t n, int64_t d, const float *queries, int64_t b,
                const uint8_t *exclude, int64_t exclude_stride, int64_t k, int isa,
                int64_t *out_ids, float *out_scores, int64_t *out_counts) {
    if (mutant("exclude") && (exclude_stride == 0 || exclude_stride == n)) exclude = NULL;
    int rc = real_pr_topk_f32(items, n, d, queries, b, exclude, exclude_stride, k, isa, out_ids,
                              out_scores, out_counts);
    if (rc != PR_OK) return rc;
    if (!mutant("int8")) break_rows(b, k, out_ids, out_scores, out_counts);
    if (mutant("nan")) {
        for (int64_t j = 0; j < n; j++) {
            int has_nan = 0;
            for (int64_t t = 0; t < d; t++) has_nan |= isnan(items[j * d + t]);
            if (!has_nan) continue;
            for (int64_t i = 0; i < b; i++) {
                int64_t slot = out_counts[i] < k ? out_counts[i]++ : k - 1;
                out_ids[i * k + slot] = j;
                out_scores[i * k + slot] = NAN;
            }
            break;
        }
    }
    return rc;
}

int pr_topk_i8(const int8_t *codes, const float *scales, int64_t n, int64_t d,
               const int8_t *qcodes, const float *qscales, int64_t b, const uint8_t *exclude,
               int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids, float *out_scores,
               int64_t *out_counts) {
    if (mutant("exclude") && (exclude_stride == 0 || exclude_stride == n)) exclude = NULL;
    int rc = real_pr_topk_i8(codes, scales, n, d, qcodes, qscales, b, exclude, exclude_stride, k,
                             isa, out_ids, out_scores, out_counts);
    if (rc == PR_OK) break_rows(b, k, out_ids, out_scores, out_counts);
    return rc;
}

int pr_topk_screened(const float *items, const uint8_t *packed, const float *scales,
                     const float *errs, const float *norms, float max_norm, int64_t n, int64_t d,
                     const float *queries, int64_t b, const uint8_t *exclude,
                     int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids,
                     float *out_scores, int64_t *out_counts, int64_t *out_candidates) {
    if (mutant("exclude") && (exclude_stride == 0 || exclude_stride == n)) exclude = NULL;
    int rc = real_pr_topk_screened(items, packed, scales, errs, norms, max_norm, n, d, queries, b,
                                   exclude, exclude_stride, k, isa, out_ids, out_scores,
                                   out_counts, out_candidates);
    if (rc == PR_OK && !mutant("int8")) break_rows(b, k, out_ids, out_scores, out_counts);
    return rc;
}
