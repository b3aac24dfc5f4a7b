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

//! float -> bfloat16 as VCVTNEPS2BF16 does it (the activations' conversion): round to nearest even, NaN kept quiet,
//! denormals to zero of their sign.
uint16_t toBf16(float x)
{
    uint32_t u = 0;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFU) > 0x7F800000U)
    {
        return static_cast<uint16_t>((u >> 16) | 0x40U);
    }
    if ((u & 0x7F800000U) == 0)
    {
        return static_cast<uint16_t>((u >> 16) & 0x8000U);
    }
    u += 0x7FFFU + ((u >> 16) & 1U);
    return static_cast<uint16_t>(u >> 16);
}

#if DEBX_HAVE_AMX_BF16
using debx::amx::loadTileConfig;
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
