/*
 * debx: the INT8 matmul on Intel AMX tiles (see matMulInt8Cpu.h for the math, layout and schedule). Compiled for
 * AMX-INT8 + AVX-512 (its own flags, or stubs where the compiler cannot); run only after amxDetect() said yes.
 */
#include "matMulInt8Kernels.h"

#include <algorithm>

#if defined(__AMX_INT8__) && defined(__AMX_TILE__) && defined(__AVX512F__) && defined(__linux__)
#define DEBX_HAVE_AMX 1
#include "../common/amxTiles.h"
#include "matMulInt8Epilogue.h"
#include <immintrin.h>
#else
#define DEBX_HAVE_AMX 0
#endif

namespace debx
{
namespace int8
{

#if DEBX_HAVE_AMX
namespace
{
using amx::loadTileConfig;

//! The epilogue of one finished 32 x 32 block, done in slices of its 64 row-halves (16 columns each).
struct PendingBlock
{
    alignas(64) int32_t acc[32 * 32];
    int64_t m0 = 0;
    int next = 64; // next row-half to write; 64 = nothing pending
};

template <Epilogue E>
void epilogueSlice(MatMulArgs const& args, PanelConstants const& c, PendingBlock& p, int count)
{
    int const end = std::min(64, p.next + count);
    for (; p.next < end; ++p.next)
    {
        int const r = p.next >> 1;
        int const half = p.next & 1;
        int64_t const m = p.m0 + r;
        if (m >= args.M || c.mask[half] == 0)
        {
            continue;
        }
        finishRow<E>(args, c, m, half, _mm512_load_si512(p.acc + r * 32 + half * 16));
    }
}

template <Epilogue E>
void runTaskAs(MatMulArgs const& args, int64_t task)
{
    PackedWeights const& W = *args.B;
    int64_t const kBlocks = W.kBlocks;
    int64_t const panel = task % W.panels;
    int64_t const group = task / W.panels;
    int64_t const per = groupBlocks(args);
    int64_t const mBlocks = (args.M + 31) / 32;
    int64_t const first = group * per;
    int64_t const last = std::min(mBlocks, first + per);
    int8_t const* const b = W.tiles + panel * kBlocks * kPanelStep;
    // the next panel (the one this thread most likely runs next) into L2, spread over this task's K steps
    int64_t const panelLines = kBlocks * kPanelStep / 64;
    int8_t const* prefetch = W.tiles + ((panel + 1) % W.panels) * kBlocks * kPanelStep;
    int8_t const* const prefetchEnd = W.panels > 1 ? prefetch + panelLines * 64 : prefetch;
    int const linesPerStep = static_cast<int>((panelLines + (last - first) * kBlocks - 1) / ((last - first) * kBlocks));
    int const slice = static_cast<int>((64 + kBlocks - 1) / kBlocks); // epilogue row-halves per K step

    PanelConstants const constants = panelConstants(args, panel);
    int const rowsPerStep = static_cast<int>((32 + kBlocks - 1) / kBlocks); // output rows to prefetch per K step
    PendingBlock pending[2];
    int current = 0;
    loadTileConfig();
    for (int64_t mb = first; mb < last; ++mb)
    {
        PendingBlock& previous = pending[current ^ 1];
        uint8_t const* a0 = args.A + mb * 32 * args.lda;
        uint8_t const* a1 = a0 + 16 * args.lda;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < kBlocks; ++kb)
        {
            if (prefetch < prefetchEnd)
            {
                for (int l = 0; l < linesPerStep; ++l)
                {
                    _mm_prefetch(reinterpret_cast<char const*>(prefetch + l * 64), _MM_HINT_T1);
                }
                prefetch += linesPerStep * 64;
            }
            int8_t const* bk = b + kb * kPanelStep;
            _tile_loadd(4, a0 + kb * 64, args.lda);
            _tile_loadd(6, bk, 64);
            _tile_dpbusd(0, 4, 6);
            _tile_loadd(7, bk + kTileBytes, 64);
            _tile_dpbusd(1, 4, 7);
            _tile_loadd(5, a1 + kb * 64, args.lda);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
            if (previous.next < 64) // the previous block's epilogue, overlapping these tile products
            {
                epilogueSlice<E>(args, constants, previous, slice);
            }
            int const rowEnd = std::min(32, static_cast<int>(kb + 1) * rowsPerStep);
            for (int r = static_cast<int>(kb) * rowsPerStep; r < rowEnd; ++r)
            {
                prefetchOutputRow<E>(args, constants, mb * 32 + r); // this block's outputs, written a block later
            }
        }
        epilogueSlice<E>(args, constants, previous, 64);
        PendingBlock& done = pending[current];
        _tile_stored(0, done.acc, 128);
        _tile_stored(1, done.acc + 16, 128);
        _tile_stored(2, done.acc + 16 * 32, 128);
        _tile_stored(3, done.acc + 16 * 32 + 16, 128);
        done.m0 = mb * 32;
        done.next = 0;
        current ^= 1;
    }
    epilogueSlice<E>(args, constants, pending[current ^ 1], 64);
}
} // namespace
#endif

bool amxDetect()
{
#if DEBX_HAVE_AMX
    return amx::detect(amx::Feature::kInt8);
#else
    return false;
#endif
}

void runTaskAmx(MatMulArgs const& args, int64_t task)
{
#if DEBX_HAVE_AMX
    switch (args.epilogue)
    {
    case Epilogue::kFloat: runTaskAs<Epilogue::kFloat>(args, task); break;
    case Epilogue::kResidual: runTaskAs<Epilogue::kResidual>(args, task); break;
    case Epilogue::kGeluQuantize: runTaskAs<Epilogue::kGeluQuantize>(args, task); break;
    }
#else
    (void) args;
    (void) task;
#endif
}

} // namespace int8
} // namespace debx
