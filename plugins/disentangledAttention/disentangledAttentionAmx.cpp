/*
 * debx: AMX-BF16 products of the CPU attention kernel (see disentangledAttentionAmx.h).
 */
#include "disentangledAttentionAmx.h"

#include <algorithm>
#include <cstring>

#if defined(__AMX_BF16__) && defined(__AMX_TILE__) && defined(__AVX512BF16__) && defined(__linux__)
#define DEBX_HAVE_AMX_BF16 1
#include "../common/amxTiles.h"
#include <immintrin.h>
#else
#define DEBX_HAVE_AMX_BF16 0
#endif

namespace debx
{
namespace attention
{
namespace amx
{
namespace
{

//! float -> bfloat16, round to nearest even (NaN kept quiet).
uint16_t toBf16(float x)
{
    uint32_t u = 0;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFU) > 0x7F800000U)
    {
        return static_cast<uint16_t>((u >> 16) | 0x40U);
    }
    u += 0x7FFFU + ((u >> 16) & 1U);
    return static_cast<uint16_t>(u >> 16);
}

#if DEBX_HAVE_AMX_BF16
using debx::amx::loadTileConfig;

__mmask16 tail16(int64_t left)
{
    return static_cast<__mmask16>(left >= 16 ? 0xFFFF : left <= 0 ? 0 : (1U << left) - 1U);
}
#endif

} // namespace

bool available()
{
#if DEBX_HAVE_AMX_BF16
    static bool const ok = debx::amx::detect(debx::amx::Feature::kBf16);
    return ok;
#else
    return false;
#endif
}

int64_t tableTilesPerHead(int32_t rows, int32_t headSize)
{
    return static_cast<int64_t>((rows + 15) / 16) * ((headSize + 31) / 32);
}

void packTable(float const* table, int32_t rows, int32_t numHeads, int32_t headSize, uint16_t* out)
{
    int64_t const HD = static_cast<int64_t>(numHeads) * headSize;
    int const blocks = (rows + 15) / 16;
    int const steps = (headSize + 31) / 32;
    for (int32_t h = 0; h < numHeads; ++h)
    {
        uint16_t* head = out + h * tableTilesPerHead(rows, headSize) * kTileElems;
        for (int cb = 0; cb < blocks; ++cb)
        {
            for (int ks = 0; ks < steps; ++ks)
            {
                uint16_t* tile = head + (static_cast<int64_t>(cb) * steps + ks) * kTileElems;
                for (int r = 0; r < 16; ++r)
                {
                    for (int c = 0; c < 16; ++c)
                    {
                        for (int t = 0; t < 2; ++t)
                        {
                            int const row = cb * 16 + c;
                            int const d = ks * 32 + 2 * r + t;
                            tile[r * 32 + c * 2 + t] = row < rows && d < headSize
                                ? toBf16(table[static_cast<int64_t>(row) * HD + h * headSize + d])
                                : uint16_t{0};
                        }
                    }
                }
            }
        }
    }
}

void toBf16Rows(float const* X, int64_t ldx, int rows, int cols, int rowsPad, int colsPad, uint16_t* out)
{
#if DEBX_HAVE_AMX_BF16
    for (int i = 0; i < rowsPad; ++i)
    {
        uint16_t* dst = out + static_cast<int64_t>(i) * colsPad;
        for (int c = 0; c < colsPad; c += 32)
        {
            __m512 lo = _mm512_setzero_ps();
            __m512 hi = _mm512_setzero_ps();
            if (i < rows)
            {
                float const* src = X + static_cast<int64_t>(i) * ldx + c;
                lo = _mm512_maskz_loadu_ps(tail16(cols - c), src);
                hi = _mm512_maskz_loadu_ps(tail16(cols - c - 16), src + 16);
            }
            _mm512_storeu_si512(dst + c, (__m512i) _mm512_cvtne2ps_pbh(hi, lo));
        }
    }
#else
    for (int i = 0; i < rowsPad; ++i)
    {
        for (int c = 0; c < colsPad; ++c)
        {
            out[static_cast<int64_t>(i) * colsPad + c]
                = i < rows && c < cols ? toBf16(X[static_cast<int64_t>(i) * ldx + c]) : uint16_t{0};
        }
    }
#endif
}

void packRows(uint16_t const* X, int64_t ldx, int rowBlocks, int kSteps, uint16_t* out)
{
    for (int cb = 0; cb < rowBlocks; ++cb)
    {
        for (int ks = 0; ks < kSteps; ++ks)
        {
            uint16_t* tile = out + (static_cast<int64_t>(cb) * kSteps + ks) * kTileElems;
            uint16_t const* src = X + static_cast<int64_t>(cb) * 16 * ldx + ks * 32;
#if DEBX_HAVE_AMX_BF16
            // tile row r = the r-th bf16 pair (one 32-bit lane) of each of the 16 rows: a 16 x 16 transpose of
            // 32-bit lanes, done with one gather per tile row
            __m512i const rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                1, 0), _mm512_set1_epi32(static_cast<int32_t>(ldx / 2)));
            for (int r = 0; r < 16; ++r)
            {
                __m512i const lanes = _mm512_add_epi32(rows, _mm512_set1_epi32(r));
                _mm512_storeu_si512(tile + r * 32, _mm512_i32gather_epi32(lanes, src, 4));
            }
#else
            for (int r = 0; r < 16; ++r)
            {
                for (int c = 0; c < 16; ++c)
                {
                    tile[r * 32 + c * 2] = src[c * ldx + 2 * r];
                    tile[r * 32 + c * 2 + 1] = src[c * ldx + 2 * r + 1];
                }
            }
#endif
        }
    }
}

void packValues(float const* V, int64_t ldv, int keys, int D, int keySteps, uint16_t* out)
{
    int const blocks = (D + 15) / 16;
#if DEBX_HAVE_AMX_BF16
    // bf16 pairs of two key rows, interleaved: lane 2c = row a, lane 2c + 1 = row b
    __m512i const interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
        22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int cb = 0; cb < blocks; ++cb)
    {
        __mmask16 const m = tail16(D - cb * 16);
        for (int ks = 0; ks < keySteps; ++ks)
        {
            uint16_t* tile = out + (static_cast<int64_t>(cb) * keySteps + ks) * kTileElems;
            for (int r = 0; r < 16; ++r)
            {
                int const ka = ks * 32 + 2 * r;
                __m512 const a = ka < keys ? _mm512_maskz_loadu_ps(m, V + ka * ldv + cb * 16) : _mm512_setzero_ps();
                __m512 const b
                    = ka + 1 < keys ? _mm512_maskz_loadu_ps(m, V + (ka + 1) * ldv + cb * 16) : _mm512_setzero_ps();
                __m512i const ab = (__m512i) _mm512_cvtne2ps_pbh(b, a); // a in lanes 0-15, b in 16-31
                _mm512_storeu_si512(tile + r * 32, _mm512_permutexvar_epi16(interleave, ab));
            }
        }
    }
#else
    for (int cb = 0; cb < blocks; ++cb)
    {
        for (int ks = 0; ks < keySteps; ++ks)
        {
            uint16_t* tile = out + (static_cast<int64_t>(cb) * keySteps + ks) * kTileElems;
            for (int r = 0; r < 16; ++r)
            {
                for (int c = 0; c < 16; ++c)
                {
                    for (int t = 0; t < 2; ++t)
                    {
                        int const key = ks * 32 + 2 * r + t;
                        int const d = cb * 16 + c;
                        tile[r * 32 + c * 2 + t] = key < keys && d < D ? toBf16(V[key * ldv + d]) : uint16_t{0};
                    }
                }
            }
        }
    }
#endif
}

void bandProducts(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
    int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase)
{
#if DEBX_HAVE_AMX_BF16
    loadTileConfig();
    for (int rb = 0; rb < rowBlocks; ++rb)
    {
        uint16_t const* a = A + static_cast<int64_t>(rb) * 16 * lda;
        float* c = C + static_cast<int64_t>(rb) * 16 * ldc - colBase;
        for (int cb = cbFirst[rb]; cb < cbEnd[rb]; cb += 2)
        {
            bool const two = cb + 1 < cbEnd[rb];
            uint16_t const* b0 = tiles + static_cast<int64_t>(cb) * kSteps * kTileElems;
            uint16_t const* b1 = b0 + kSteps * kTileElems;
            _tile_zero(0);
            _tile_zero(1);
            for (int ks = 0; ks < kSteps; ++ks)
            {
                _tile_loadd(2, a + ks * 32, lda * 2);
                _tile_loadd(3, b0 + ks * kTileElems, 64);
                _tile_dpbf16ps(0, 2, 3);
                if (two)
                {
                    _tile_loadd(4, b1 + ks * kTileElems, 64);
                    _tile_dpbf16ps(1, 2, 4);
                }
            }
            _tile_stored(0, c + cb * 16, ldc * 4);
            if (two)
            {
                _tile_stored(1, c + cb * 16 + 16, ldc * 4);
            }
        }
    }
#else
    (void) A;
    (void) lda;
    (void) rowBlocks;
    (void) kSteps;
    (void) tiles;
    (void) cbFirst;
    (void) cbEnd;
    (void) C;
    (void) ldc;
    (void) colBase;
#endif
}

} // namespace amx
} // namespace attention
} // namespace debx
