/*
 * debx: fast CPU implementation of DebxDisentangledAttention (see disentangledAttentionCpu.h for the plan).
 *
 * The matrix products use one register-blocked kernel (4 rows x up to 64 columns, AVX-512 FMA with masked tails);
 * without AVX-512 a plain loop computes the same sums. Softmax uses the vectorised exp of ../common/cpuVecMath.h.
 */
#include "disentangledAttentionCpu.h"

#include "disentangledAttentionAmx.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/cpuVecMath.h"

namespace debx
{
namespace attention
{
namespace
{

//! Ask for the lines of the `count` floats at p: into L1 with Locality 3 (PREFETCHT0), L2 with 2 (PREFETCHT1).
template <int Locality = 3>
inline void prefetchRow(float const* p, int count)
{
    for (int c = 0; c < count; c += 16)
    {
        __builtin_prefetch(p + c, 0, Locality);
    }
    __builtin_prefetch(p + count - 1, 0, Locality);
}

#if defined(__AVX512F__)
//! C[r, c] (+)= sum_t A[r * lda + t] * B[t * ldb + c] for r < rows (<= MR) and c in [c0, c0 + 16 * NV), masked at
//! cend. With `accumulate` the sums continue from C (the same order of additions as one pass over all of t).
template <int MR, int NV>
inline void microKernel(float const* A, int64_t lda, int rows, float const* B, int64_t ldb, int c0, int cend, int K,
    bool accumulate, float* C, int64_t ldc)
{
    // every loop below has a compile-time trip count and is unrolled, so the MR x NV accumulators stay in registers
    __m512 acc[MR][NV];
    __mmask16 m[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
    {
        int const rem = cend - (c0 + 16 * v);
        m[v] = rem >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1U << static_cast<unsigned>(rem > 0 ? rem : 0)) - 1U);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
        {
            acc[r][v] = accumulate && r < rows ? _mm512_maskz_loadu_ps(m[v], C + r * ldc + c0 + 16 * v)
                                               : _mm512_setzero_ps();
        }
    }
    // rows past `rows` re-read row 0 and are never stored
    float const* a[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
    {
        a[r] = A + (r < rows ? r : 0) * lda;
    }
    float const* b = B + c0;
    for (int t = 0; t < K; ++t, b += ldb)
    {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
        {
            bv[v] = _mm512_maskz_loadu_ps(m[v], b + 16 * v);
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
        {
            __m512 const x = _mm512_set1_ps(a[r][t]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v)
            {
                acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
    {
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
        {
            if (r < rows)
            {
                _mm512_mask_storeu_ps(C + r * ldc + c0 + 16 * v, m[v], acc[r][v]);
            }
        }
    }
}

#endif

//! C = A (rows, K) . B (K, W), row-major with the given row strides, where the rows [first, last] only compute the
//! columns [start, end) that band(first, last, &start, &end) gives (the band the gathers read; bands only move right
//! as rows grow); the rest of C is left unwritten, except that a row block may also write up to 15 columns left of
//! its band (whole vectors; those columns lie inside C's rows).
template <typename Band>
void gemmBtBand(float const* A, int64_t lda, int rows, float const* Bt, int64_t ldb, int K, float* C, int64_t ldc,
    Band band)
{
    if (rows <= 0)
    {
        return;
    }
#if defined(__AVX512F__)
    // Blocked for the caches: a chunk of kKc rows of B by kNb columns (32 KB at most: L1 when B's rows do not alias)
    // is reused by every row block of kMr rows before the next one is read; sums over t stay in order (chunks
    // continue from C), so the result does not depend on the blocking.
    constexpr int kMr = 6;
    constexpr int kNb = 64;
    constexpr int kKc = 128;
    int allStart = 0;
    int allEnd = 0;
    band(0, rows - 1, &allStart, &allEnd);
    for (int k0 = 0; k0 < K; k0 += kKc)
    {
        int const kc = std::min(kKc, K - k0);
        float const* a = A + k0;
        float const* b = Bt + static_cast<int64_t>(k0) * ldb;
        for (int c0 = allStart / 16 * 16; c0 < allEnd; c0 += kNb)
        {
            // the next column block's rows of B into L1, a few per row block: B may be a position table that comes
            // cold from memory for every layer, in rows kNb floats long and ldb apart, which the hardware
            // prefetchers do not follow
            int const next = c0 + kNb;
            int const perBlock = next < allEnd ? (kc * kMr + rows - 1) / rows : 0;
            int ahead = 0;
            for (int r0 = 0; r0 < rows; r0 += kMr)
            {
                for (int i = 0; i < perBlock && ahead < kc; ++i, ++ahead)
                {
                    prefetchRow(b + static_cast<int64_t>(ahead) * ldb + next, std::min(kNb, allEnd - next));
                }
                int const nr = std::min(kMr, rows - r0);
                int start = 0;
                int end = 0;
                band(r0, r0 + nr - 1, &start, &end);
                int const cs = std::max(c0, start / 16 * 16);
                int const ce = std::min(c0 + kNb, end);
                if (cs >= ce)
                {
                    continue;
                }
                float const* ar = a + r0 * lda;
                float* c = C + r0 * ldc;
                switch ((ce - cs + 15) / 16)
                {
                case 4: microKernel<kMr, 4>(ar, lda, nr, b, ldb, cs, ce, kc, k0 > 0, c, ldc); break;
                case 3: microKernel<kMr, 3>(ar, lda, nr, b, ldb, cs, ce, kc, k0 > 0, c, ldc); break;
                case 2: microKernel<kMr, 2>(ar, lda, nr, b, ldb, cs, ce, kc, k0 > 0, c, ldc); break;
                default: microKernel<kMr, 1>(ar, lda, nr, b, ldb, cs, ce, kc, k0 > 0, c, ldc); break;
                }
            }
        }
    }
#else
    for (int r = 0; r < rows; ++r)
    {
        int start = 0;
        int end = 0;
        band(r, r, &start, &end);
        float* c = C + r * ldc;
        std::fill(c + start, c + end, 0.0F);
        for (int t = 0; t < K; ++t)
        {
            float const a = A[r * lda + t];
            float const* b = Bt + t * ldb;
            for (int j = start; j < end; ++j)
            {
                c[j] += a * b[j];
            }
        }
    }
#endif
}

//! C (rows, cols) = A (rows, K) . Bt (K, cols); all row-major with the given row strides.
void gemmBt(float const* A, int64_t lda, int rows, float const* Bt, int64_t ldb, int cols, int K, float* C, int64_t ldc)
{
    gemmBtBand(A, lda, rows, Bt, ldb, K, C, ldc, [cols](int, int, int* start, int* end) {
        *start = 0;
        *end = cols;
    });
}

#if defined(__AVX512F__)
//! dst (16, 16) = src (16, 16)^T, in registers: 4 x 4 blocks within 128-bit lanes, then the lanes.
inline void transpose16(float const* src, int64_t lds, float* dst, int64_t ldd)
{
    __m512 r[16];
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
    {
        r[i] = _mm512_loadu_ps(src + i * lds);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2)
    {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4)
    {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
    {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
    {
        _mm512_storeu_ps(dst + i * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88));
        _mm512_storeu_ps(dst + (i + 8) * ldd, _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD));
    }
}
#endif

//! dst (cols, rows) = src (rows, cols)^T.
void transpose(float const* src, int64_t lds, int rows, int cols, float* dst, int64_t ldd)
{
    constexpr int kTile = 16;
#if defined(__AVX512F__)
    int const fullRows = rows / kTile * kTile;
    int const fullCols = cols / kTile * kTile;
    for (int r0 = 0; r0 < fullRows; r0 += kTile)
    {
        for (int c0 = 0; c0 < fullCols; c0 += kTile)
        {
            transpose16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
        }
    }
    // the edges that whole tiles leave
    for (int r = 0; r < rows; ++r)
    {
        for (int c = r < fullRows ? fullCols : 0; c < cols; ++c)
        {
            dst[c * ldd + r] = src[r * lds + c];
        }
    }
#else
    for (int r0 = 0; r0 < rows; r0 += kTile)
    {
        int const r1 = std::min(rows, r0 + kTile);
        for (int c0 = 0; c0 < cols; c0 += kTile)
        {
            int const c1 = std::min(cols, c0 + kTile);
            for (int r = r0; r < r1; ++r)
            {
                for (int c = c0; c < c1; ++c)
                {
                    dst[c * ldd + r] = src[r * lds + c];
                }
            }
        }
    }
#endif
}

//! The largest of n scores.
float rowMaxOf(float const* s, int n)
{
    float rowMax = -INFINITY;
    int j = 0;
#if defined(__AVX512F__)
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (; j + 16 <= n; j += 16)
    {
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j));
    }
    rowMax = _mm512_reduce_max_ps(mx);
#endif
    for (; j < n; ++j)
    {
        rowMax = std::max(rowMax, s[j]);
    }
    return rowMax;
}

//! In-place softmax of one row of n scores whose largest is rowMax.
void softmaxRowFrom(float* s, int n, float rowMax)
{
#if defined(__AVX512F__)
    __m512 const vmax = _mm512_set1_ps(rowMax);
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16)
    {
        __mmask16 const m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1U << static_cast<unsigned>(n - j)) - 1U);
        __m512 const e = _mm512_maskz_mov_ps(m, vec::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmax)));
        _mm512_mask_storeu_ps(s + j, m, e);
        sum = _mm512_add_ps(sum, e);
    }
    __m512 const inv = _mm512_set1_ps(1.0F / _mm512_reduce_add_ps(sum));
    for (int j = 0; j < n; j += 16)
    {
        __mmask16 const m = n - j >= 16 ? static_cast<__mmask16>(0xFFFF)
                                        : static_cast<__mmask16>((1U << static_cast<unsigned>(n - j)) - 1U);
        _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
    }
#else
    float sum = 0.0F;
    for (int j = 0; j < n; ++j)
    {
        s[j] = std::exp(s[j] - rowMax);
        sum += s[j];
    }
    float const inv = 1.0F / sum;
    for (int j = 0; j < n; ++j)
    {
        s[j] *= inv;
    }
#endif
}

//! In-place softmax of one row of n scores.
void softmaxRow(float* s, int n)
{
    softmaxRowFrom(s, n, rowMaxOf(s, n));
}

//! exp(x) is exactly 0 below this (-87 for the vector exp, about -104 for std::exp's denormals), so a padded key
//! (score kMaskFill) adds exactly nothing when the row's largest score exceeds the fill by more.
constexpr float kPadMargin = 128.0F;

} // namespace

void cpuTransposeTable(float const* table, int32_t rows, int32_t numHeads, int32_t headSize, float* out)
{
    int64_t const HD = static_cast<int64_t>(numHeads) * headSize;
    for (int32_t h = 0; h < numHeads; ++h)
    {
        int64_t const ld = cpuTableStride(rows);
        transpose(table + h * headSize, HD, rows, headSize, out + h * headSize * ld, ld);
    }
}

char const* cpuPlan(Params const& params, int32_t* indexByDistance, CpuPlan* plan)
{
    if (char const* err = validateParams(params))
    {
        return err;
    }
    int32_t const n = params.seqLen;
    int32_t lo = 2 * params.span;
    int32_t hi = -1;
    for (int32_t r = -(n - 1); r <= n - 1; ++r)
    {
        int32_t const i = r > 0 ? r : 0; // any (i, j) with i - j = r
        int32_t const idx = relativeIndex(i, i - r, params);
        indexByDistance[r + n - 1] = idx;
        lo = std::min(lo, idx);
        hi = std::max(hi, idx);
    }
    plan->params = params;
    plan->indexByDistance = indexByDistance;
    plan->lo = n > 0 ? lo : 0;
    plan->width = n > 0 ? hi - lo + 1 : 0;
    return nullptr;
}

void cpuRunTask(CpuPlan const& plan, CpuTensors const& t, int64_t task)
{
    Params const& p = plan.params;
    int const N = p.seqLen;
    int const H = p.numHeads;
    int const D = p.headSize;
    int64_t const HD = static_cast<int64_t>(H) * D;
    int64_t const b = task / H;
    int const h = static_cast<int>(task % H);
    if (N == 0)
    {
        return;
    }
    float const* q = t.query + b * N * HD + h * D;
    float const* k = t.key + b * N * HD + h * D;
    float const* v = t.value + b * N * HD + h * D;
    int32_t const* mask = t.mask + b * N;
    float* out = t.out + b * N * HD + h * D;
    int const W = plan.width;
    int const lo = plan.lo;
    int32_t const* idx = plan.indexByDistance + (N - 1); // idx[i - j]
    bool const mixed = t.bf16 != nullptr && (!p.c2p || t.posKeyBf16 != nullptr) && (!p.p2c || t.posQueryBf16 != nullptr);

    // Trailing padding (mask = L ones, then N - L zeros; the float32 path): the tokens' rows only need the scores and
    // products of the L tokens, since a padded key's score is the mask fill, whose exp(fill - max) is exactly 0 next
    // to any real score (checked per row below), and the N - L padded rows are all the same uniform average of V,
    // computed once. Same floats as the full computation; any other mask shape runs it in full (L = N).
    int L = N;
    if (!mixed)
    {
        int len = N;
        while (len > 0 && mask[len - 1] == 0)
        {
            --len;
        }
        if (std::find(mask, mask + len, 0) == mask + len)
        {
            L = len;
        }
    }

    // idx(i, j) only grows with i - j, so query row i reads Cm[i, idx(i, N-1) - lo ... idx(i, 0) - lo] and key row j
    // reads Pm[j, idx(0, j) - lo ... idx(N-1, j) - lo]: bands of at most N columns out of W = 2N - 1
    // (keys and queries: the first L)
    auto c2pBand = [&](int first, int last, int* start, int* end) {
        *start = idx[first - (L - 1)] - lo;
        *end = idx[last] - lo + 1;
    };
    auto p2cBand = [&](int first, int last, int* start, int* end) {
        *start = idx[-last] - lo;
        *end = idx[(L - 1) - first] - lo + 1;
    };
    float* S = nullptr;  // scores (N, N) at row stride ldS
    float* cm = nullptr; // Cm[i, m - base] = q_i . pk[m], row stride ld
    float* pm = nullptr; // Pm[j, m - base] = k_j . pq[m], row stride ld
    int64_t ldS = N;
    int64_t base = lo;
    int64_t ld = W;
    // mixed precision: bf16 operands in B tiles, float32 products (disentangledAttentionBf16.h)
    int const rowsPad = (N + 15) / 16 * 16; // rows of Q and K, and key columns of S, in blocks of 16
    int const rowBlocks = rowsPad / 16;
    int const steps = (D + 31) / 32;        // contraction steps over the head size
    int const keysPad = (N + 31) / 32 * 32; // contraction over keys for P . V
    int const dimBlocks = (D + 15) / 16;
    thread_local std::vector<uint16_t> half;
    thread_local std::vector<float> wide;
    thread_local std::vector<int32_t> blocks; // column-block ranges per 16-row block: [first..., end...]
    uint16_t* qb = nullptr;                   // Q, K as bf16 rows (rowsPad, 32 steps)
    uint16_t* kb = nullptr;
    uint16_t* pb = nullptr;                   // probabilities as bf16 rows (rowsPad, keysPad)
    uint16_t* vt = nullptr;                   // V as B tiles
    float* o = nullptr;                       // P . V (rowsPad, 16 dimBlocks)
    float* vh = nullptr;                      // float32 path: V_h as dense (N, D) rows
    if (mixed)
    {
        base = lo / 16 * 16;
        ld = (lo + W + 15) / 16 * 16 - base;
        int64_t const rowElems = static_cast<int64_t>(rowsPad) * steps * 32;
        size_t const halves = static_cast<size_t>(2 * rowElems + rowBlocks * steps * amx::kTileElems
            + static_cast<int64_t>(rowsPad) * keysPad + dimBlocks * (keysPad / 32) * amx::kTileElems);
        size_t const wides = static_cast<size_t>(rowsPad) * (2 * ld + rowsPad + dimBlocks * 16);
        if (half.size() < halves)
        {
            half.resize(halves);
        }
        if (wide.size() < wides)
        {
            wide.resize(wides);
        }
        blocks.resize(2 * static_cast<size_t>(rowBlocks));
        qb = half.data();
        kb = qb + rowElems;
        uint16_t* kt = kb + rowElems; // K as B tiles for S = Q K^T
        pb = kt + rowBlocks * steps * amx::kTileElems;
        vt = pb + static_cast<int64_t>(rowsPad) * keysPad;
        S = wide.data();
        ldS = rowsPad;
        cm = S + static_cast<int64_t>(rowsPad) * ldS;
        pm = cm + static_cast<int64_t>(rowsPad) * ld;
        o = pm + static_cast<int64_t>(rowsPad) * ld;
        int32_t* first = blocks.data();
        int32_t* end = first + rowBlocks;

        t.bf16->toBf16Rows(q, HD, N, D, rowsPad, steps * 32, qb);
        t.bf16->toBf16Rows(k, HD, N, D, rowsPad, steps * 32, kb);
        t.bf16->packRows(kb, steps * 32, rowBlocks, steps, kt);
        std::fill(first, end, 0);
        std::fill(end, end + rowBlocks, rowBlocks);
        t.bf16->bandProducts(qb, steps * 32, rowBlocks, steps, kt, first, end, S, ldS, 0); // S = Q K^T
        // rows [16 rb, 16 rb + 16) read the table rows band(first, last) + lo: whole 16-row column blocks of it
        int64_t const perHead = amx::tableTilesPerHead(p.posRows, D) * amx::kTileElems;
        auto products = [&](uint16_t const* x, uint16_t const* tables, float* dst, auto band) {
            for (int rb = 0; rb < rowBlocks; ++rb)
            {
                int lower = 0;
                int upper = 0;
                band(rb * 16, std::min(rb * 16 + 15, N - 1), &lower, &upper);
                first[rb] = (lo + lower) / 16;
                end[rb] = (lo + upper + 15) / 16;
            }
            t.bf16->bandProducts(x, steps * 32, rowBlocks, steps, tables + h * perHead, first, end, dst, ld, base);
        };
        if (p.c2p)
        {
            products(qb, t.posKeyBf16, cm, c2pBand);
        }
        if (p.p2c)
        {
            products(kb, t.posQueryBf16, pm, p2cBand);
        }
        cm = p.c2p ? cm : nullptr;
        pm = p.p2c ? pm : nullptr;
    }
    else
    {
        thread_local std::vector<float> scratch;
        // K^T and V_h are copied into rows that do not alias in L1: K^T at a row stride of N + 16 floats (N = 512 is
        // a 2 KB stride, whose rows share a few cache sets), V_h densely (its rows lie 4 * HD bytes apart in `value`)
        int64_t const ldKt = cpuTableStride(N);
        size_t const need = static_cast<size_t>(D) * ldKt + static_cast<size_t>(N) * D
            + 2 * static_cast<size_t>(D) * W + 2 * static_cast<size_t>(N) * W + static_cast<size_t>(N) * N;
        if (scratch.size() < need)
        {
            scratch.resize(need);
        }
        // each position table's band (cold for every layer: see gemmBtBand) into L2 now, so that it arrives while K
        // and V are copied and Q K^T computed (one layer alone, 12 layers' tables rotating, N = 128, 1 thread:
        // 1.25 -> 1.12 ms together with gemmBtBand's next-block prefetch; 1.00 with warm tables); and the next
        // head's, which this thread most likely runs next (the thread pool hands out contiguous ranges of tasks)
        int64_t const tableStride = cpuTableStride(p.posRows);
        // head's rows of a transposed table, from the sequence's first table row lo (see cpuTransposeTable)
        auto headRows = [&](float const* tableT, int head) { return tableT + head * D * tableStride + lo; };
        auto prefetchBand = [&](float const* tableT, auto band, int rows, int head) {
            if (tableT == nullptr || rows <= 0)
            {
                return;
            }
            int start = 0;
            int end = 0;
            band(0, rows - 1, &start, &end);
            float const* first = headRows(tableT, head) + start / 16 * 16;
            for (int d = 0; d < D; ++d)
            {
                prefetchRow<2>(first + d * tableStride, end - start / 16 * 16);
            }
        };
        for (int head = h; head <= std::min(h + 1, H - 1); ++head)
        {
            if (p.c2p)
            {
                prefetchBand(t.posKeyT, c2pBand, L, head);
            }
            if (p.p2c)
            {
                prefetchBand(t.posQueryT, p2cBand, L, head);
            }
        }
        float* kt = scratch.data();     // (D, N) at row stride ldKt
        vh = kt + D * ldKt;             // (N, D)
        float* tabT = vh + N * D;       // (D, W) two of them
        float* prod = tabT + 2 * D * W; // (N, W) two of them: Cm, Pm
        S = prod + 2 * static_cast<size_t>(N) * W;
        transpose(k, HD, L, D, kt, ldKt);
        for (int j = 0; j < N; ++j)
        {
            std::copy(v + j * HD, v + j * HD + D, vh + j * D);
        }
        gemmBt(q, HD, L, kt, ldKt, L, D, S, ldS); // S = Q K^T
        if (p.c2p)
        {
            cm = prod;
            if (t.posKeyT != nullptr)
            {
                gemmBtBand(q, HD, L, headRows(t.posKeyT, h), tableStride, D, cm, W, c2pBand);
            }
            else
            {
                transpose(t.posKey + static_cast<int64_t>(lo) * HD + h * D, HD, W, D, tabT, W);
                gemmBtBand(q, HD, L, tabT, W, D, cm, W, c2pBand);
            }
        }
        if (p.p2c)
        {
            pm = prod + static_cast<size_t>(N) * W;
            if (t.posQueryT != nullptr)
            {
                gemmBtBand(k, HD, L, headRows(t.posQueryT, h), tableStride, D, pm, W, p2cBand);
            }
            else
            {
                transpose(t.posQuery + static_cast<int64_t>(lo) * HD + h * D, HD, W, D, tabT + D * W, W);
                gemmBtBand(k, HD, L, tabT + D * W, W, D, pm, W, p2cBand);
            }
        }
    }
    // s[i, j] = (qk + Cm[i, idx(i, j) - base] + Pm[j, idx(i, j) - base]) * scale, masked; same sum order as the
    // reference: ((qk + c2p) + p2c) * scale. Rows go in tiles of 16 and, inside a tile, 16 keys at a time for all
    // of its rows: the p2c terms of 16 keys for 16 queries lie on ~2 lines of each of 16 rows of Pm, which stay in
    // L1 for the tile (row by row, a query sweeps all N rows of Pm, which do not fit L1 for N = 512).
    constexpr int kRowTile = 16;
    thread_local std::vector<int> fullRows; // rows whose scores need the padded keys after all (see below)
    fullRows.clear();
    for (int i0 = 0; i0 < L; i0 += kRowTile)
    {
        int const i1 = std::min(L, i0 + kRowTile);
        int j = 0;
#if defined(__AVX512F__)
        __m512i const reverse = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        __m512i const vbase = _mm512_set1_epi32(static_cast<int32_t>(base));
        __m512i const lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512 const vscale = _mm512_set1_ps(p.scale);
        __m512 const fill = _mm512_set1_ps(kMaskFill);
        __m512i const vld = _mm512_set1_epi32(static_cast<int32_t>(ld));
        for (; j + 16 <= L; j += 16)
        {
            __mmask16 const keys = _mm512_cmpneq_epi32_mask(_mm512_loadu_si512(mask + j), _mm512_setzero_si512());
            __m512i const pmRows = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(j)), vld);
            for (int i = i0; i < i1; ++i)
            {
                float* row = S + i * ldS;
                // idx(i, j + l) = idx[i - j - l]: 16 consecutive entries read backwards
                __m512i const ids = _mm512_loadu_si512(idx + (i - j - 15));
                __m512i const rel = _mm512_sub_epi32(_mm512_permutexvar_epi32(reverse, ids), vbase); // idx - base
                __m512 sv = _mm512_loadu_ps(row + j);
                if (cm != nullptr)
                {
                    // where the 16 distances fall on consecutive table rows (always for |i - j| below the log
                    // buckets) the c2p terms are 16 consecutive floats of the row, read backwards: one load instead
                    // of a gather
                    float const* crow = cm + static_cast<int64_t>(i) * ld;
                    int32_t const first = idx[i - j - 15];
                    bool const consecutive
                        = _mm512_cmpneq_epi32_mask(ids, _mm512_add_epi32(_mm512_set1_epi32(first), lane)) == 0;
                    __m512 const c2p = consecutive
                        ? _mm512_permutexvar_ps(reverse, _mm512_loadu_ps(crow + (first - base)))
                        : _mm512_i32gather_ps(rel, crow, 4);
                    sv = _mm512_add_ps(sv, c2p);
                }
                if (pm != nullptr)
                {
                    sv = _mm512_add_ps(sv, _mm512_i32gather_ps(_mm512_add_epi32(pmRows, rel), pm, 4));
                }
                sv = _mm512_mul_ps(sv, vscale);
                __mmask16 const keep = mask[i] != 0 ? keys : static_cast<__mmask16>(0);
                _mm512_storeu_ps(row + j, _mm512_mask_blend_ps(keep, fill, sv));
            }
        }
#endif
        for (int i = i0; i < i1; ++i)
        {
            float* row = S + i * ldS;
            for (int jj = j; jj < L; ++jj)
            {
                int64_t const m = idx[i - jj] - base;
                float s = row[jj];
                if (cm != nullptr)
                {
                    s += cm[i * ld + m];
                }
                if (pm != nullptr)
                {
                    s += pm[jj * ld + m];
                }
                row[jj] = maskedScore(s, p.scale, mask[i], mask[jj]);
            }
            float const rowMax = rowMaxOf(row, L);
            if (L < N && !(rowMax - kMaskFill > kPadMargin))
            {
                // exp(fill - max) might not vanish (every real score within kPadMargin of the fill): this row takes
                // the padded keys' scores and all N keys, as the full computation does
                std::fill(row + L, row + N, kMaskFill);
                softmaxRow(row, N);
                fullRows.push_back(i);
                continue;
            }
            softmaxRowFrom(row, L, rowMax);
        }
    }
    if (!mixed)
    {
        gemmBt(S, ldS, L, vh, D, D, L, out, HD); // O_h = P V_h, straight into (B, N, HD)
        for (int i : fullRows)
        {
            gemmBt(S + i * ldS, ldS, 1, vh, D, D, N, out + i * HD, HD);
        }
        if (L < N)
        {
            // padded queries: every score is the fill, so softmax is uniform over all N keys; one row, then copies
            float* row = S + L * ldS;
            std::fill(row, row + N, kMaskFill);
            softmaxRow(row, N);
            gemmBt(row, ldS, 1, vh, D, D, N, out + L * HD, HD);
            for (int i = L + 1; i < N; ++i)
            {
                std::copy(out + L * HD, out + L * HD + D, out + i * HD);
            }
        }
        return;
    }
    // O_h = P V_h: P as bf16 rows, V as B tiles, float products; then the N valid rows into (B, N, HD)
    t.bf16->toBf16Rows(S, ldS, N, N, rowsPad, keysPad, pb);
    t.bf16->packValues(v, HD, N, D, keysPad / 32, vt);
    int32_t* first = blocks.data();
    int32_t* end = first + rowBlocks;
    std::fill(first, end, 0);
    std::fill(end, end + rowBlocks, dimBlocks);
    t.bf16->bandProducts(pb, keysPad, rowBlocks, keysPad / 32, vt, first, end, o, dimBlocks * 16, 0);
    for (int i = 0; i < N; ++i)
    {
        std::copy(o + static_cast<int64_t>(i) * dimBlocks * 16, o + static_cast<int64_t>(i) * dimBlocks * 16 + D,
            out + i * HD);
    }
}

} // namespace attention
} // namespace debx
