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
 * AVX2+FMA (float32, and int8 through 16-bit multiply-add), and AVX-512 (float32 with 512-bit
 * FMA; int8 through vpdpbusd where the CPU has VNNI, else the AVX2 int8 code). The x86 paths are
 * compiled with per-function target attributes and only called after a run-time CPU check, so the
 * binary still runs on CPUs without them.
 *
 * Access order: every single-query dot kernel reads the catalog strictly sequentially (row after
 * row, each row front to back) in groups of 8 rows whose sums are reduced together. An earlier
 * AVX2 kernel walked 8 rows in lockstep (8 streams 256 bytes apart at D = 64) and read DRAM at
 * about 60% of the speed of the portable loop on AMD EPYC (Zen 4); groups of 16 rows (AVX-512) were
 * as slow. Every single-query kernel also writes its scores, and takes their block maximum, in
 * registers (a second pass over the block's scores was measurable from DRAM), and prefetches the
 * rows PR_PREFETCH_AHEAD bytes ahead (issue 16, N = 1M, D = 64, Zen 5, against a streaming read
 * of the same bytes in the same run): the int8 VNNI kernel went from ~1.6x to ~1.1x that floor,
 * the AVX2 float32 kernel from ~1.3x to ~1.04x, the AVX-512 one from ~1.12x to ~1.08x.
 *
 * Batches (b >= 2, float32): a separate kernel serves up to QB queries from one pass over the
 * catalog. Queries are transposed into qt[d][QB] once; for each block of BR rows, scores of
 * 4 rows x QB queries are accumulated with one broadcast of an item value per FMA row, so the
 * catalog is read once per QB queries, from cache, and the arithmetic is register-blocked
 * (see batch_f32_*). The 4 (or 2) rows of a step are read in lockstep, so the x86 kernels
 * prefetch the next block in order while they compute (the batch is compute-bound, and without
 * the prefetch a catalog streamed from L3 or DRAM made it about 2x slower per row than one in L2).
 * Block maxima per query are vertical maxima of the score rows.
 */
#include "topk.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define PR_X86 1
#include <immintrin.h>
#else
#define PR_X86 0
#endif

#define BLOCK 256

/* The single-query x86 kernels prefetch the rows ahead (PR_PREFETCH_AHEAD) only in catalogs of at
 * least this many bytes: smaller ones come from cache, where the prefetch instructions only take
 * issue slots (at N = 10k, D = 64, 2.5 MB of float32, they made the scan ~10% slower). */
#define PR_PREFETCH_MIN_BYTES ((int64_t)4 << 20)

/* Compiler barrier: keeps the loads of one row before those of the next. With a constant d the
 * compiler otherwise interleaves the unrolled rows' loads, which reads memory out of order (the
 * pattern that made the old AVX2 kernel slow from DRAM). */
#define PR_ROW_ORDER() __asm__ volatile("" ::: "memory")

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

/* Offer one entry; entries come in increasing id order, so once the heap is full only a strictly
 * greater score displaces its worst (equal scores keep the lower id). Returns whether it was kept. */
static inline int heap_offer(heap_t *h, float s, int64_t id) {
    if (h->size < h->cap) {
        heap_push(h, s, id);
        return 1;
    }
    if (!(s > h->s[0])) return 0;
    h->s[0] = s;
    h->id[0] = id;
    heap_sift_down(h, 0);
    return 1;
}

/* Offer the scores of rows [base, base + cnt) to the heap (the batch kernels; single queries use
 * select_hits); row base + j has score sc[j * stride]. block_max is the largest non-NaN score of
 * the block (excluded rows included): when the heap is full and nothing in the block can beat its
 * worst entry, the block is skipped without looking at its rows. */
static void select_block(heap_t *h, const float *sc, int64_t stride, int64_t base, int64_t cnt,
                         const uint8_t *ex, float block_max) {
    if (h->size == h->cap && !(block_max > h->s[0])) return;
    for (int64_t j = 0; j < cnt; j++) {
        float s = sc[j * stride];
        if (s != s) continue; /* NaN: never returned */
        if (ex != NULL && ex[base + j]) continue;
        heap_offer(h, s, base + j);
    }
}

/* Candidate rows of a block for the single-query kernels. The caller sets pf and thr (the heap's
 * worst score when it is full, else -inf); the kernel scores the block and sets bit j of
 * hits[j / 64] when row j scored >= thr (never for NaN), in the registers that hold the scores,
 * so only those rows are offered to the heap. */
typedef struct {
    int pf;                    /* prefetch the rows PR_PREFETCH_AHEAD bytes ahead (x86 kernels) */
    float thr;                 /* rows scoring >= thr are candidates */
    uint64_t hits[BLOCK / 64]; /* bit j: row j is a candidate */
} cand_t;

static inline void cand_clear(cand_t *c) { memset(c->hits, 0, sizeof c->hits); }

/* Mark rows j .. j + 7 (or 15) from a compare mask; j is a multiple of the group size, so a
 * group never straddles two words. */
static inline void cand_mark(cand_t *c, int64_t j, uint64_t bits) {
    c->hits[j >> 6] |= bits << (j & 63);
}

/* Mark rows [from, cnt) of out one by one (the tails of the vector kernels). */
static void cand_mark_rows(cand_t *c, const float *out, int64_t from, int64_t cnt) {
    for (int64_t j = from; j < cnt; j++) cand_mark(c, j, (uint64_t)(out[j] >= c->thr));
}

static inline int lowest_bit(uint64_t bits) {
#if defined(__GNUC__)
    return __builtin_ctzll(bits);
#else
    int b = 0;
    while (!(bits & 1u)) {
        bits >>= 1;
        b++;
    }
    return b;
#endif
}

/* Offer the candidate rows of a block (c->hits, ascending) to the heap; row base + j has score
 * sc[j]. */
static void select_hits(heap_t *h, const float *sc, int64_t base, int64_t cnt, const uint8_t *ex,
                        const cand_t *c) {
    for (int64_t w = 0; w < (cnt + 63) / 64; w++) {
        for (uint64_t bits = c->hits[w]; bits != 0; bits &= bits - 1) {
            const int64_t j = w * 64 + lowest_bit(bits);
            if (ex == NULL || !ex[base + j]) heap_offer(h, sc[j], base + j);
        }
    }
}

/* The candidate threshold of a heap: its worst score once full, else -inf (every non-NaN row). */
static inline float heap_threshold(const heap_t *h) {
    return h->size == h->cap ? h->s[0] : -INFINITY;
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
/* Dot kernels: out[j] = <rows[j], q> for j < cnt.                                             */

/* float32 scores: out[j] = <rows[j], q> for j < cnt (cnt <= BLOCK), candidates marked in c. */
typedef void (*dots_f32_fn)(const float *rows, int64_t cnt, int64_t d, const float *q, float *out,
                            cand_t *c);
/* int8 scores: out[j] = (float)<rows[j], q> * scales[j] (the rank; the query's own scale is
 * applied to the k results at the end) for j < cnt (<= BLOCK), candidates marked in c. qsum is
 * sum(q) (used by the VNNI kernel, which works on biased codes). */
typedef void (*scores_i8_fn)(const int8_t *rows, const float *scales, int64_t cnt, int64_t d,
                             const int8_t *q, int32_t qsum, float *out, cand_t *c);

static void dots_f32_portable(const float *rows, int64_t cnt, int64_t d, const float *q,
                              float *out, cand_t *c) {
    cand_clear(c);
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
    cand_mark_rows(c, out, 0, cnt);
}

static void scores_i8_portable(const int8_t *rows, const float *scales, int64_t cnt, int64_t d,
                               const int8_t *q, int32_t qsum, float *out, cand_t *c) {
    (void)qsum;
    cand_clear(c);
    for (int64_t j = 0; j < cnt; j++) {
        const int8_t *r = rows + j * d;
        int32_t acc = 0;
        for (int64_t t = 0; t < d; t++) acc += (int32_t)r[t] * (int32_t)q[t];
        out[j] = (float)acc * scales[j];
    }
    cand_mark_rows(c, out, 0, cnt);
}

/* ------------------------------------------------------------------------------------------ */
/* Batch kernels (float32, b >= 2): out[j * QB + i] = <rows[j], query i> for j < cnt, i < QB,   */
/* from qt[t * QB + i] = query i's value t (unused query columns are zero); bmax[i] is the      */
/* largest non-NaN out[j * QB + i] (-inf if none).                                              */

#define QB 32  /* queries served by one pass over the catalog */
#define BR 128 /* rows per block: BR * QB scores stay in L1 */

typedef void (*batch_f32_fn)(const float *rows, int64_t cnt, int64_t d, const float *qt,
                             float *out, float *bmax, int64_t next_cnt);

static void batch_f32_portable(const float *rows, int64_t cnt, int64_t d, const float *qt,
                               float *out, float *bmax, int64_t next_cnt) {
    (void)next_cnt;
    for (int i = 0; i < QB; i++) bmax[i] = -INFINITY;
    for (int64_t j = 0; j < cnt; j++) {
        const float *r = rows + j * d;
        float acc[QB];
        for (int i = 0; i < QB; i++) acc[i] = 0.0f;
        for (int64_t t = 0; t < d; t++) {
            const float x = r[t];
            const float *qr = qt + t * QB;
            for (int i = 0; i < QB; i++) acc[i] += x * qr[i];
        }
        float *o = out + j * QB;
        for (int i = 0; i < QB; i++) {
            o[i] = acc[i];
            bmax[i] = acc[i] > bmax[i] ? acc[i] : bmax[i];
        }
    }
}

#if PR_X86

#define PR_AVX2 __attribute__((target("avx2,fma")))
#define PR_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw")))
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

/* Software prefetch distance of the single-query kernels: the lines this many bytes ahead of
 * the group being scored are requested into L1 (see the note at the top; 2-16 KB all helped the
 * int8 kernel, 4 KB most). The hardware prefetcher alone does not keep enough lines in flight
 * while the core computes. The address is formed as an integer: past the catalog's end it is
 * only a hint, never a load. */
#define PR_PREFETCH_AHEAD 4096

#define PR_PREFETCH_RANGE(p, bytes)                                                              \
    if (c->pf)                                                                                   \
        for (int64_t pf_ = 0; pf_ < (bytes); pf_ += 64)                                          \
        _mm_prefetch((const char *)((uintptr_t)(p) + PR_PREFETCH_AHEAD + (uintptr_t)pf_), _MM_HINT_T0)

/* Clean upper halves of the vector registers before leaving AVX code for SSE code. GCC 12 does
 * not emit vzeroupper on every path out of the int8 kernels (their tail calls the next narrower
 * kernel), and a dirty upper state made every later SSE instruction of the process slow: the
 * portable int8 scan ran 4x slower (60 -> 240 us at N = 8192) after one AVX2 int8 call. */
#define PR_ZEROUPPER() _mm256_zeroupper()

/* Candidate bits of 8 scores (>= thr; a NaN compares false). */
PR_AVX2 static inline uint64_t cand_bits8(__m256 s, const cand_t *c) {
    return (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(s, _mm256_set1_ps(c->thr), _CMP_GE_OQ));
}

PR_AVX2 static inline float hsum_ps(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row's dot product as a vector of 8 partial sums (two accumulators, summed). */
PR_AVX2 static inline __m256 row_dot8_ps(const float *r, const float *q, int64_t dv, int rem,
                                         __m256i tail, __m256 qtail) {
    __m256 x = _mm256_setzero_ps(), y = x;
    int64_t t = 0;
    for (; t + 16 <= dv; t += 16) {
        x = _mm256_fmadd_ps(_mm256_loadu_ps(r + t), _mm256_loadu_ps(q + t), x);
        y = _mm256_fmadd_ps(_mm256_loadu_ps(r + t + 8), _mm256_loadu_ps(q + t + 8), y);
    }
    if (t < dv) x = _mm256_fmadd_ps(_mm256_loadu_ps(r + t), _mm256_loadu_ps(q + t), x);
    if (rem) y = _mm256_fmadd_ps(_mm256_maskload_ps(r + dv, tail), qtail, y);
    return _mm256_add_ps(x, y);
}

/* Rows are read in order (see the access-order note at the top); 8 rows' sums are reduced at once.
 * Inlined with a constant d for common dimensions (see dots_f32_avx2), so that the compiler
 * unrolls the row loop and keeps the query in registers. */
PR_AVX2 static inline __attribute__((always_inline)) void
dots_f32_avx2_body(const float *rows, int64_t cnt, int64_t d, const float *restrict q,
                   float *restrict out, cand_t *c) {
    const int64_t dv = d & ~(int64_t)7;
    const int rem = (int)(d - dv);
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 qtail = _mm256_maskload_ps(q + dv, tail);
    cand_clear(c);
    int64_t j = 0;
    for (; j + 8 <= cnt; j += 8) {
        const float *r = rows + j * d;
        PR_PREFETCH_RANGE(r, 8 * d * 4);
        __m256 a[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            a[u] = row_dot8_ps(r + u * d, q, dv, rem, tail, qtail);
            PR_ROW_ORDER();
        }
        const __m256 sums = hsum8_ps(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        _mm256_storeu_ps(out + j, sums);
        cand_mark(c, j, cand_bits8(sums, c));
    }
    for (int64_t t = j; t < cnt; t++) out[t] = hsum_ps(row_dot8_ps(rows + t * d, q, dv, rem, tail, qtail));
    cand_mark_rows(c, out, j, cnt);
}

PR_AVX2 static void dots_f32_avx2(const float *rows, int64_t cnt, int64_t d, const float *q,
                                  float *out, cand_t *c) {
    switch (d) {
    case 32: dots_f32_avx2_body(rows, cnt, 32, q, out, c); break;
    case 64: dots_f32_avx2_body(rows, cnt, 64, q, out, c); break;
    case 128: dots_f32_avx2_body(rows, cnt, 128, q, out, c); break;
    default: dots_f32_avx2_body(rows, cnt, d, q, out, c);
    }
}

/* AVX2 batch: 2 rows x 32 queries per step (8 ymm accumulators, named so that they stay in
 * registers), one broadcast per row value. */
PR_AVX2 static inline void batch_store_avx2(float *o, __m256 a0, __m256 a1, __m256 a2, __m256 a3,
                                            __m256 m[4]) {
    _mm256_storeu_ps(o, a0);
    _mm256_storeu_ps(o + 8, a1);
    _mm256_storeu_ps(o + 16, a2);
    _mm256_storeu_ps(o + 24, a3);
    m[0] = _mm256_max_ps(a0, m[0]); /* NaN in a never replaces m */
    m[1] = _mm256_max_ps(a1, m[1]);
    m[2] = _mm256_max_ps(a2, m[2]);
    m[3] = _mm256_max_ps(a3, m[3]);
}

PR_AVX2 static void batch_f32_avx2(const float *rows, int64_t cnt, int64_t d, const float *qt,
                                   float *out, float *bmax, int64_t next_cnt) {
    __m256 m[4];
    for (int v = 0; v < 4; v++) m[v] = _mm256_set1_ps(-INFINITY);
    /* The next block (next_cnt rows right after this one) is prefetched in order; no address
     * past its end is formed. */
    const char *next = (const char *)(rows + cnt * d);
    const int64_t next_bytes = next_cnt * d * 4;
    for (int64_t j = 0; j < cnt; j += 2) {
        const int64_t stop = (j + 2) * d * 4 < next_bytes ? (j + 2) * d * 4 : next_bytes;
        for (int64_t off = j * d * 4; off < stop; off += 64)
            _mm_prefetch(next + off, _MM_HINT_T1); /* to L2 only */
        /* An odd last row is scored twice (as its own pair); only one copy is stored. */
        const float *r0 = rows + j * d, *r1 = j + 1 < cnt ? r0 + d : r0;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        const float *qr = qt;
        for (int64_t t = 0; t < d; t++, qr += QB) {
            __m256 x = _mm256_broadcast_ss(r0 + t), y = _mm256_broadcast_ss(r1 + t);
            __m256 q0 = _mm256_loadu_ps(qr), q1 = _mm256_loadu_ps(qr + 8);
            __m256 q2 = _mm256_loadu_ps(qr + 16), q3 = _mm256_loadu_ps(qr + 24);
            a0 = _mm256_fmadd_ps(x, q0, a0);
            a1 = _mm256_fmadd_ps(x, q1, a1);
            a2 = _mm256_fmadd_ps(x, q2, a2);
            a3 = _mm256_fmadd_ps(x, q3, a3);
            b0 = _mm256_fmadd_ps(y, q0, b0);
            b1 = _mm256_fmadd_ps(y, q1, b1);
            b2 = _mm256_fmadd_ps(y, q2, b2);
            b3 = _mm256_fmadd_ps(y, q3, b3);
        }
        batch_store_avx2(out + j * QB, a0, a1, a2, a3, m);
        if (j + 1 < cnt) batch_store_avx2(out + (j + 1) * QB, b0, b1, b2, b3, m);
    }
    for (int v = 0; v < 4; v++) _mm256_storeu_ps(bmax + 8 * v, m[v]);
}

/* int8 via sign extension to 16 bits and vpmaddwd (exact int32 sums, no saturation). */
PR_AVX2 static void scores_i8_avx2(const int8_t *rows, const float *scales, int64_t cnt,
                                   int64_t d, const int8_t *q, int32_t qsum, float *out,
                                   cand_t *c) {
    const int64_t dv = d & ~(int64_t)15;
    cand_clear(c);
    int64_t j = 0;
#define PR_LD16(p) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p)))
    for (; j + 8 <= cnt; j += 8) {
        const int8_t *r = rows + j * d;
        PR_PREFETCH_RANGE(r, 8 * d);
        __m256i a[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) { /* row after row: sequential reads */
            __m256i acc = _mm256_setzero_si256();
            for (int64_t t = 0; t < dv; t += 16)
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(PR_LD16(r + u * d + t), PR_LD16(q + t)));
            a[u] = acc;
        }
        __m256i dot = hsum8_epi32(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        if (dv < d) {
            int32_t tail[8];
            for (int u = 0; u < 8; u++) {
                int32_t s = 0;
                for (int64_t t = dv; t < d; t++) s += (int32_t)r[u * d + t] * (int32_t)q[t];
                tail[u] = s;
            }
            dot = _mm256_add_epi32(dot, _mm256_loadu_si256((const __m256i *)tail));
        }
        const __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_loadu_ps(scales + j));
        _mm256_storeu_ps(out + j, s);
        cand_mark(c, j, cand_bits8(s, c));
    }
#undef PR_LD16
    PR_ZEROUPPER();
    /* The last < 8 rows: the narrower kernel's bits count from its first row, so they are marked
     * again here at their offsets in the block. */
    cand_t rest = {0, c->thr, {0}};
    scores_i8_portable(rows + j * d, scales + j, cnt - j, d, q, qsum, out + j, &rest);
    cand_mark_rows(c, out, j, cnt);
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
 * 128 * sum(q) that this adds to every dot product is subtracted at the end. Scaling and the
 * candidate test stay in registers (separate passes over the block's scores cost ~0.4x the floor
 * at N = 1M), and the rows PR_PREFETCH_AHEAD bytes ahead are prefetched. */
PR_AVX512VNNI static void scores_i8_vnni(const int8_t *rows, const float *scales, int64_t cnt,
                                         int64_t d, const int8_t *q, int32_t qsum, float *out,
                                         cand_t *c) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    /* vpdpbusd wraps modulo 2^32; so does this product, and the difference is the exact sum. */
    const __m512i corr = _mm512_set1_epi32((int32_t)((uint32_t)qsum * 128u));
    const int64_t dv = d & ~(int64_t)63;
    const __mmask64 tail = (d > dv) ? (((__mmask64)1 << (d - dv)) - 1) : 0;
    const __m512 thr = _mm512_set1_ps(c->thr);
    cand_clear(c);
    int64_t j = 0;
    for (; j + 16 <= cnt; j += 16) {
        const int8_t *r = rows + j * d;
        PR_PREFETCH_RANGE(r, 16 * d);
        __m512i a[16];
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) a[u] = _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) { /* row after row: sequential reads (matters for D > 64) */
            const int8_t *ru = r + u * d;
            for (int64_t t = 0; t < dv; t += 64) {
                __m512i rv = _mm512_xor_si512(_mm512_loadu_si512((const void *)(ru + t)), bias);
                a[u] = _mm512_dpbusd_epi32(a[u], rv, _mm512_loadu_si512((const void *)(q + t)));
            }
            if (dv < d) { /* masked loads only for the tail: they are slow on streamed data */
                __m512i rv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, ru + dv), bias);
                a[u] = _mm512_dpbusd_epi32(a[u], rv, _mm512_maskz_loadu_epi8(tail, q + dv));
            }
        }
        const __m512i dot = _mm512_sub_epi32(hsum16_epi32(a), corr);
        const __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_loadu_ps(scales + j));
        _mm512_storeu_ps(out + j, s);
        cand_mark(c, j, (uint64_t)_mm512_cmp_ps_mask(s, thr, _CMP_GE_OQ)); /* NaN: false */
    }
    PR_ZEROUPPER();
    cand_t rest = {c->pf, c->thr, {0}}; /* the last < 16 rows (see scores_i8_avx2) */
    scores_i8_avx2(rows + j * d, scales + j, cnt - j, d, q, qsum, out + j, &rest);
    cand_mark_rows(c, out, j, cnt);
}

/* float32 with 512-bit loads and FMA; rows in order, 8 at a time (groups of 16 read DRAM more
 * slowly on Zen 4, see the note at the top). The tail of a row (d % 16) uses a masked load. */
PR_AVX512 static inline __m256 row_dot16_ps(const float *r, const float *q, int64_t dv,
                                           __mmask16 tail) {
    __m512 x = _mm512_setzero_ps(), y = x;
    int64_t t = 0;
    for (; t + 32 <= dv; t += 32) {
        x = _mm512_fmadd_ps(_mm512_loadu_ps(r + t), _mm512_loadu_ps(q + t), x);
        y = _mm512_fmadd_ps(_mm512_loadu_ps(r + t + 16), _mm512_loadu_ps(q + t + 16), y);
    }
    if (t < dv) x = _mm512_fmadd_ps(_mm512_loadu_ps(r + t), _mm512_loadu_ps(q + t), x);
    if (tail) y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r + dv), _mm512_maskz_loadu_ps(tail, q + dv), y);
    x = _mm512_add_ps(x, y);
    return _mm256_add_ps(_mm512_castps512_ps256(x),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
}

PR_AVX512 static inline __attribute__((always_inline)) void
dots_f32_avx512_body(const float *rows, int64_t cnt, int64_t d, const float *restrict q,
                     float *restrict out, cand_t *c) {
    const int64_t dv = d & ~(int64_t)15;
    const __mmask16 tail = (__mmask16)((1u << (d - dv)) - 1u);
    cand_clear(c);
    int64_t j = 0;
    for (; j + 8 <= cnt; j += 8) {
        const float *r = rows + j * d;
        PR_PREFETCH_RANGE(r, 8 * d * 4);
        __m256 a[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            a[u] = row_dot16_ps(r + u * d, q, dv, tail);
            PR_ROW_ORDER();
        }
        const __m256 sums = hsum8_ps(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        _mm256_storeu_ps(out + j, sums);
        cand_mark(c, j, cand_bits8(sums, c));
    }
    for (int64_t t = j; t < cnt; t++) out[t] = hsum_ps(row_dot16_ps(rows + t * d, q, dv, tail));
    cand_mark_rows(c, out, j, cnt);
}

/* d == 64 (the common model width): the query lives in four registers for the whole block, so
 * a row costs four loads and four FMAs. */
PR_AVX512 static void dots_f32_avx512_d64(const float *rows, int64_t cnt, const float *q,
                                          float *out, cand_t *c) {
    const __m512 q0 = _mm512_loadu_ps(q), q1 = _mm512_loadu_ps(q + 16);
    const __m512 q2 = _mm512_loadu_ps(q + 32), q3 = _mm512_loadu_ps(q + 48);
    cand_clear(c);
    int64_t j = 0;
    for (; j < cnt; j += 8) {
        PR_PREFETCH_RANGE(rows + j * 64, 8 * 64 * 4);
        __m256 a[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            const float *r = rows + (j + u < cnt ? j + u : j) * 64;
            __m512 x = _mm512_mul_ps(_mm512_loadu_ps(r), q0);
            __m512 y = _mm512_mul_ps(_mm512_loadu_ps(r + 16), q1);
            x = _mm512_fmadd_ps(_mm512_loadu_ps(r + 32), q2, x);
            y = _mm512_fmadd_ps(_mm512_loadu_ps(r + 48), q3, y);
            x = _mm512_add_ps(x, y);
            a[u] = _mm256_add_ps(_mm512_castps512_ps256(x),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
            PR_ROW_ORDER();
        }
        __m256 sums = hsum8_ps(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        if (j + 8 <= cnt) {
            _mm256_storeu_ps(out + j, sums);
            cand_mark(c, j, cand_bits8(sums, c));
        } else { /* a short last group: rows past cnt were scored as row j, and are dropped */
            float tmp[8];
            _mm256_storeu_ps(tmp, sums);
            for (int64_t u = 0; u < cnt - j; u++) out[j + u] = tmp[u];
            cand_mark_rows(c, out, j, cnt);
        }
    }
}

/* Constant d for common dimensions: the row loop is fully unrolled (see dots_f32_avx2). */
PR_AVX512 static void dots_f32_avx512(const float *rows, int64_t cnt, int64_t d, const float *q,
                                      float *out, cand_t *c) {
    switch (d) {
    case 32: dots_f32_avx512_body(rows, cnt, 32, q, out, c); break;
    case 64: dots_f32_avx512_d64(rows, cnt, q, out, c); break;
    case 128: dots_f32_avx512_body(rows, cnt, 128, q, out, c); break;
    default: dots_f32_avx512_body(rows, cnt, d, q, out, c);
    }
}

/* AVX-512 batch: 4 rows x 32 queries per step (8 zmm accumulators, named so that they stay in
 * registers). Missing rows of the last step repeat its first row; only real rows are stored. */
PR_AVX512 static void batch_f32_avx512(const float *rows, int64_t cnt, int64_t d, const float *qt,
                                       float *out, float *bmax, int64_t next_cnt) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    const char *next = (const char *)(rows + cnt * d); /* the next block: see batch_f32_avx2 */
    const int64_t next_bytes = next_cnt * d * 4;
    for (int64_t j = 0; j < cnt; j += 4) {
        const int64_t stop = (j + 4) * d * 4 < next_bytes ? (j + 4) * d * 4 : next_bytes;
        for (int64_t off = j * d * 4; off < stop; off += 64)
            _mm_prefetch(next + off, _MM_HINT_T1); /* to L2 only */
        const int here = (int)(cnt - j < 4 ? cnt - j : 4);
        const float *r0 = rows + j * d;
        const float *r1 = here > 1 ? r0 + d : r0, *r2 = here > 2 ? r0 + 2 * d : r0;
        const float *r3 = here > 3 ? r0 + 3 * d : r0;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, e0 = a0,
               e1 = a0;
        const float *qr = qt;
        for (int64_t t = 0; t < d; t++, qr += QB) {
            __m512 q0 = _mm512_loadu_ps(qr), q1 = _mm512_loadu_ps(qr + 16);
            __m512 x = _mm512_set1_ps(r0[t]);
            a0 = _mm512_fmadd_ps(x, q0, a0);
            a1 = _mm512_fmadd_ps(x, q1, a1);
            x = _mm512_set1_ps(r1[t]);
            b0 = _mm512_fmadd_ps(x, q0, b0);
            b1 = _mm512_fmadd_ps(x, q1, b1);
            x = _mm512_set1_ps(r2[t]);
            c0 = _mm512_fmadd_ps(x, q0, c0);
            c1 = _mm512_fmadd_ps(x, q1, c1);
            x = _mm512_set1_ps(r3[t]);
            e0 = _mm512_fmadd_ps(x, q0, e0);
            e1 = _mm512_fmadd_ps(x, q1, e1);
        }
        __m512 lo[4] = {a0, b0, c0, e0}, hi[4] = {a1, b1, c1, e1};
        for (int u = 0; u < here; u++) {
            _mm512_storeu_ps(out + (j + u) * QB, lo[u]);
            _mm512_storeu_ps(out + (j + u) * QB + 16, hi[u]);
            m0 = _mm512_max_ps(lo[u], m0); /* NaN in a score never replaces m */
            m1 = _mm512_max_ps(hi[u], m1);
        }
    }
    _mm512_storeu_ps(bmax, m0);
    _mm512_storeu_ps(bmax + 16, m1);
}

#endif /* PR_X86 */

/* ------------------------------------------------------------------------------------------ */
/* CPU probe and dispatch.                                                                     */

static int pr_vnni; /* AVX-512 VNNI present (set by the probe) */

static int pr_probe_isa(void) {
#if PR_X86
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return PR_ISA_PORTABLE;
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")))
        return PR_ISA_AVX2;
    pr_vnni = __builtin_cpu_supports("avx512vnni") != 0;
    return PR_ISA_AVX512;
#else
    return PR_ISA_PORTABLE;
#endif
}

int pr_best_isa(void) {
    static volatile int cached = -1; /* benign race: every thread computes the same value */
    if (cached < 0) cached = pr_probe_isa();
    return cached;
}

int pr_int8_vnni(void) {
    pr_best_isa();
    return pr_vnni;
}

static dots_f32_fn pick_f32(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX512) return dots_f32_avx512;
    if (isa >= PR_ISA_AVX2) return dots_f32_avx2;
#endif
    (void)isa;
    return dots_f32_portable;
}

static batch_f32_fn pick_batch_f32(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX512) return batch_f32_avx512;
    if (isa >= PR_ISA_AVX2) return batch_f32_avx2;
#endif
    (void)isa;
    return batch_f32_portable;
}

static scores_i8_fn pick_i8(int isa) {
#if PR_X86
    if (isa >= PR_ISA_AVX512 && pr_int8_vnni()) return scores_i8_vnni;
    if (isa >= PR_ISA_AVX2) return scores_i8_avx2;
#endif
    (void)isa;
    return scores_i8_portable;
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

/* b >= 2: one pass over the catalog per QB queries (see the note at the top). */
static int topk_f32_batch(const float *items, int64_t n, int64_t d, const float *queries,
                          int64_t b, const uint8_t *exclude, int64_t exclude_stride, int64_t k,
                          int isa, int64_t *out_ids, float *out_scores, int64_t *out_counts) {
    batch_f32_fn kernel = pick_batch_f32(isa);
    float *qt = malloc((size_t)d * QB * sizeof(float));
    float *sc = malloc((size_t)BR * QB * sizeof(float));
    if (qt == NULL || sc == NULL) {
        free(qt);
        free(sc);
        return PR_E_MEM;
    }
    float bm[QB];
    heap_t h[QB];
    for (int64_t q0 = 0; q0 < b; q0 += QB) {
        int64_t qn = (b - q0 < QB) ? b - q0 : QB;
        for (int64_t t = 0; t < d; t++)
            for (int64_t i = 0; i < QB; i++) qt[t * QB + i] = i < qn ? queries[(q0 + i) * d + t] : 0.0f;
        init_heaps(h, qn, k, out_ids + q0 * k, out_scores + q0 * k);
        for (int64_t base = 0; base < n; base += BR) {
            int64_t cnt = (n - base < BR) ? n - base : BR;
            int64_t rest = n - base - cnt;
            kernel(items + base * d, cnt, d, qt, sc, bm, rest < BR ? rest : BR);
            for (int64_t i = 0; i < qn; i++) {
                const uint8_t *ex = exclude ? exclude + (q0 + i) * exclude_stride : NULL;
                select_block(&h[i], sc + i, QB, base, cnt, ex, bm[i]);
            }
        }
        for (int64_t i = 0; i < qn; i++) heap_finish(&h[i], out_counts + q0 + i);
    }
    free(qt);
    free(sc);
    return PR_OK;
}

/* One query's float32 top-k by the single-query kernel (arguments already checked). */
static void scan_f32_one(const float *items, int64_t n, int64_t d, const float *q,
                         const uint8_t *ex, int64_t k, int isa, int64_t *ids, float *scores,
                         int64_t *count) {
    dots_f32_fn dots = pick_f32(isa);
    cand_t c = {n * d * (int64_t)sizeof(float) >= PR_PREFETCH_MIN_BYTES, -INFINITY, {0}};
    float sc[BLOCK];
    heap_t h[1];
    init_heaps(h, 1, k, ids, scores);
    for (int64_t base = 0; base < n; base += BLOCK) {
        int64_t cnt = (n - base < BLOCK) ? n - base : BLOCK;
        c.thr = heap_threshold(&h[0]);
        dots(items + base * d, cnt, d, q, sc, &c);
        select_hits(&h[0], sc, base, cnt, ex, &c);
    }
    heap_finish(&h[0], count);
}

int pr_topk_f32(const float *items, int64_t n, int64_t d, const float *queries, int64_t b,
                const uint8_t *exclude, int64_t exclude_stride, int64_t k, int isa,
                int64_t *out_ids, float *out_scores, int64_t *out_counts) {
    int rc = check_common(n, d, b, exclude_stride, k, isa);
    if (rc != PR_OK) return rc;
    if ((n > 0 && items == NULL) || (b > 0 && (queries == NULL || out_ids == NULL ||
                                               out_scores == NULL || out_counts == NULL)))
        return PR_E_ARG;
    if (b >= 2)
        return topk_f32_batch(items, n, d, queries, b, exclude, exclude_stride, k, isa, out_ids,
                              out_scores, out_counts);
    for (int64_t q0 = 0; q0 < b; q0++)
        scan_f32_one(items, n, d, queries + q0 * d, exclude ? exclude + q0 * exclude_stride : NULL,
                     k, isa, out_ids + q0 * k, out_scores + q0 * k, out_counts + q0);
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
    scores_i8_fn scores = pick_i8(isa);
    const int pf = n * d >= PR_PREFETCH_MIN_BYTES; /* for the first query of a group only */
    cand_t c;
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
                c.pf = pf && i == 0;
                c.thr = heap_threshold(&h[i]);
                scores(codes + base * d, scales + base, cnt, d, qcodes + (q0 + i) * d, qsum[i], sc,
                       &c);
                select_hits(&h[i], sc, base, cnt, ex, &c);
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

/* ========================================================================================== */
/* Screened float32 top-k (pr_topk_screened; the bound is derived in native/screen.py).         */
/*                                                                                              */
/* Stage 1 reads the int8 shadow once per QB queries. Codes are stored +128 as uint8 in groups  */
/* of SG = 16 rows: chunk c of group g (64 bytes) holds dims 4c..4c+3 of its 16 rows, row r at  */
/* bytes 4r..4r+3, so one vpdpbusd with the query's 4 codes broadcast accumulates 16 rows. For  */
/* every (row, query) a coarse test with the group's largest error terms (screen_limit) asks    */
/* whether the upper bound s~ + eps can reach the query's threshold T; the rare rows that pass  */
/* get their own bounds (screen_offer): a candidate keeps its upper bound and feeds its lower   */
/* bound to a heap of the k largest lower bounds, which raises T. Stage 2                        */
/* rescores the candidates that still pass the final T in float32 and selects the top k like    */
/* the plain kernel. A query whose bound cannot be certified (zero, infinite or tiny values, a  */
/* possible float32 overflow) or whose candidates outgrow their buffer is answered by the plain */
/* single-query scan instead.                                                                   */

#define SG 16                 /* rows per packed group */
#define SCREEN_QMAX 127       /* query code range (portable, VNNI) */
#define SCREEN_QMAX_AVX2 64   /* vpmaddubsw: 2 * 255 * 64 fits int16 without saturating */

typedef struct {
    float qs, qn, dqn; /* query scale, ||q|| and ||q - q~|| (rounded up) */
    float T;           /* a row is a candidate when its upper bound is >= T */
    heap_t lb;         /* the k largest lower bounds so far (root: the smallest) */
    int64_t *cid;      /* candidates, ids ascending ... */
    float *cup;        /* ... and their upper bounds */
    int64_t len, cap;
    const uint8_t *ex; /* this query's exclude row, or NULL */
    int fallback;      /* 1: answered by the plain scan */
} screen_q;

typedef struct {
    const uint8_t *packed;
    const float *scales, *errs, *norms;
    int64_t n, groups, cn; /* cn = ceil(d / 4) chunks of 4 dims */
    int32_t *qw;           /* qw[c * QB + i]: query i's codes of chunk c as one 4-byte word */
    int8_t *qc;            /* qc[i * cn * 4 + t]: query i's codes, zero padded */
    int8_t *rep;           /* [cn * 64]: one query's codes, each chunk repeated (portable) */
    double slack;          /* absolute slack c (underflow), see native/screen.py */
    int64_t cap_max;
    /* Per query slot, for the coarse test of every group (struct of arrays, QB slots). */
    int32_t init[QB];   /* -128 * sum(codes), wrapping: a sum of (code + 128) * q starts here */
    double t[QB];       /* T, NaN for a query answered by the plain scan (or an unused slot) */
    double qn[QB], dqn[QB], inv_qs[QB];
    float lim[QB];      /* this group's coarse limit per slot (screen_limit) */
} screen_ctx;

/* The float32 neighbour of a finite f towards -inf (step -1) or +inf (step +1), without libm. */
static inline float float_step(float f, int step) {
    if (f == 0.0f) return step > 0 ? 1.401298464e-45f : -1.401298464e-45f;
    if (f - f != 0.0f) return f > 0.0f ? 3.402823466e38f : -3.402823466e38f; /* v beyond FLT_MAX */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = ((f > 0.0f) == (step > 0)) ? u + 1u : u - 1u; /* away from or towards zero */
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The float32 nearest to v from below (above): bounds stay bounds after the conversion. */
static inline float round_down(double v) {
    float f = (float)v;
    return (double)f > v ? float_step(f, -1) : f;
}

static inline float round_up(double v) {
    float f = (float)v;
    return (double)f < v ? float_step(f, 1) : f;
}

static void screen_give_up(screen_ctx *x, screen_q *q, int64_t slot) {
    q->fallback = 1;
    x->t[slot] = NAN;
}

/* Drop the candidates below the current T; grow the buffer when that frees less than half of it.
 * Returns 0 (and switches the query to the plain scan) when it would grow past cap_max. */
static int screen_room(screen_ctx *x, screen_q *q, int64_t slot) {
    int64_t kept = 0;
    for (int64_t j = 0; j < q->len; j++) {
        if (q->cup[j] >= q->T) {
            q->cid[kept] = q->cid[j];
            q->cup[kept] = q->cup[j];
            kept++;
        }
    }
    q->len = kept;
    if (kept <= q->cap / 2) return 1;
    int64_t cap = 2 * q->cap < x->cap_max ? 2 * q->cap : x->cap_max;
    int64_t *cid = cap > q->cap ? realloc(q->cid, (size_t)cap * sizeof *cid) : NULL;
    if (cid != NULL) q->cid = cid;
    float *cup = cid != NULL ? realloc(q->cup, (size_t)cap * sizeof *cup) : NULL;
    if (cup == NULL) { /* at the limit, or out of memory: the plain scan needs neither buffer */
        screen_give_up(x, q, slot);
        return 0;
    }
    q->cup = cup;
    q->cap = cap;
    return 1;
}

/* A row that passed its group's coarse test: its own upper bound (double, rounded up) decides
 * whether it is a candidate; if it is, its lower bound may raise T. acc: the exact int32 sum. */
static void screen_offer(screen_ctx *x, screen_q *q, int64_t slot, int64_t row, int32_t acc) {
    if (q->ex != NULL && q->ex[row]) return; /* never returned: neither candidate nor bound */
    const float err = x->errs[row];
    const double approx = (double)acc * x->scales[row] * q->qs;
    const double eps = (double)err * q->qn + (double)x->norms[row] * q->dqn;
    const float up = round_up(approx + eps); /* +inf for rows without a bound */
    if (!(up >= q->T)) return;
    if (q->len == q->cap && !screen_room(x, q, slot)) return;
    q->cid[q->len] = row;
    q->cup[q->len] = up;
    q->len++;
    if (!(err < INFINITY)) return; /* rows without a bound: always candidates, never bounds */
    const float low = round_down(approx - eps - x->slack);
    heap_t *h = &q->lb;
    if (!heap_offer(h, low, row)) return;
    if (h->size == h->cap) {
        q->T = round_down((double)h->s[0] - x->slack);
        x->t[slot] = q->T;
    }
}

/* What the coarse test of a group needs: the largest error term and norm of its bounded rows,
 * and the mask of its rows without a bound (always offered). */
typedef struct {
    double err, norm;
    unsigned always;
} screen_group;

static inline screen_group screen_group_terms(const screen_ctx *x, int64_t g) {
    screen_group t = {0.0, 0.0, 0u};
    for (int r = 0; r < SG; r++) {
        const float e = x->errs[g * SG + r], nm = x->norms[g * SG + r];
        if (e < INFINITY) {
            t.err = e > t.err ? e : t.err;
            t.norm = nm > t.norm ? nm : t.norm;
        } else {
            t.always |= 1u << r;
        }
    }
    return t;
}

/* The coarse test of a group for query slot i: with E = err_max * ||q|| + norm_max * ||q - q~||
 * (>= every row's eps), a row can only become a candidate when acc * scale >= (T - E) / qs. The
 * limit is lowered by 2^-21 of (|r| + (|T| + E) / qs) and by 2^-140: more than the float32
 * rounding of acc * scale and the double rounding of r and of screen_offer's exact check, so the
 * test never drops a row that check would keep. NaN (never passed) for a query not screened. */
static inline float screen_limit(const screen_ctx *x, int64_t i, const screen_group *gt) {
    const double t = x->t[i], e = gt->err * x->qn[i] + gt->norm * x->dqn[i];
    const double r = (t - e) * x->inv_qs[i];
    if (t != t) return NAN;
    if (t == -INFINITY) return -INFINITY;
    return round_down(r - (fabs(r) + (fabs(t) + e) * x->inv_qs[i]) * 0x1p-21 - 0x1p-140);
}

/* Offer the rows of group g in mask m (coarse test passed, or no bound) to query slot i, leaving
 * out the padding past n. acc: the 16 exact int32 sums. */
static void screen_take(screen_ctx *x, screen_q *q, int64_t slot, int64_t g, const int32_t *acc,
                        unsigned m) {
    if (q->fallback) return;
    const int64_t live = x->n - g * SG;
    if (live < SG) m &= (1u << live) - 1u;
    while (m) {
        const int r = __builtin_ctz(m);
        m &= m - 1u;
        screen_offer(x, q, slot, g * SG + r, acc[r]);
    }
}

typedef void (*screen_scan_fn)(screen_ctx *x, screen_q *q, int64_t nq);

/* Portable: one query at a time over every group. Its codes are repeated 16 times per chunk
 * (rep[c * 64 + 4r + t] = code of dim 4c + t), so a chunk of 16 rows is a plain 64-lane
 * multiply-add that compilers vectorize (SSE2, NEON). Exact int32 sums, then the coarse test.
 * About 30x slower than VNNI on x86 (SSE2 has no 32-bit multiply): as slow as 32 plain calls. */
static void screen_scan_portable(screen_ctx *x, screen_q *q, int64_t nq) {
    const int64_t cn = x->cn;
    for (int64_t i = 0; i < nq; i++) {
        const int8_t *qc = x->qc + i * cn * 4;
        for (int64_t c = 0; c < cn; c++)
            for (int j = 0; j < 64; j++) x->rep[c * 64 + j] = qc[c * 4 + (j & 3)];
        for (int64_t g = 0; g < x->groups && !q[i].fallback; g++) {
            const uint8_t *p = x->packed + g * SG * 4 * cn;
            const int8_t *rep = x->rep;
            int32_t a[64], acc[SG];
            for (int j = 0; j < 64; j++) a[j] = 0;
            for (int64_t c = 0; c < cn; c++)
                for (int j = 0; j < 64; j++)
                    a[j] += ((int32_t)p[c * 64 + j] - 128) * (int32_t)rep[c * 64 + j];
            for (int r = 0; r < SG; r++)
                acc[r] = (a[4 * r] + a[4 * r + 1]) + (a[4 * r + 2] + a[4 * r + 3]);
            const screen_group gt = screen_group_terms(x, g);
            const float lim = screen_limit(x, i, &gt);
            const float *sc = x->scales + g * SG;
            unsigned m = gt.always;
            for (int r = 0; r < SG; r++) m |= (unsigned)((float)acc[r] * sc[r] >= lim) << r;
            if (m) screen_take(x, &q[i], i, g, acc, m);
        }
    }
}

#if PR_X86

/* AVX2: vpmaddubsw (u8 codes x s8 query codes in [-64, 64], pairs summed in int16 without
 * saturation) then vpmaddwd with ones; nq queries at a time, 8 rows per register. Adding init
 * makes the sums exact; the coarse test runs on them in registers. */
PR_AVX2 static inline __attribute__((always_inline)) void
screen_tile_avx2(screen_ctx *x, screen_q *q, int64_t g, int64_t i0, const int nq,
                 const screen_group *gt) {
    const uint8_t *p = x->packed + g * SG * 4 * x->cn;
    const int32_t *qw = x->qw + i0;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i lo[4], hi[4];
#pragma GCC unroll 4
    for (int u = 0; u < nq; u++) lo[u] = hi[u] = _mm256_setzero_si256();
    for (int64_t c = 0; c < x->cn; c++) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + c * 64));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + c * 64 + 32));
#pragma GCC unroll 4
        for (int u = 0; u < nq; u++) {
            const __m256i w = _mm256_set1_epi32(qw[c * QB + u]);
            lo[u] = _mm256_add_epi32(lo[u], _mm256_madd_epi16(_mm256_maddubs_epi16(v0, w), ones));
            hi[u] = _mm256_add_epi32(hi[u], _mm256_madd_epi16(_mm256_maddubs_epi16(v1, w), ones));
        }
    }
    const __m256 s0 = _mm256_loadu_ps(x->scales + g * SG);
    const __m256 s1 = _mm256_loadu_ps(x->scales + g * SG + 8);
#pragma GCC unroll 4
    for (int u = 0; u < nq; u++) {
        const __m256i init = _mm256_set1_epi32(x->init[i0 + u]);
        lo[u] = _mm256_add_epi32(lo[u], init);
        hi[u] = _mm256_add_epi32(hi[u], init);
        const __m256 lim = _mm256_set1_ps(x->lim[i0 + u]);
        const __m256 c0 = _mm256_cmp_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo[u]), s0), lim, _CMP_GE_OQ);
        const __m256 c1 = _mm256_cmp_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi[u]), s1), lim, _CMP_GE_OQ);
        const unsigned m = gt->always | (unsigned)_mm256_movemask_ps(c0) |
                           (unsigned)_mm256_movemask_ps(c1) << 8;
        if (m) {
            int32_t acc[SG];
            _mm256_storeu_si256((__m256i *)acc, lo[u]);
            _mm256_storeu_si256((__m256i *)(acc + 8), hi[u]);
            screen_take(x, &q[i0 + u], i0 + u, g, acc, m);
        }
    }
}

/* screen_limit for 4 query slots at a time. Conversion to float32 rounds to nearest, so the
 * margin is doubled (2^-20, 2^-139: more than the half ulp it may add), and limits above FLT_MAX
 * are clamped first. */
PR_AVX2 static void screen_limits_avx2(screen_ctx *x, int64_t nq, const screen_group *gt) {
    const __m256d em = _mm256_set1_pd(gt->err), nm = _mm256_set1_pd(gt->norm);
    const __m256d sign = _mm256_set1_pd(-0.0), rel = _mm256_set1_pd(0x1p-20);
    for (int64_t i = 0; i < nq; i += 4) {
        const __m256d t = _mm256_loadu_pd(x->t + i), iq = _mm256_loadu_pd(x->inv_qs + i);
        const __m256d e = _mm256_fmadd_pd(em, _mm256_loadu_pd(x->qn + i),
                                          _mm256_mul_pd(nm, _mm256_loadu_pd(x->dqn + i)));
        const __m256d r = _mm256_mul_pd(_mm256_sub_pd(t, e), iq);
        const __m256d w = _mm256_fmadd_pd(_mm256_add_pd(_mm256_andnot_pd(sign, t), e), iq,
                                          _mm256_andnot_pd(sign, r));
        __m256d l = _mm256_sub_pd(_mm256_fnmadd_pd(w, rel, r), _mm256_set1_pd(0x1p-139));
        l = _mm256_min_pd(_mm256_set1_pd(3.4028234663852886e38), l); /* NaN stays NaN */
        _mm_storeu_ps(x->lim + i, _mm256_cvtpd_ps(l));
    }
}

PR_AVX2 static void screen_scan_avx2(screen_ctx *x, screen_q *q, int64_t nq) {
    for (int64_t g = 0; g < x->groups; g++) {
        const screen_group gt = screen_group_terms(x, g);
        screen_limits_avx2(x, nq, &gt);
        int64_t i = 0;
        for (; i + 4 <= nq; i += 4) screen_tile_avx2(x, q, g, i, 4, &gt);
        for (; i < nq; i++) screen_tile_avx2(x, q, g, i, 1, &gt);
    }
}

/* VNNI: one vpdpbusd (the query word broadcast) adds 4 dims of 16 rows; nq queries at a time
 * with nr accumulators each (nr > 1 splits the chunks, to hide the latency when nq is small),
 * nq * nr <= 16. The biased sums go to out[u * SG + r] (kept in L1 for the test: testing them
 * in registers made GCC shuffle the accumulators inside the loop). */
PR_AVX512VNNI static inline __attribute__((always_inline)) void
screen_accs_vnni(const uint8_t *p, int64_t cn, const int32_t *qw, const int nq, const int nr,
                 int32_t *out) {
    __m512i a[16];
#pragma GCC unroll 16
    for (int u = 0; u < nq * nr; u++) a[u] = _mm512_setzero_si512();
    int64_t c = 0;
    for (; c + nr <= cn; c += nr) {
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            const __m512i v = _mm512_loadu_si512((const void *)(p + (c + r) * 64));
#pragma GCC unroll 16
            for (int u = 0; u < nq; u++)
                a[u * nr + r] =
                    _mm512_dpbusd_epi32(a[u * nr + r], v, _mm512_set1_epi32(qw[(c + r) * QB + u]));
        }
    }
    for (; c < cn; c++) {
        const __m512i v = _mm512_loadu_si512((const void *)(p + c * 64));
#pragma GCC unroll 16
        for (int u = 0; u < nq; u++)
            a[u * nr] = _mm512_dpbusd_epi32(a[u * nr], v, _mm512_set1_epi32(qw[c * QB + u]));
    }
#pragma GCC unroll 16
    for (int u = 0; u < nq; u++) {
        __m512i s = a[u * nr];
#pragma GCC unroll 4
        for (int r = 1; r < nr; r++) s = _mm512_add_epi32(s, a[u * nr + r]);
        _mm512_storeu_si512((void *)(out + u * SG), s);
    }
}

/* screen_group_terms with AVX-512 (masked maxima; 0 when the group has no bounded row). */
PR_AVX512VNNI static inline screen_group screen_group_terms_avx512(const screen_ctx *x, int64_t g) {
    const __m512 e = _mm512_loadu_ps(x->errs + g * SG), nm = _mm512_loadu_ps(x->norms + g * SG);
    const __mmask16 bounded = _mm512_cmp_ps_mask(e, _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
    const float em = _mm512_mask_reduce_max_ps(bounded, e);
    const float nmax = _mm512_mask_reduce_max_ps(bounded, nm);
    screen_group t = {em > 0.0f ? em : 0.0, nmax > 0.0f ? nmax : 0.0, ~(unsigned)bounded & 0xFFFFu};
    return t;
}

/* screen_limit for 8 query slots at a time (double lanes, directed conversion to float32). */
PR_AVX512VNNI static void screen_limits_avx512(screen_ctx *x, int64_t nq,
                                               const screen_group *gt) {
    const __m512d em = _mm512_set1_pd(gt->err), nm = _mm512_set1_pd(gt->norm);
    const __m512d rel = _mm512_set1_pd(0x1p-21);
    for (int64_t i = 0; i < nq; i += 8) {
        const __m512d t = _mm512_loadu_pd(x->t + i), iq = _mm512_loadu_pd(x->inv_qs + i);
        const __m512d e =
            _mm512_fmadd_pd(em, _mm512_loadu_pd(x->qn + i), _mm512_mul_pd(nm, _mm512_loadu_pd(x->dqn + i)));
        const __m512d r = _mm512_mul_pd(_mm512_sub_pd(t, e), iq);
        const __m512d w =
            _mm512_fmadd_pd(_mm512_add_pd(_mm512_abs_pd(t), e), iq, _mm512_abs_pd(r));
        const __m512d l = _mm512_sub_pd(_mm512_fnmadd_pd(w, rel, r), _mm512_set1_pd(0x1p-140));
        _mm256_storeu_ps(x->lim + i,
                         _mm512_cvt_roundpd_ps(l, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
    }
}

PR_AVX512VNNI static void screen_scan_vnni(screen_ctx *x, screen_q *q, int64_t nq) {
    int32_t acc[QB * SG];
    for (int64_t g = 0; g < x->groups; g++) {
        const screen_group gt = screen_group_terms_avx512(x, g);
        screen_limits_avx512(x, nq, &gt);
        const uint8_t *p = x->packed + g * SG * 4 * x->cn;
        int64_t i = 0;
        for (; i + 16 <= nq; i += 16) screen_accs_vnni(p, x->cn, x->qw + i, 16, 1, acc + i * SG);
        for (; i + 4 <= nq; i += 4) screen_accs_vnni(p, x->cn, x->qw + i, 4, 2, acc + i * SG);
        for (; i < nq; i++) screen_accs_vnni(p, x->cn, x->qw + i, 1, 4, acc + i * SG);
        const __m512 sc = _mm512_loadu_ps(x->scales + g * SG);
        for (i = 0; i < nq; i++) {
            int32_t *a = acc + i * SG;
            const __m512i v = _mm512_add_epi32(_mm512_loadu_si512((const void *)a),
                                               _mm512_set1_epi32(x->init[i]));
            const unsigned m = gt.always |
                               _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_cvtepi32_ps(v), sc),
                                                  _mm512_set1_ps(x->lim[i]), _CMP_GE_OQ);
            if (m) {
                _mm512_storeu_si512((void *)a, v);
                screen_take(x, &q[i], i, g, a, m);
            }
        }
    }
}

#endif /* PR_X86 */

/* The stage-1 kernel of a path and its query code range. */
static screen_scan_fn pick_screen(int isa, int *qmax) {
    *qmax = SCREEN_QMAX;
#if PR_X86
    if (isa >= PR_ISA_AVX512 && pr_int8_vnni()) return screen_scan_vnni;
    if (isa >= PR_ISA_AVX2) {
        *qmax = SCREEN_QMAX_AVX2;
        return screen_scan_avx2;
    }
#endif
    (void)isa;
    return screen_scan_portable;
}

/* Quantize the query of slot i (codes in [-qmax, qmax], scale max|q| / qmax) and set its bound
 * terms. Returns 0 when the bound cannot be certified: NaN or infinite entries, a zero or tiny
 * query (scale below FLT_MIN), or ||q|| * max_norm >= 2^126 (float32 sums could overflow). */
static int screen_prep_query(screen_ctx *x, screen_q *s, int64_t i, const float *q, int64_t d,
                             int qmax, float max_norm) {
    int8_t *qc = x->qc + i * x->cn * 4;
    memset(qc, 0, (size_t)(x->cn * 4));
    for (int64_t c = 0; c < x->cn; c++) x->qw[c * QB + i] = 0;
    float amax = 0.0f;
    for (int64_t t = 0; t < d; t++) {
        const float a = fabsf(q[t]);
        if (!(a <= 3.402823466e38f)) return 0; /* NaN or infinity */
        amax = a > amax ? a : amax;
    }
    if (!(amax >= 1.175494351e-38f * (float)qmax)) return 0;
    const float qs = amax / (float)qmax;
    double n2 = 0.0, e2 = 0.0;
    int32_t sum = 0;
    for (int64_t t = 0; t < d; t++) {
        float c = rintf(q[t] / qs);
        c = c > (float)qmax ? (float)qmax : (c < (float)-qmax ? (float)-qmax : c);
        const double r = (double)q[t] - (double)c * (double)qs; /* c * qs is exact */
        n2 += (double)q[t] * (double)q[t];
        e2 += r * r;
        qc[t] = (int8_t)c;
        sum += (int32_t)c;
    }
    for (int64_t c = 0; c < x->cn; c++) {
        uint32_t w = 0;
        for (int t = 0; t < 4; t++) w |= (uint32_t)(uint8_t)qc[c * 4 + t] << (8 * t);
        x->qw[c * QB + i] = (int32_t)w;
    }
    const double grow = 1.0 + 0x1p-20; /* covers the double rounding of the sums */
    s->qs = qs;
    s->qn = round_up(sqrt(n2) * grow);
    s->dqn = round_up(sqrt(e2) * grow);
    if (!((double)s->qn * (double)max_norm < 0x1p126)) return 0;
    x->init[i] = (int32_t)(0u - (uint32_t)sum * 128u);
    x->t[i] = -INFINITY;
    x->qn[i] = s->qn;
    x->dqn[i] = s->dqn;
    x->inv_qs[i] = 1.0 / (double)qs;
    return 1;
}

/* Stage 2: rescore the candidates that pass the final T exactly in float32 (ids ascending, so
 * equal scores keep the lower index), and select the top k into the output row. */
static void screen_finish(const screen_q *s, const float *items, int64_t d, const float *q,
                          int64_t k, int isa, int64_t *ids, float *scores, int64_t *count) {
    dots_f32_fn dots = pick_f32(isa);
    cand_t c = {0, -INFINITY, {0}}; /* one row at a time: its candidate bit is not used */
    heap_t h[1];
    init_heaps(h, 1, k, ids, scores);
    for (int64_t j = 0; j < s->len; j++) {
        if (!(s->cup[j] >= s->T)) continue;
        const int64_t id = s->cid[j];
        float f;
        dots(items + id * d, 1, d, q, &f, &c);
        if (f == f) heap_offer(h, f, id); /* NaN: never returned */
    }
    heap_finish(h, count);
}

static void screen_free(screen_ctx *x, screen_q *q) {
    free(x->qw);
    free(x->qc);
    free(x->rep);
    for (int i = 0; i < QB; i++) {
        free(q[i].lb.s);
        free(q[i].lb.id);
        free(q[i].cid);
        free(q[i].cup);
    }
}

/* Scratch for QB queries; kn = min(k, n) (at least 1): no query holds more than n bounds. */
static int screen_alloc(screen_ctx *x, screen_q *q, int64_t kn) {
    const int64_t cap0 = 64 + 2 * kn < x->cap_max ? 64 + 2 * kn : x->cap_max;
    memset(q, 0, QB * sizeof *q);
    x->qw = malloc((size_t)x->cn * QB * sizeof *x->qw);
    x->qc = malloc((size_t)x->cn * 4 * QB);
    x->rep = malloc((size_t)x->cn * 64);
    int ok = x->qw != NULL && x->qc != NULL && x->rep != NULL;
    for (int i = 0; i < QB && ok; i++) {
        q[i].lb.s = malloc((size_t)kn * sizeof(float));
        q[i].lb.id = malloc((size_t)kn * sizeof(int64_t));
        q[i].cid = malloc((size_t)cap0 * sizeof(int64_t));
        q[i].cup = malloc((size_t)cap0 * sizeof(float));
        q[i].cap = cap0;
        ok = q[i].lb.s && q[i].lb.id && q[i].cid && q[i].cup;
    }
    return ok;
}

int pr_topk_screened(const float *items, const uint8_t *packed, const float *scales,
                     const float *errs, const float *norms, float max_norm, int64_t n, int64_t d,
                     const float *queries, int64_t b, const uint8_t *exclude,
                     int64_t exclude_stride, int64_t k, int isa, int64_t *out_ids,
                     float *out_scores, int64_t *out_counts, int64_t *out_candidates) {
    int rc = check_common(n, d, b, exclude_stride, k, isa);
    if (rc != PR_OK) return rc;
    if (d > PR_SCREEN_MAX_DIM) return PR_E_ARG;
    if ((n > 0 && (items == NULL || packed == NULL || scales == NULL || errs == NULL ||
                   norms == NULL)) ||
        (b > 0 && (queries == NULL || out_ids == NULL || out_scores == NULL || out_counts == NULL)))
        return PR_E_ARG;
    screen_ctx x;
    memset(&x, 0, sizeof x);
    x.packed = packed, x.scales = scales, x.errs = errs, x.norms = norms;
    x.n = n, x.groups = (n + SG - 1) / SG, x.cn = (d + 3) / 4;
    x.slack = ldexp((double)(d + 1), -135);
    const int64_t kn = k < n ? k : (n > 0 ? n : 1); /* k may exceed n (rows are padded) */
    x.cap_max = 4096 + 16 * kn;
    int qmax;
    screen_scan_fn scan = pick_screen(isa, &qmax);
    screen_q q[QB];
    if (!screen_alloc(&x, q, kn)) {
        screen_free(&x, q);
        return PR_E_MEM;
    }
    for (int64_t q0 = 0; q0 < b; q0 += QB) {
        const int64_t nq = (b - q0 < QB) ? b - q0 : QB;
        for (int i = 0; i < QB; i++) x.t[i] = NAN; /* unused slots are never screened */
        for (int64_t i = 0; i < nq; i++) {
            screen_q *s = &q[i];
            s->ex = exclude ? exclude + (q0 + i) * exclude_stride : NULL;
            s->fallback = !screen_prep_query(&x, s, i, queries + (q0 + i) * d, d, qmax, max_norm);
            s->T = -INFINITY;
            s->lb.size = 0;
            s->lb.cap = kn; /* with k > n, kn = n bounds never raise T above a needed row */
            s->len = 0;
        }
        scan(&x, q, nq);
        for (int64_t i = 0; i < nq; i++) {
            const int64_t at = q0 + i;
            const float *qv = queries + at * d;
            if (q[i].fallback) {
                scan_f32_one(items, n, d, qv, q[i].ex, k, isa, out_ids + at * k,
                             out_scores + at * k, out_counts + at);
            } else {
                screen_finish(&q[i], items, d, qv, k, isa, out_ids + at * k, out_scores + at * k,
                              out_counts + at);
            }
            if (out_candidates != NULL) {
                int64_t kept = 0;
                for (int64_t j = 0; j < q[i].len; j++) kept += q[i].cup[j] >= q[i].T;
                out_candidates[at] = q[i].fallback ? -1 : kept;
            }
        }
    }
    screen_free(&x, q);
    return PR_OK;
}
