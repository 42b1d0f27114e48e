/*
 * pocketrec native top-k (see topk.h for the contract).
 *
 * Layout of the work: the catalog is scanned once in blocks of BLOCK rows; for every query the
 * block's scores are computed into a small stack buffer by an ISA-specific dot kernel and then
 * offered to that query's bounded heap, which lives directly in the caller's output arrays.
 * Rows are visited in increasing index order, so a new item only displaces the heap's worst entry
 * when its score is strictly greater: that is exactly "equal scores are ordered by lower index".
 *
 * ISA paths: a portable path (plain C written so that the compiler vectorizes it, also for ARM),
 * AVX2+FMA (float32, and int8 through 16-bit multiply-add), and AVX-512 VNNI (int8 through
 * vpdpbusd). The x86 paths are compiled with per-function target attributes and only called after
 * a run-time CPU check, so the binary still runs on CPUs without them.
 */
#include "topk.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define PR_X86 1
#include <immintrin.h>
#else
#define PR_X86 0
#endif

#define BLOCK 256

/* ------------------------------------------------------------------------------------------ */
/* Bounded heap of the k best (score, id) pairs; the root is the worst kept entry.             */

typedef struct {
    float *s;
    int64_t *id;
    int64_t size;
    int64_t cap;
} heap_t;

/* a ranks below b: lower score, or equal score and higher index. */
static inline int pr_worse(float sa, int64_t ia, float sb, int64_t ib) {
    return sa < sb || (sa == sb && ia > ib);
}

static void heap_sift_down(heap_t *h, int64_t pos) {
    float s = h->s[pos];
    int64_t id = h->id[pos];
    for (;;) {
        int64_t child = 2 * pos + 1;
        if (child >= h->size) break;
        if (child + 1 < h->size &&
            pr_worse(h->s[child + 1], h->id[child + 1], h->s[child], h->id[child]))
            child++;
        if (!pr_worse(h->s[child], h->id[child], s, id)) break;
        h->s[pos] = h->s[child];
        h->id[pos] = h->id[child];
        pos = child;
    }
    h->s[pos] = s;
    h->id[pos] = id;
}

static void heap_push(heap_t *h, float s, int64_t id) {
    int64_t pos = h->size++;
    while (pos > 0) {
        int64_t parent = (pos - 1) / 2;
        if (!pr_worse(s, id, h->s[parent], h->id[parent])) break;
        h->s[pos] = h->s[parent];
        h->id[pos] = h->id[parent];
        pos = parent;
    }
    h->s[pos] = s;
    h->id[pos] = id;
}

/* Offer the scores of rows [base, base + cnt) to the heap. block_max is the largest non-NaN
 * score of the block (excluded rows included): when the heap is full and nothing in the block can
 * beat its worst entry, the block is skipped without looking at its rows. */
static void select_block(heap_t *h, const float *sc, int64_t base, int64_t cnt,
                         const uint8_t *ex, float block_max) {
    if (h->size == h->cap && !(block_max > h->s[0])) return;
    for (int64_t j = 0; j < cnt; j++) {
        float s = sc[j];
        if (s != s) continue; /* NaN: never returned */
        if (ex != NULL && ex[base + j]) continue;
        if (h->size < h->cap) {
            heap_push(h, s, base + j);
        } else if (s > h->s[0]) {
            h->s[0] = s;
            h->id[0] = base + j;
            heap_sift_down(h, 0);
        }
    }
}

/* Sort the heap best-first in place and pad the rest of the row with (-1, -inf). */
static void heap_finish(heap_t *h, int64_t *count) {
    int64_t n = h->size;
    *count = n;
    while (h->size > 1) {
        int64_t last = h->size - 1;
        float s = h->s[0];
        int64_t id = h->id[0];
        h->s[0] = h->s[last];
        h->id[0] = h->id[last];
        h->s[last] = s;
        h->id[last] = id;
        h->size--;
        heap_sift_down(h, 0);
    }
    for (int64_t j = n; j < h->cap; j++) {
        h->s[j] = -INFINITY;
        h->id[j] = -1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Block maximum (NaN ignored; -inf for an empty or all-NaN block).                            */

typedef float (*max_fn)(const float *sc, int64_t cnt);

static float block_max_portable(const float *sc, int64_t cnt) {
    float m = -INFINITY;
    for (int64_t j = 0; j < cnt; j++) m = sc[j] > m ? sc[j] : m;
    return m;
}

/* ------------------------------------------------------------------------------------------ */
/* Dot kernels: out[j] = <rows[j], q> for j < cnt.                                             */

typedef void (*dots_f32_fn)(const float *rows, int64_t cnt, int64_t d, const float *q, float *out);
typedef void (*dots_i8_fn)(const int8_t *rows, int64_t cnt, int64_t d, const int8_t *q,
                           int32_t qsum, int32_t *out);

static void dots_f32_portable(const float *rows, int64_t cnt, int64_t d, const float *q,
                              float *out) {
    for (int64_t j = 0; j < cnt; j++) {
        const float *r = rows + j * d;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t t = 0;
        for (; t + 8 <= d; t += 8)
            for (int u = 0; u < 8; u++) acc[u] += r[t + u] * q[t + u];
        float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; t < d; t++) s += r[t] * q[t];
        out[j] = s;
    }
}

static void dots_i8_portable(const int8_t *rows, int64_t cnt, int64_t d, const int8_t *q,
                             int32_t qsum, int32_t *out) {
    (void)qsum;
    for (int64_t j = 0; j < cnt; j++) {
        const int8_t *r = rows + j * d;
        int32_t acc = 0;
        for (int64_t t = 0; t < d; t++) acc += (int32_t)r[t] * (int32_t)q[t];
        out[j] = acc;
    }
}

#if PR_X86

#define PR_AVX2 __attribute__((target("avx2,fma")))
#define PR_AVX512VNNI __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))

/* Sum each of eight __m256 accumulators: returns [sum(a0), ..., sum(a7)]. */
PR_AVX2 static inline __m256 hsum8_ps(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4,
                                      __m256 a5, __m256 a6, __m256 a7) {
    __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

PR_AVX2 static inline __m256i hsum8_epi32(__m256i a0, __m256i a1, __m256i a2, __m256i a3,
                                          __m256i a4, __m256i a5, __m256i a6, __m256i a7) {
    __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a4, a5), _mm256_hadd_epi32(a6, a7));
    return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                            _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* max_ps(x, m) returns m when x is NaN, so NaN scores never raise the maximum. */
PR_AVX2 static float block_max_avx2(const float *sc, int64_t cnt) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= cnt; j += 8) m = _mm256_max_ps(_mm256_loadu_ps(sc + j), m);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; j < cnt; j++) r = sc[j] > r ? sc[j] : r;
    return r;
}

PR_AVX2 static inline float hsum_ps(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

PR_AVX2 static void dots_f32_avx2(const float *rows, int64_t cnt, int64_t d, const float *q,
                                  float *out) {
    const int64_t dv = d & ~(int64_t)7;
    const int rem = (int)(d - dv);
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 qtail = _mm256_maskload_ps(q + dv, tail);
    int64_t j = 0;
    for (; j + 8 <= cnt; j += 8) {
        const float *r = rows + j * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
               a7 = a0;
        for (int64_t t = 0; t < dv; t += 8) {
            __m256 qv = _mm256_loadu_ps(q + t);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + t), qv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + d + t), qv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 2 * d + t), qv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 3 * d + t), qv, a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 4 * d + t), qv, a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 5 * d + t), qv, a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 6 * d + t), qv, a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 7 * d + t), qv, a7);
        }
        if (rem) {
            a0 = _mm256_fmadd_ps(_mm256_maskload_ps(r + dv, tail), qtail, a0);
            a1 = _mm256_fmadd_ps(_mm256_maskload_ps(r + d + dv, tail), qtail, a1);
            a2 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 2 * d + dv, tail), qtail, a2);
            a3 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 3 * d + dv, tail), qtail, a3);
            a4 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 4 * d + dv, tail), qtail, a4);
            a5 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 5 * d + dv, tail), qtail, a5);
            a6 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 6 * d + dv, tail), qtail, a6);
            a7 = _mm256_fmadd_ps(_mm256_maskload_ps(r + 7 * d + dv, tail), qtail, a7);
        }
        _mm256_storeu_ps(out + j, hsum8_ps(a0, a1, a2, a3, a4, a5, a6, a7));
    }
    for (; j < cnt; j++) {
        const float *r = rows + j * d;
        __m256 a = _mm256_setzero_ps();
        for (int64_t t = 0; t < dv; t += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(r + t), _mm256_loadu_ps(q + t), a);
        if (rem) a = _mm256_fmadd_ps(_mm256_maskload_ps(r + dv, tail), qtail, a);
        out[j] = hsum_ps(a);
    }
}

/* int8 via sign extension to 16 bits and vpmaddwd (exact int32 sums, no saturation). */
PR_AVX2 static void dots_i8_avx2(const int8_t *rows, int64_t cnt, int64_t d, const int8_t *q,
                                 int32_t qsum, int32_t *out) {
    (void)qsum;
    const int64_t dv = d & ~(int64_t)15;
    int64_t j = 0;
#define PR_LD16(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p)))
    for (; j + 8 <= cnt; j += 8) {
        const int8_t *r = rows + j * d;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
                a6 = a0, a7 = a0;
        for (int64_t t = 0; t < dv; t += 16) {
            __m256i qv = PR_LD16(q + t);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(PR_LD16(r + t), qv));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(PR_LD16(r + d + t), qv));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(PR_LD16(r + 2 * d + t), qv));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(PR_LD16(r + 3 * d + t), qv));
            a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(PR_LD16(r + 4 * d + t), qv));
            a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(PR_LD16(r + 5 * d + t), qv));
            a6 = _mm256_add_epi32(a6, _mm256_madd_epi16(PR_LD16(r + 6 * d + t), qv));
            a7 = _mm256_add_epi32(a7, _mm256_madd_epi16(PR_LD16(r + 7 * d + t), qv));
        }
        _mm256_storeu_si256((__m256i *)(out + j), hsum8_epi32(a0, a1, a2, a3, a4, a5, a6, a7));
        if (dv < d)
            for (int u = 0; u < 8; u++)
                for (int64_t t = dv; t < d; t++)
                    out[j + u] += (int32_t)r[u * d + t] * (int32_t)q[t];
    }
#undef PR_LD16
    dots_i8_portable(rows + j * d, cnt - j, d, q, qsum, out + j);
}

/* Reduce sixteen __m512i accumulators to one vector of their sums (lane u = sum(a[u])). */
PR_AVX512VNNI static inline __m512i hsum16_epi32(const __m512i a[16]) {
    __m512i p[8], r[4];
    for (int u = 0; u < 8; u++)
        p[u] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * u], a[2 * u + 1]),
                                _mm512_unpackhi_epi32(a[2 * u], a[2 * u + 1]));
    for (int u = 0; u < 4; u++)
        r[u] = _mm512_add_epi32(_mm512_unpacklo_epi64(p[2 * u], p[2 * u + 1]),
                                _mm512_unpackhi_epi64(p[2 * u], p[2 * u + 1]));
    /* r[u], 128-bit lane L, holds the lane-L partial sums of rows 4u..4u+3. */
    __m512i x01 = _mm512_add_epi32(_mm512_shuffle_i32x4(r[0], r[1], 0x88),
                                   _mm512_shuffle_i32x4(r[0], r[1], 0xDD));
    __m512i x23 = _mm512_add_epi32(_mm512_shuffle_i32x4(r[2], r[3], 0x88),
                                   _mm512_shuffle_i32x4(r[2], r[3], 0xDD));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(x01, x23, 0x88),
                            _mm512_shuffle_i32x4(x01, x23, 0xDD));
}

/* int8 via vpdpbusd (u8 x s8): rows are shifted to unsigned with x ^ 0x80 = x + 128, and the
 * 128 * sum(q) that this adds to every dot product is subtracted at the end. */
PR_AVX512VNNI static void dots_i8_vnni(const int8_t *rows, int64_t cnt, int64_t d,
                                       const int8_t *q, int32_t qsum, int32_t *out) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    /* vpdpbusd wraps modulo 2^32; so does this product, and the difference is the exact sum. */
    const __m512i corr = _mm512_set1_epi32((int32_t)((uint32_t)qsum * 128u));
    const int64_t dv = d & ~(int64_t)63;
    const __mmask64 tail = (d > dv) ? (((__mmask64)1 << (d - dv)) - 1) : 0;
    int64_t j = 0;
    for (; j + 16 <= cnt; j += 16) {
        const int8_t *r = rows + j * d;
        __m512i a[16];
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) a[u] = _mm512_setzero_si512();
        for (int64_t t = 0; t < dv; t += 64) {
            __m512i qv = _mm512_loadu_si512((const void *)(q + t));
#pragma GCC unroll 16
            for (int u = 0; u < 16; u++) {
                __m512i rv = _mm512_xor_si512(_mm512_loadu_si512((const void *)(r + u * d + t)), bias);
                a[u] = _mm512_dpbusd_epi32(a[u], rv, qv);
            }
        }
        if (dv < d) { /* masked loads only for the tail: they are slow on streamed data */
            __m512i qv = _mm512_maskz_loadu_epi8(tail, q + dv);
#pragma GCC unroll 16
            for (int u = 0; u < 16; u++) {
                __m512i rv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, r + u * d + dv), bias);
                a[u] = _mm512_dpbusd_epi32(a[u], rv, qv);
            }
        }
        _mm512_storeu_si512((void *)(out + j), _mm512_sub_epi32(hsum16_epi32(a), corr));
    }
    dots_i8_avx2(rows + j * d, cnt - j, d, q, qsum, out + j);
}

#endif /* PR_X86 */

/* ------------------------------------------------------------------------------------------ */
/* CPU probe and dispatch.                                                                     */

static int pr_probe_isa(void) {
#if PR_X86
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return PR_ISA_PORTABLE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni"))
        return PR_ISA_AVX512_VNNI;
    return PR_ISA_AVX2;
#else
    return PR_ISA_PORTABLE;
#endif
}

int pr_best_isa(void) {
    static volatile int cached = -1; /* benign race: every thread computes the same value */
    if (cached < 0) cached = pr_probe_isa();
    return cached;
}

static dots_f32_fn pick_f32(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX2) return dots_f32_avx2;
#endif
    (void)isa;
    return dots_f32_portable;
}

static max_fn pick_max(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX2) return block_max_avx2;
#endif
    (void)isa;
    return block_max_portable;
}

static dots_i8_fn pick_i8(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX512_VNNI) return dots_i8_vnni;
    if (isa >= PR_ISA_AVX2) return dots_i8_avx2;
#endif
    (void)isa;
    return dots_i8_portable;
}

static int check_common(int64_t n, int64_t d, int64_t b, int64_t exclude_stride, int64_t k,
                        int isa) {
    if (n < 0 || d < 1 || b < 0 || k < 1) return PR_E_ARG;
    if (exclude_stride != 0 && exclude_stride != n) return PR_E_ARG;
    if (isa < PR_ISA_PORTABLE || isa > pr_best_isa()) return PR_E_ISA;
    return PR_OK;
}

static void init_heaps(heap_t *h, int64_t b, int64_t k, int64_t *out_ids, float *out_scores) {
    for (int64_t i = 0; i < b; i++) {
        h[i].s = out_scores + i * k;
        h[i].id = out_ids + i * k;
        h[i].size = 0;
        h[i].cap = k;
    }
}

/* Queries are handled in groups of QGROUP so the per-group heap descriptors stay on the stack. */
#define QGROUP 64

int pr_topk_f32(const float *items, int64_t n, int64_t d, const float *queries, int64_t b,
                const uint8_t *exclude, int64_t exclude_stride, int64_t k, int isa,
                int64_t *out_ids, float *out_scores, int64_t *out_counts) {
    int rc = check_common(n, d, b, exclude_stride, k, isa);
    if (rc != PR_OK) return rc;
    if ((n > 0 && items == NULL) || (b > 0 && (queries == NULL || out_ids == NULL ||
                                               out_scores == NULL || out_counts == NULL)))
        return PR_E_ARG;
    dots_f32_fn dots = pick_f32(isa);
    max_fn bmax = pick_max(isa);
    float sc[BLOCK];
    heap_t h[QGROUP];
    for (int64_t q0 = 0; q0 < b; q0 += QGROUP) {
        int64_t qn = (b - q0 < QGROUP) ? b - q0 : QGROUP;
        init_heaps(h, qn, k, out_ids + q0 * k, out_scores + q0 * k);
        for (int64_t base = 0; base < n; base += BLOCK) {
            int64_t cnt = (n - base < BLOCK) ? n - base : BLOCK;
            for (int64_t i = 0; i < qn; i++) {
                const uint8_t *ex = exclude ? exclude + (q0 + i) * exclude_stride : NULL;
                dots(items + base * d, cnt, d, queries + (q0 + i) * d, sc);
                select_block(&h[i], sc, base, cnt, ex, bmax(sc, cnt));
            }
        }
        for (int64_t i = 0; i < qn; i++) heap_finish(&h[i], out_counts + q0 + i);
    }
    return PR_OK;
}

int pr_topk_i8(const int8_t *codes, const float *scales, int64_t n, int64_t d,
               const int8_t *qcodes, const float *qscales, int64_t b, const uint8_t *exclude,
               int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids, float *out_scores,
               int64_t *out_counts) {
    int rc = check_common(n, d, b, exclude_stride, k, isa);
    if (rc != PR_OK) return rc;
    if ((n > 0 && (codes == NULL || scales == NULL)) ||
        (b > 0 && (qcodes == NULL || qscales == NULL || out_ids == NULL || out_scores == NULL ||
                   out_counts == NULL)))
        return PR_E_ARG;
    dots_i8_fn dots = pick_i8(isa);
    max_fn bmax = pick_max(isa);
    int32_t acc[BLOCK];
    float sc[BLOCK];
    heap_t h[QGROUP];
    int32_t qsum[QGROUP];
    for (int64_t q0 = 0; q0 < b; q0 += QGROUP) {
        int64_t qn = (b - q0 < QGROUP) ? b - q0 : QGROUP;
        init_heaps(h, qn, k, out_ids + q0 * k, out_scores + q0 * k);
        for (int64_t i = 0; i < qn; i++) {
            int32_t s = 0;
            for (int64_t t = 0; t < d; t++) s += qcodes[(q0 + i) * d + t];
            qsum[i] = s;
        }
        for (int64_t base = 0; base < n; base += BLOCK) {
            int64_t cnt = (n - base < BLOCK) ? n - base : BLOCK;
            for (int64_t i = 0; i < qn; i++) {
                const uint8_t *ex = exclude ? exclude + (q0 + i) * exclude_stride : NULL;
                dots(codes + base * d, cnt, d, qcodes + (q0 + i) * d, qsum[i], acc);
                for (int64_t j = 0; j < cnt; j++) sc[j] = (float)acc[j] * scales[base + j];
                select_block(&h[i], sc, base, cnt, ex, bmax(sc, cnt));
            }
        }
        for (int64_t i = 0; i < qn; i++) {
            heap_finish(&h[i], out_counts + q0 + i);
            /* Report the score with the query's scale; order was decided on the unscaled rank. */
            float qs = qscales[q0 + i];
            for (int64_t j = 0; j < out_counts[q0 + i]; j++) h[i].s[j] *= qs;
        }
    }
    return PR_OK;
}
