/*
 * debx: the INT8 matmul on AVX-512 VNNI (VPDPBUSD), for CPUs without AMX: Ice Lake / Cascade Lake Xeons, AMD Zen 4
 * and later. Same packed panels as the AMX kernel (matMulInt8Cpu.h): one row of a B tile is one VPDPBUSD operand,
 * 16 columns x 4 consecutive values of k. A task (row group, 32-column panel) walks its rows 8 at a time: 8 x 32
 * int32 sums in 16 ZMM registers, A's 4 bytes broadcast per row and step, the panel's two B vectors loaded once per
 * step for the 8 rows. The next panel is prefetched into L2 while this one computes, the next rows' output lines
 * into L1, and the epilogue (matMulInt8Epilogue.h, the AMX kernel's) runs straight from the registers.
 *
 * Compiled for AVX-512 F/BW/VL/DQ + VNNI (its own flags); run only after avx512VnniAvailable() said yes.
 */
#include "matMulInt8Kernels.h"

#include <algorithm>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) \
    && defined(__AVX512VNNI__)
#define DEBX_HAVE_VNNI 1
#include "matMulInt8Epilogue.h"
#include <immintrin.h>
#else
#define DEBX_HAVE_VNNI 0
#endif

namespace debx
{
namespace int8
{

#if DEBX_HAVE_VNNI
namespace
{
constexpr int kRows = 8; // rows of A per register block: 8 x 2 accumulators + 2 B vectors + 1 broadcast

inline __m512i broadcast4(uint8_t const* p)
{
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

template <Epilogue E>
void runTaskAs(MatMulArgs const& args, int64_t task)
{
    PackedWeights const& W = *args.B;
    int64_t const kBlocks = W.kBlocks;
    int64_t const quads = (W.K + 3) / 4;
    int64_t const panel = task % W.panels;
    int64_t const group = task / W.panels;
    int64_t const per = groupBlocks(args);
    int64_t const rowBegin = group * per * 32;
    int64_t const rowEnd = std::min(args.M, rowBegin + per * 32);
    int64_t const blocks = (rowEnd - rowBegin + kRows - 1) / kRows;
    int8_t const* const b = W.tiles + panel * kBlocks * kPanelStep;
    // the next panel (the one this thread most likely runs next) into L2, spread over this task's K steps
    int64_t const panelLines = kBlocks * kPanelStep / 64;
    int8_t const* prefetch = W.tiles + ((panel + 1) % W.panels) * kBlocks * kPanelStep;
    int8_t const* const prefetchEnd = W.panels > 1 ? prefetch + panelLines * 64 : prefetch;
    int const linesPerStep = static_cast<int>((panelLines + blocks * kBlocks - 1) / (blocks * kBlocks));
    int const rowsPerStep = static_cast<int>((kRows + kBlocks - 1) / kBlocks); // next block's output rows per step

    PanelConstants const constants = panelConstants(args, panel);
    bool const secondHalf = constants.mask[1] != 0;
    for (int64_t m0 = rowBegin; m0 < rowEnd; m0 += kRows)
    {
        uint8_t const* a[kRows];
        for (int i = 0; i < kRows; ++i) // rows past M repeat the last one (computed, never stored)
        {
            a[i] = args.A + std::min(m0 + i, args.M - 1) * args.lda;
        }
        __m512i acc[kRows][2];
        for (int i = 0; i < kRows; ++i)
        {
            acc[i][0] = _mm512_setzero_si512();
            acc[i][1] = _mm512_setzero_si512();
        }
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
            int const rowStop = std::min(kRows, static_cast<int>(kb + 1) * rowsPerStep);
            for (int r = static_cast<int>(kb) * rowsPerStep; r < rowStop; ++r)
            {
                prefetchOutputRow<E>(args, constants, m0 + kRows + r);
            }
            int8_t const* bk = b + kb * kPanelStep;
            int64_t const steps = std::min<int64_t>(16, quads - kb * 16);
            int64_t const k0 = kb * 64;
            for (int64_t s = 0; s < steps; ++s)
            {
                __m512i const b0 = _mm512_load_si512(bk + s * 64);
                __m512i const b1 = _mm512_load_si512(bk + kTileBytes + s * 64);
#pragma GCC unroll 8
                for (int i = 0; i < kRows; ++i)
                {
                    __m512i const x = broadcast4(a[i] + k0 + s * 4);
                    acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
                    acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
                }
            }
        }
        int const live = static_cast<int>(std::min<int64_t>(kRows, rowEnd - m0));
#pragma GCC unroll 8
        for (int i = 0; i < kRows; ++i) // unrolled: the sums stay in registers
        {
            if (i >= live)
            {
                break;
            }
            finishRow<E>(args, constants, m0 + i, 0, acc[i][0]);
            if (secondHalf)
            {
                finishRow<E>(args, constants, m0 + i, 1, acc[i][1]);
            }
        }
    }
}
} // namespace
#endif

bool vnniCompiled()
{
    return DEBX_HAVE_VNNI != 0;
}

void runTaskVnni(MatMulArgs const& args, int64_t task)
{
#if DEBX_HAVE_VNNI
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
