/*
 * debx: the INT8 matmul on 256-bit vectors, one kernel for two families (matMulInt8Cpu.h), each compiled in its own
 * translation unit with its own flags:
 *
 *   avx2      matMulInt8Avx2.cpp (AVX2 + FMA): CPUs without any VNNI (Intel Haswell to Ice Lake client, AMD Zen 1-3).
 *             uint8 x int8 without VPMADDUBSW, whose int16 pair sums saturate (255 * 127 * 2 > 32767): A's 4 bytes
 *             and B's bytes are widened to int16 (VPMOVZXBW / VPMOVSXBW) and multiplied with VPMADDWD, whose int32
 *             pair sums are exact. One int32 lane then holds half of a column's 4 values of k, so a row keeps two
 *             accumulators per 8 columns, added pairwise (VPHADDD) once its K loop is done.
 *   avx-vnni  matMulInt8AvxVnni.cpp (AVX2 + FMA + AVX-VNNI): VEX VPDPBUSD on 8 columns x 4 values of k, for CPUs
 *             with AVX-VNNI but no AVX-512 (Intel Alder Lake and later client CPUs, Sierra Forest; AMD Zen 5 has it
 *             too, but runs avx512-vnni first).
 *
 * Both read the packed panels of the AMX and AVX-512 VNNI kernels as they are (a B tile row: 16 columns x 4 values
 * of k): a task (row group, 32-column panel) walks the panel in column slices (the policy's kColumns: 8 for avx2,
 * 16 for avx-vnni), and for each slice its rows kRows at a time, kRows x 2 accumulators in YMM registers, the
 * slice's two B vectors loaded once per step of k for the kRows rows, so the slice's weights stay in L1. The next
 * panel is prefetched into L2 while this one computes, the next rows' output lines into L1, and the epilogues are
 * those of the other families (matMulInt8Epilogue.h, 8 columns at a time) applied straight from the registers.
 *
 * Internal linkage (anonymous namespace); include after matMulInt8Epilogue.h in a unit compiled for AVX2 + FMA.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <type_traits>
#include <vector>

#include "matMulInt8Epilogue.h"

namespace debx
{
namespace int8
{
namespace
{

inline int32_t load4(uint8_t const* p)
{
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

//! The 256-bit kernel of one family. Policy P: kColumns (columns per slice), kRows (rows per register block), Elem
//! (what broadcastA reads: uint8_t, A itself, or int16_t, rows of A widened by widenRow into a scratch buffer once
//! per register block, so the inner loop's broadcast is a plain load), loadB(step, slice, j) (B vector j of a slice
//! at one step of k), broadcastA(p) (4 values of k of a row), madd(acc, a, b), and finish(acc0, acc1, out) (the
//! 8-column int32 sums of the slice: one vector, or two for a 16-column slice).
template <class P, Epilogue E>
void runTaskYmm(MatMulArgs const& args, int64_t task)
{
    constexpr int kRows = P::kRows;
    constexpr int kSlices = 32 / P::kColumns;
    constexpr int kVectors = P::kColumns / 8; // 8-column vectors of output per slice
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
    PanelConstants8 const constants = panelConstants8(args, panel);
    int const slices = std::min<int>(kSlices, static_cast<int>((W.N - constants.n0 + P::kColumns - 1) / P::kColumns));
    // the next panel (the one this thread most likely runs next) into L2, spread over this task's K steps
    int64_t const panelLines = kBlocks * kPanelStep / 64;
    int8_t const* prefetch = W.tiles + ((panel + 1) % W.panels) * kBlocks * kPanelStep;
    int8_t const* const prefetchEnd = W.panels > 1 ? prefetch + panelLines * 64 : prefetch;
    int64_t const stepsInTask = slices * blocks * kBlocks;
    int const linesPerStep = static_cast<int>((panelLines + stepsInTask - 1) / stepsInTask);
    int const rowsPerStep = static_cast<int>((kRows + kBlocks - 1) / kBlocks); // next block's output rows per step
    using Elem = typename P::Elem;
    constexpr bool kWiden = !std::is_same<Elem, uint8_t>::value;
    int64_t const width = quads * 4;            // the values of k the kernel reads per row
    int64_t const stride = (width + 15) / 16 * 16; // of a widened row
    thread_local std::vector<Elem> scratch;
    if constexpr (kWiden)
    {
        if (scratch.size() < static_cast<size_t>(kRows * stride))
        {
            scratch.resize(static_cast<size_t>(kRows * stride));
        }
    }

    for (int slice = 0; slice < slices; ++slice)
    {
        for (int64_t m0 = rowBegin; m0 < rowEnd; m0 += kRows)
        {
            Elem const* a[kRows];
            for (int i = 0; i < kRows; ++i) // rows past M repeat the last one (computed, never stored)
            {
                uint8_t const* row = args.A + std::min(m0 + i, args.M - 1) * args.lda;
                if constexpr (kWiden)
                {
                    Elem* wide = scratch.data() + i * stride;
                    P::widenRow(row, width, wide);
                    a[i] = wide;
                }
                else
                {
                    a[i] = row;
                }
            }
            __m256i acc[kRows][2];
            for (int i = 0; i < kRows; ++i)
            {
                acc[i][0] = _mm256_setzero_si256();
                acc[i][1] = _mm256_setzero_si256();
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
                    prefetchOutputRow8<E>(args, constants, m0 + kRows + r, slice * P::kColumns, P::kColumns);
                }
                int8_t const* bk = b + kb * kPanelStep;
                int64_t const steps = std::min<int64_t>(16, quads - kb * 16);
                int64_t const k0 = kb * 64;
                for (int64_t s = 0; s < steps; ++s)
                {
                    int8_t const* const row = bk + s * 64;
                    __m256i const b0 = P::loadB(row, slice, 0);
                    __m256i const b1 = P::loadB(row, slice, 1);
#pragma GCC unroll 8
                    for (int i = 0; i < kRows; ++i)
                    {
                        __m256i const x = P::broadcastA(a[i] + k0 + s * 4);
                        acc[i][0] = P::madd(acc[i][0], x, b0);
                        acc[i][1] = P::madd(acc[i][1], x, b1);
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
                __m256i out[kVectors];
                P::finish(acc[i][0], acc[i][1], out);
                for (int v = 0; v < kVectors; ++v)
                {
                    int const s8 = slice * kVectors + v;
                    if (constants.cols[s8] > 0)
                    {
                        finishRow8<E>(args, constants, m0 + i, s8, out[v]);
                    }
                }
            }
        }
    }
}

//! Run one task of the family P with the epilogue args.epilogue.
template <class P>
void runTaskWith(MatMulArgs const& args, int64_t task)
{
    switch (args.epilogue)
    {
    case Epilogue::kFloat: runTaskYmm<P, Epilogue::kFloat>(args, task); break;
    case Epilogue::kResidual: runTaskYmm<P, Epilogue::kResidual>(args, task); break;
    case Epilogue::kGeluQuantize: runTaskYmm<P, Epilogue::kGeluQuantize>(args, task); break;
    }
}

} // namespace
} // namespace int8
} // namespace debx
