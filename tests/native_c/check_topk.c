/*
 * Brute-force check of the C top-k kernels (native/csrc/topk.h), without Python, so that it runs
 * where there is no Python for the target: cross-compiled for aarch64 under qemu-aarch64.
 *
 *   cc -O2 -I native/csrc native/csrc/topk.c tests/native_c/check_topk.c -lm -o check_topk
 *   ./check_topk [SEED [RANDOM_CASES]]
 *
 * Every instruction-set path this CPU runs (PR_ISA_PORTABLE .. pr_best_isa()) is checked against a
 * reference written here over random and edge cases: ties broken by lower index, NaN scores never
 * returned, exclude masks shared and per query, k > n, n = 0, b = 0, padding with (-1, -inf), the
 * argument errors, and int8 results bit-exact (int32 sums, also at the largest D whose sums cannot
 * overflow). The screened float32 kernel (pr_topk_screened) gets the float32 cases with an int8
 * shadow built here as native/screen.py builds it, and must give the float32 answer. float32 cases with values on a 0.5 grid are compared exactly (every partial sum is
 * exact in any order); float32 cases with normal values are checked as a valid top-k within a
 * rounding tolerance. Prints one line per ISA; exits 1 at the first failures, 0 when all pass.
 * Only the public header is used.
 */
#include "topk.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* int8 codes are in [-127, 127] (pocketrec/native/int8.py); 133144 * 127 * 127 < 2^31. */
#define CODE_MAX 127
#define MAX_I8_DIM 133144

static uint64_t rng_state;
static int cur_isa;
static long n_cases;
static long n_failures;
static char case_name[256];

static uint64_t next_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [lo, hi]. */
static int64_t rand_int(int64_t lo, int64_t hi) {
    return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1));
}

static double rand_unit(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }

static float rand_normal(void) {
    double u = rand_unit(), v = rand_unit();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "check_topk: out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* One case: inputs, the kernel's outputs, and the reference.                                  */

typedef struct {
    int is_i8;
    int screened; /* float32 through pr_topk_screened */
    int exact;   /* float32 on the 0.5 grid, or int8: compare ids and scores exactly */
    int64_t n, d, b, k;
    float *items;          /* f32 [n, d] */
    float *queries;        /* f32 [b, d] */
    int8_t *codes;         /* i8 [n, d] */
    float *scales;         /* [n] */
    int8_t *qcodes;        /* [b, d] */
    float *qscales;        /* [b] */
    uint8_t *exclude;      /* NULL, [n] (stride 0) or [b, n] (stride n) */
    int64_t exclude_stride;
} case_t;

/* Reference scores of query i: float (as the kernel computes them when exact), double (for the
 * tolerance check) and the absolute-value sum that bounds the rounding error. */
static void ref_scores(const case_t *c, int64_t i, float *sf, double *sd, double *mag) {
    for (int64_t j = 0; j < c->n; j++) {
        if (c->is_i8) {
            int64_t acc = 0;
            for (int64_t t = 0; t < c->d; t++)
                acc += (int64_t)c->codes[j * c->d + t] * (int64_t)c->qcodes[i * c->d + t];
            if (acc > INT32_MAX || acc < INT32_MIN) {
                fprintf(stderr, "check_topk: a case overflows int32 (a bug in this driver)\n");
                exit(2);
            }
            sf[j] = (float)(int32_t)acc * c->scales[j]; /* the rank; ordered on it */
            sd[j] = sf[j];
            mag[j] = 0.0;
        } else {
            double s = 0.0, m = 0.0;
            float fs = 0.0f;
            for (int64_t t = 0; t < c->d; t++) {
                float x = c->items[j * c->d + t], q = c->queries[i * c->d + t];
                s += (double)x * (double)q;
                m += fabs((double)x * (double)q);
                fs += x * q;
            }
            sf[j] = fs;
            sd[j] = s;
            mag[j] = m;
        }
    }
}

static const float *sort_scores;

/* Best first: higher score, then lower index. */
static int by_rank(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    float sa = sort_scores[a], sb = sort_scores[b];
    if (sa > sb) return -1;
    if (sa < sb) return 1;
    return a < b ? -1 : (a > b);
}

/* The int8 shadow of a float32 catalog, as pocketrec.native.screen.screen_int8 builds it. */
typedef struct {
    uint8_t *packed;
    float *scales, *errs, *norms;
    float max_norm;
} shadow_t;

static float up_f(double v) {
    float f = (float)v;
    return (double)f < v ? nextafterf(f, INFINITY) : f;
}

static void build_shadow(const float *items, int64_t n, int64_t d, shadow_t *s) {
    const int64_t groups = (n + 15) / 16, cn = (d + 3) / 4;
    const double grow = 1.0 + 0x1p-20, rho = (double)(d + 16) * 0x1p-23;
    s->packed = xcalloc((size_t)(groups * cn * 64), 1);
    memset(s->packed, 128, (size_t)(groups * cn * 64));
    s->scales = xcalloc((size_t)(groups * 16), sizeof(float));
    s->errs = xcalloc((size_t)(groups * 16), sizeof(float));
    s->norms = xcalloc((size_t)(groups * 16), sizeof(float));
    int8_t *codes = xcalloc((size_t)d, 1);
    double max_norm = 0.0;
    for (int64_t j = 0; j < n; j++) {
        const float *v = items + j * d;
        float amax = 0.0f;
        int finite = 1;
        for (int64_t t = 0; t < d; t++) {
            finite &= isfinite(v[t]) != 0;
            amax = fabsf(v[t]) > amax ? fabsf(v[t]) : amax;
        }
        float scale = finite ? amax / (float)CODE_MAX : 0.0f;
        double e2 = 0.0, n2 = 0.0;
        for (int64_t t = 0; t < d; t++) {
            float c = scale > 0 ? rintf(v[t] / scale) : 0.0f;
            c = c > CODE_MAX ? CODE_MAX : (c < -CODE_MAX ? -CODE_MAX : c);
            codes[t] = (int8_t)c;
            double deq = (double)c * (double)scale, r = finite ? (double)v[t] - deq : 0.0;
            e2 += r * r;
            n2 += deq * deq;
        }
        double e = sqrt(e2), nrm = sqrt(n2), err = (e + rho * (nrm + e)) * grow;
        int bounded = finite && (scale == 0.0f || scale >= 1.175494351e-38f) &&
                      (nrm + err) * grow < 3.402823466e38;
        if (!bounded) {
            memset(codes, 0, (size_t)d);
            scale = 0.0f;
            err = INFINITY;
            nrm = 0.0;
        }
        for (int64_t t = 0; t < d; t++)
            s->packed[(j / 16) * cn * 64 + (t / 4) * 64 + (j % 16) * 4 + t % 4] =
                (uint8_t)(codes[t] + 128);
        s->scales[j] = scale;
        s->errs[j] = up_f(err);
        s->norms[j] = up_f(nrm * grow);
        if (bounded && (double)s->norms[j] + (double)s->errs[j] > max_norm)
            max_norm = (double)s->norms[j] + (double)s->errs[j];
    }
    s->max_norm = up_f(max_norm);
    free(codes);
}

static void free_shadow(shadow_t *s) { free(s->packed), free(s->scales), free(s->errs), free(s->norms); }

static int call_kernel(const case_t *c, int64_t *ids, float *scores, int64_t *counts) {
    if (c->is_i8)
        return pr_topk_i8(c->codes, c->scales, c->n, c->d, c->qcodes, c->qscales, c->b,
                          c->exclude, c->exclude_stride, c->k, cur_isa, ids, scores, counts);
    if (!c->screened)
        return pr_topk_f32(c->items, c->n, c->d, c->queries, c->b, c->exclude, c->exclude_stride,
                           c->k, cur_isa, ids, scores, counts);
    shadow_t s;
    build_shadow(c->items, c->n, c->d, &s);
    int64_t *cand = xcalloc((size_t)c->b, sizeof *cand);
    int rc = pr_topk_screened(c->items, s.packed, s.scales, s.errs, s.norms, s.max_norm, c->n,
                              c->d, c->queries, c->b, c->exclude, c->exclude_stride, c->k, cur_isa,
                              ids, scores, counts, cand);
    for (int64_t i = 0; rc == PR_OK && i < c->b; i++) {
        if (cand[i] < -1 || cand[i] > c->n) {
            fprintf(stderr, "FAIL isa %d, %s: query %lld reports %lld candidates\n", cur_isa,
                    case_name, (long long)i, (long long)cand[i]);
            n_failures++;
        }
    }
    free(cand);
    free_shadow(&s);
    return rc;
}

static void run_case(const case_t *c) {
    int64_t b = c->b, k = c->k, n = c->n;
    int64_t *ids = xcalloc((size_t)(b * k), sizeof *ids);
    float *scores = xcalloc((size_t)(b * k), sizeof *scores);
    int64_t *counts = xcalloc((size_t)b, sizeof *counts);
    for (int64_t j = 0; j < b * k; j++) { /* poison: every slot must be written */
        ids[j] = -7;
        scores[j] = 12345.0f;
    }
    for (int64_t i = 0; i < b; i++) counts[i] = -7;
    int rc = call_kernel(c, ids, scores, counts);
    float *sf = xcalloc((size_t)n, sizeof *sf);
    double *sd = xcalloc((size_t)n, sizeof *sd);
    double *mag = xcalloc((size_t)n, sizeof *mag);
    int64_t *order = xcalloc((size_t)n, sizeof *order);
    uint8_t *returned = xcalloc((size_t)n, 1);
    n_cases++;
    if (rc != PR_OK) {
        fprintf(stderr, "FAIL isa %d, %s: returned %d\n", cur_isa, case_name, rc);
        n_failures++;
        goto done;
    }
    for (int64_t i = 0; i < b; i++) {
        const uint8_t *ex = c->exclude ? c->exclude + i * c->exclude_stride : NULL;
        const int64_t *row_ids = ids + i * k;
        const float *row_sc = scores + i * k;
        ref_scores(c, i, sf, sd, mag);
        int64_t eligible = 0;
        for (int64_t j = 0; j < n; j++)
            if (!isnan(sf[j]) && !(ex && ex[j])) order[eligible++] = j;
        sort_scores = sf;
        qsort(order, (size_t)eligible, sizeof *order, by_rank);
        int64_t want = eligible < k ? eligible : k;
        float qs = c->is_i8 ? c->qscales[i] : 1.0f;
        if (counts[i] != want) {
            fprintf(stderr, "FAIL isa %d, %s: query %lld count %lld, want %lld\n", cur_isa,
                    case_name, (long long)i, (long long)counts[i], (long long)want);
            n_failures++;
            goto done;
        }
        for (int64_t j = want; j < k; j++) {
            if (row_ids[j] != -1 || !(isinf(row_sc[j]) && row_sc[j] < 0)) {
                fprintf(stderr, "FAIL isa %d, %s: query %lld slot %lld not padded (%lld, %g)\n",
                        cur_isa, case_name, (long long)i, (long long)j, (long long)row_ids[j],
                        (double)row_sc[j]);
                n_failures++;
                goto done;
            }
        }
        if (c->exact) {
            for (int64_t j = 0; j < want; j++) {
                float expect = sf[order[j]] * qs;
                if (row_ids[j] != order[j] || !(row_sc[j] == expect)) {
                    fprintf(stderr,
                            "FAIL isa %d, %s: query %lld rank %lld got (%lld, %.9g), want "
                            "(%lld, %.9g)\n",
                            cur_isa, case_name, (long long)i, (long long)j,
                            (long long)row_ids[j], (double)row_sc[j], (long long)order[j],
                            (double)expect);
                    n_failures++;
                    goto done;
                }
            }
            continue;
        }
        /* Tolerance check: a valid top-k of the exact scores within rounding. */
        memset(returned, 0, (size_t)n);
        double worst = INFINITY, worst_tol = 0.0;
        for (int64_t j = 0; j < want; j++) {
            int64_t id = row_ids[j];
            if (id < 0 || id >= n || returned[id] || isnan(sf[id]) || (ex && ex[id])) {
                fprintf(stderr, "FAIL isa %d, %s: query %lld rank %lld returned id %lld "
                                "(out of range, repeated, NaN or excluded)\n",
                        cur_isa, case_name, (long long)i, (long long)j, (long long)id);
                n_failures++;
                goto done;
            }
            returned[id] = 1;
            double tol = 1e-5 * mag[id] + 1e-30;
            if (fabs((double)row_sc[j] - sd[id]) > tol) {
                fprintf(stderr, "FAIL isa %d, %s: query %lld id %lld score %.9g, exact %.9g\n",
                        cur_isa, case_name, (long long)i, (long long)id, (double)row_sc[j],
                        sd[id]);
                n_failures++;
                goto done;
            }
            if (j > 0 && (row_sc[j] > row_sc[j - 1] ||
                          (row_sc[j] == row_sc[j - 1] && id < row_ids[j - 1]))) {
                fprintf(stderr, "FAIL isa %d, %s: query %lld out of order at rank %lld\n",
                        cur_isa, case_name, (long long)i, (long long)j);
                n_failures++;
                goto done;
            }
            if (sd[id] < worst) {
                worst = sd[id];
                worst_tol = tol;
            }
        }
        for (int64_t e = 0; e < eligible; e++) {
            int64_t id = order[e];
            if (!returned[id] && want == k && sd[id] > worst + worst_tol + 1e-5 * mag[id]) {
                fprintf(stderr, "FAIL isa %d, %s: query %lld left out id %lld (%.9g > %.9g)\n",
                        cur_isa, case_name, (long long)i, (long long)id, sd[id], worst);
                n_failures++;
                goto done;
            }
        }
    }
done:
    free(ids), free(scores), free(counts), free(sf), free(sd), free(mag), free(order);
    free(returned);
    if (n_failures >= 10) exit(1);
}

/* ------------------------------------------------------------------------------------------ */
/* Case builders.                                                                              */

static void alloc_case(case_t *c, int is_i8, int exact, int64_t n, int64_t d, int64_t b,
                       int64_t k) {
    memset(c, 0, sizeof *c);
    c->is_i8 = is_i8;
    c->exact = exact;
    c->n = n, c->d = d, c->b = b, c->k = k;
    if (is_i8) {
        c->codes = xcalloc((size_t)(n * d), 1);
        c->scales = xcalloc((size_t)n, sizeof(float));
        c->qcodes = xcalloc((size_t)(b * d), 1);
        c->qscales = xcalloc((size_t)b, sizeof(float));
    } else {
        c->items = xcalloc((size_t)(n * d), sizeof(float));
        c->queries = xcalloc((size_t)(b * d), sizeof(float));
    }
}

static void free_case(case_t *c) {
    free(c->items), free(c->queries), free(c->codes), free(c->scales), free(c->qcodes);
    free(c->qscales), free(c->exclude);
}

/* exclude: 0 none, 1 one shared mask, 2 one mask per query; each item flagged with p. */
static void set_exclude(case_t *c, int mode, double p) {
    if (mode == 0) return;
    int64_t rows = mode == 1 ? 1 : c->b;
    c->exclude_stride = mode == 1 ? 0 : c->n;
    c->exclude = xcalloc((size_t)(rows * c->n), 1);
    for (int64_t j = 0; j < rows * c->n; j++) c->exclude[j] = rand_unit() < p ? 1 : 0;
}

static float grid_value(int spread) { return 0.5f * (float)rand_int(-spread, spread); }

/* Fill a case with random values; spread small gives many ties. */
static void fill_random(case_t *c, int spread, double nan_rows, double inf_rows) {
    for (int64_t j = 0; j < c->n; j++) {
        if (c->is_i8) {
            for (int64_t t = 0; t < c->d; t++)
                c->codes[j * c->d + t] = (int8_t)rand_int(-spread, spread);
            double u = rand_unit();
            c->scales[j] = u < nan_rows ? NAN
                           : u < nan_rows + inf_rows ? INFINITY
                           : rand_unit() < 0.05 ? 0.0f
                                                : (float)(0.001 + rand_unit() * 0.02);
        } else {
            for (int64_t t = 0; t < c->d; t++)
                c->items[j * c->d + t] = c->exact ? grid_value(spread) : rand_normal();
            double u = rand_unit();
            int64_t at = rand_int(0, c->d - 1);
            if (u < nan_rows) c->items[j * c->d + at] = NAN;
            /* one infinite entry: +-inf score, or NaN when the query is 0 there */
            else if (u < nan_rows + inf_rows)
                c->items[j * c->d + at] = rand_unit() < 0.5 ? INFINITY : -INFINITY;
        }
    }
    for (int64_t i = 0; i < c->b; i++) {
        if (c->is_i8) {
            for (int64_t t = 0; t < c->d; t++)
                c->qcodes[i * c->d + t] = (int8_t)rand_int(-spread, spread);
            c->qscales[i] = (float)(0.001 + rand_unit() * 0.02);
        } else {
            for (int64_t t = 0; t < c->d; t++)
                c->queries[i * c->d + t] = c->exact ? grid_value(spread) : rand_normal();
        }
    }
}

static int64_t pick(const int64_t *choices, size_t count) {
    return choices[next_u64() % count];
}

static void random_case(long iter) {
    static const int64_t ns[] = {0, 1, 2, 3, 7, 64, 255, 256, 257, 511, 513, 1000, 2500};
    static const int64_t ds[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129};
    static const int64_t bs[] = {1, 1, 1, 2, 3, 5, 17, 63, 64, 65, 130};
    int is_i8 = iter % 3 == 1, screened = iter % 3 == 2;
    int exact = is_i8 || rand_unit() < 0.6;
    int64_t n = pick(ns, sizeof ns / sizeof *ns);
    if (rand_unit() < 0.3) n = rand_int(0, 600);
    int64_t d = pick(ds, sizeof ds / sizeof *ds);
    int64_t b = pick(bs, sizeof bs / sizeof *bs);
    while (b > 1 && n * d * b > 2000000) b /= 2; /* n * d <= 2500 * 129 */
    int64_t k;
    double u = rand_unit();
    k = u < 0.3 ? rand_int(1, 10) : u < 0.5 ? n + rand_int(1, 5) : u < 0.6 ? (n > 0 ? n : 1)
        : rand_int(1, n + 1);
    int spread = rand_unit() < 0.5 ? 2 : (is_i8 ? CODE_MAX : 8);
    case_t c;
    alloc_case(&c, is_i8, exact, n, d, b, k);
    c.screened = screened;
    double nan_rows = rand_unit() < 0.3 ? 0.1 : 0.0;
    double inf_rows = rand_unit() < 0.2 ? 0.05 : 0.0;
    fill_random(&c, spread, nan_rows, inf_rows);
    int mode = (int)rand_int(0, 2);
    double density = (double[]){0.0, 0.1, 0.5, 0.95, 1.0}[rand_int(0, 4)];
    set_exclude(&c, mode, density);
    snprintf(case_name, sizeof case_name,
             "random case %ld (%s%s, n=%lld d=%lld b=%lld k=%lld spread=%d nan=%.2f inf=%.2f "
             "exclude=%d/%.2f)",
             iter, is_i8 ? "int8" : (screened ? "screened" : "float32"), exact ? " exact" : "", (long long)n,
             (long long)d, (long long)b, (long long)k, spread, nan_rows, inf_rows, mode, density);
    run_case(&c);
    free_case(&c);
}

/* Every item scores the same: the k lowest eligible indices, in order. */
static void all_ties_case(int kind, int64_t n, int64_t k, int exclude_mode) {
    const int is_i8 = kind == 1;
    case_t c;
    alloc_case(&c, is_i8, 1, n, 5, 3, k);
    c.screened = kind == 2;
    for (int64_t j = 0; j < n * 5; j++) {
        if (is_i8) c.codes[j] = 3;
        else c.items[j] = 1.5f;
    }
    for (int64_t j = 0; j < 3 * 5; j++) {
        if (is_i8) c.qcodes[j] = -2;
        else c.queries[j] = -0.5f;
    }
    if (is_i8) {
        for (int64_t j = 0; j < n; j++) c.scales[j] = 0.25f;
        for (int64_t i = 0; i < 3; i++) c.qscales[i] = 0.5f;
    }
    set_exclude(&c, exclude_mode, 0.3);
    snprintf(case_name, sizeof case_name, "all ties (%s, n=%lld k=%lld exclude=%d)",
             is_i8 ? "int8" : (c.screened ? "screened" : "float32"), (long long)n, (long long)k,
             exclude_mode);
    run_case(&c);
    free_case(&c);
}

/* Every score NaN, or every item excluded: nothing returned, rows padded. */
static void nothing_eligible_case(int kind, int nan) {
    const int is_i8 = kind == 1;
    case_t c;
    alloc_case(&c, is_i8, 1, 300, 4, 2, 7);
    c.screened = kind == 2;
    fill_random(&c, 2, nan ? 1.0 : 0.0, 0.0);
    if (!nan) set_exclude(&c, 1, 1.0);
    snprintf(case_name, sizeof case_name, "nothing eligible (%s, %s)",
             is_i8 ? "int8" : (c.screened ? "screened" : "float32"),
             nan ? "all NaN" : "all excluded");
    run_case(&c);
    free_case(&c);
}

/* int8 at the largest D: sums of +-127 * +-127 reach +-2,147,479,576 and must stay exact. */
static void int8_extreme_case(void) {
    case_t c;
    int64_t d = MAX_I8_DIM;
    alloc_case(&c, 1, 1, 6, d, 2, 6);
    for (int64_t t = 0; t < d; t++) {
        c.codes[0 * d + t] = CODE_MAX;
        c.codes[1 * d + t] = -CODE_MAX;
        c.codes[2 * d + t] = (int8_t)(t % 2 ? CODE_MAX : -CODE_MAX);
        c.codes[3 * d + t] = (int8_t)(t == 0 ? 1 : CODE_MAX);
        c.codes[4 * d + t] = (int8_t)(t % 3 - 1);
        c.codes[5 * d + t] = CODE_MAX;
        c.qcodes[t] = CODE_MAX;
        c.qcodes[d + t] = -CODE_MAX;
    }
    for (int64_t j = 0; j < 6; j++) c.scales[j] = 1.0f;
    c.scales[5] = 0.5f;
    c.qscales[0] = c.qscales[1] = 1.0f;
    snprintf(case_name, sizeof case_name, "int8 at D=%d with codes +-%d", MAX_I8_DIM, CODE_MAX);
    run_case(&c);
    free_case(&c);
}

/* Argument errors, b = 0 with NULL outputs, n = 0. */
static void argument_cases(void) {
    float items[6] = {1, 2, 3, 4, 5, 6}, q[2] = {1, 1}, sc[4], qs[1] = {1};
    int8_t codes[6] = {1, 2, 3, 4, 5, 6}, qc[2] = {1, 1};
    float scales[16] = {1, 1, 1};
    uint8_t pk[64] = {0};
    int64_t ids[4], counts[2];
    uint8_t ex[3] = {0, 0, 0};
    struct {
        const char *what;
        int got, want;
    } checks[] = {
        {"f32 k=0", pr_topk_f32(items, 3, 2, q, 1, NULL, 0, 0, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 k<0", pr_topk_f32(items, 3, 2, q, 1, NULL, 0, -1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 d=0", pr_topk_f32(items, 3, 0, q, 1, NULL, 0, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 n<0", pr_topk_f32(items, -1, 2, q, 1, NULL, 0, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 b<0", pr_topk_f32(items, 3, 2, q, -1, NULL, 0, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 stride", pr_topk_f32(items, 3, 2, q, 1, ex, 2, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"f32 NULL items", pr_topk_f32(NULL, 3, 2, q, 1, NULL, 0, 1, cur_isa, ids, sc, counts),
         PR_E_ARG},
        {"f32 NULL out", pr_topk_f32(items, 3, 2, q, 1, NULL, 0, 1, cur_isa, NULL, sc, counts),
         PR_E_ARG},
        {"f32 isa -1", pr_topk_f32(items, 3, 2, q, 1, NULL, 0, 1, -1, ids, sc, counts), PR_E_ISA},
        {"f32 isa above best",
         pr_topk_f32(items, 3, 2, q, 1, NULL, 0, 1, pr_best_isa() + 1, ids, sc, counts), PR_E_ISA},
        {"f32 b=0, NULL outputs",
         pr_topk_f32(items, 3, 2, NULL, 0, NULL, 0, 1, cur_isa, NULL, NULL, NULL), PR_OK},
        {"i8 k=0",
         pr_topk_i8(codes, scales, 3, 2, qc, qs, 1, NULL, 0, 0, cur_isa, ids, sc, counts), PR_E_ARG},
        {"i8 stride",
         pr_topk_i8(codes, scales, 3, 2, qc, qs, 1, ex, 1, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"i8 NULL scales",
         pr_topk_i8(codes, NULL, 3, 2, qc, qs, 1, NULL, 0, 1, cur_isa, ids, sc, counts), PR_E_ARG},
        {"i8 NULL qscales",
         pr_topk_i8(codes, scales, 3, 2, qc, NULL, 1, NULL, 0, 1, cur_isa, ids, sc, counts),
         PR_E_ARG},
        {"i8 isa above best",
         pr_topk_i8(codes, scales, 3, 2, qc, qs, 1, NULL, 0, 1, pr_best_isa() + 1, ids, sc, counts),
         PR_E_ISA},
        {"screened d too large",
         pr_topk_screened(items, pk, scales, scales, scales, 1.0f, 1, PR_SCREEN_MAX_DIM + 1, q, 1,
                          NULL, 0, 1, cur_isa, ids, sc, counts, NULL),
         PR_E_ARG},
        {"screened NULL packed",
         pr_topk_screened(items, NULL, scales, scales, scales, 1.0f, 3, 2, q, 1, NULL, 0, 1,
                          cur_isa, ids, sc, counts, NULL),
         PR_E_ARG},
        {"screened isa above best",
         pr_topk_screened(items, pk, scales, scales, scales, 1.0f, 3, 2, q, 1, NULL, 0, 1,
                          pr_best_isa() + 1, ids, sc, counts, NULL),
         PR_E_ISA},
        {"i8 b=0, NULL outputs",
         pr_topk_i8(codes, scales, 3, 2, NULL, NULL, 0, NULL, 0, 1, cur_isa, NULL, NULL, NULL),
         PR_OK},
    };
    for (size_t j = 0; j < sizeof checks / sizeof *checks; j++) {
        n_cases++;
        if (checks[j].got != checks[j].want) {
            fprintf(stderr, "FAIL isa %d, argument check %s: returned %d, want %d\n", cur_isa,
                    checks[j].what, checks[j].got, checks[j].want);
            if (++n_failures >= 10) exit(1);
        }
    }
    /* n = 0: nothing to return, every row padded (run_case checks it). */
    for (int is_i8 = 0; is_i8 < 2; is_i8++) {
        case_t c;
        alloc_case(&c, is_i8, 1, 0, 3, 2, 4);
        fill_random(&c, 2, 0.0, 0.0);
        snprintf(case_name, sizeof case_name, "n=0 (%s)", is_i8 ? "int8" : "float32");
        run_case(&c);
        free_case(&c);
    }
}

static const char *isa_name(int isa) {
    switch (isa) {
    case PR_ISA_PORTABLE: return "portable";
    case PR_ISA_AVX2: return "avx2";
    case PR_ISA_AVX512: return "avx512";
    default: return "other";
    }
}

int main(int argc, char **argv) {
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 20261202;
    long random_cases = argc > 2 ? strtol(argv[2], NULL, 10) : 600;
    int best = pr_best_isa();
    printf("best isa %d (%s)\n", best, isa_name(best));
    for (cur_isa = PR_ISA_PORTABLE; cur_isa <= best; cur_isa++) {
        rng_state = seed; /* the same cases on every path */
        n_cases = 0;
        argument_cases();
        for (int kind = 0; kind < 3; kind++) { /* float32, int8, screened */
            static const int64_t ns[] = {1, 5, 255, 256, 257, 700};
            static const int64_t ks[] = {1, 3, 256, 1000};
            for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
                for (size_t z = 0; z < sizeof ks / sizeof *ks; z++)
                    for (int mode = 0; mode < 3; mode++) all_ties_case(kind, ns[a], ks[z], mode);
            nothing_eligible_case(kind, 1);
            nothing_eligible_case(kind, 0);
        }
        int8_extreme_case();
        for (long iter = 0; iter < random_cases; iter++) random_case(iter);
        if (n_failures > 0) {
            fprintf(stderr, "isa %d (%s): %ld failures\n", cur_isa, isa_name(cur_isa), n_failures);
            return 1;
        }
        printf("isa %d (%s): %ld cases passed\n", cur_isa, isa_name(cur_isa), n_cases);
    }
    return 0;
}
