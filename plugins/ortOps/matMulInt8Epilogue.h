/*
 * debx: the epilogues of the INT8 matmul on one row of 16 int32 sums (zero-point correction, scales, bias, then
 * nothing / the residual / GELU + QuantizeLinear), shared by the AMX and the AVX-512 VNNI kernels so both compute
 * the same floats. Internal linkage (anonymous namespace): each ISA translation unit gets its own copy, compiled for
 * its own instructions. Needs __AVX512F__.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <immintrin.h>

#include "../common/cpuVecMath.h"
#include "matMulInt8Cpu.h"

namespace debx
{
namespace int8
{
namespace
{

//! What the epilogue needs per column of a 32-column panel, loaded once per task instead of once per row.
struct PanelConstants
{
    __m512i offset[2]; // a_zp * colSum
    __m512 scale[2];
    __m512 bias[2];
    __mmask16 mask[2]; // columns inside N
    int64_t n0;        // first column of the panel
    __m512 invYScale;  // kGeluQuantize
    __m512 yZeroPoint;
};

inline PanelConstants panelConstants(MatMulArgs const& args, int64_t panel)
{
    PackedWeights const& W = *args.B;
    PanelConstants c{};
    c.n0 = panel * 32;
    for (int half = 0; half < 2; ++half)
    {
        int64_t const n0 = c.n0 + half * 16;
        int64_t const cols = std::max<int64_t>(0, std::min<int64_t>(16, W.N - n0));
        __mmask16 const k = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1U << cols) - 1U);
        c.mask[half] = k;
        c.offset[half] = _mm512_mullo_epi32(
            _mm512_set1_epi32(args.aZeroPoint), _mm512_maskz_loadu_epi32(k, W.colSum.data() + n0));
        c.scale[half] = _mm512_maskz_loadu_ps(k, args.scale + n0);
        c.bias[half] = args.bias != nullptr ? _mm512_maskz_loadu_ps(k, args.bias + n0) : _mm512_setzero_ps();
    }
    c.invYScale = _mm512_set1_ps(args.epilogue == Epilogue::kGeluQuantize ? 1.0F / args.yScale : 0.0F);
    c.yZeroPoint = _mm512_set1_ps(static_cast<float>(args.yZeroPoint));
    return c;
}

//! Finish the 16 sums `acc` of row m, columns [n0 + 16 half, +16) of the panel (masked past N).
template <Epilogue E>
inline void finishRow(MatMulArgs const& args, PanelConstants const& c, int64_t m, int half, __m512i acc)
{
    __mmask16 const k = c.mask[half];
    __m512i const v = _mm512_sub_epi32(acc, c.offset[half]);
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), c.scale[half], c.bias[half]);
    int64_t const at = m * args.B->N + c.n0 + half * 16;
    if constexpr (E == Epilogue::kFloat)
    {
        _mm512_mask_storeu_ps(static_cast<float*>(args.Y) + at, k, y);
    }
    else if constexpr (E == Epilogue::kResidual)
    {
        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, args.residual + at));
        _mm512_mask_storeu_ps(static_cast<float*>(args.Y) + at, k, y);
    }
    else
    {
        // QuantizeLinear: x / scale (as x * (1 / scale)), round half to even, + zero point, saturate to [0, 255]
        __m512 q = _mm512_mul_ps(vec::gelu(y), c.invYScale);
        q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_max_ps(_mm512_add_ps(q, c.yZeroPoint), _mm512_setzero_ps());
        q = _mm512_min_ps(q, _mm512_set1_ps(255.0F));
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(args.Y) + at, k, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
    }
}

//! Ask for the output lines (and residual lines) of row m of this panel, so the epilogue's stores and loads find
//! them in L1 when it runs.
template <Epilogue E>
inline void prefetchOutputRow(MatMulArgs const& args, PanelConstants const& c, int64_t m)
{
    if (m >= args.M)
    {
        return;
    }
    int64_t const at = m * args.B->N + c.n0;
    if constexpr (E == Epilogue::kGeluQuantize)
    {
        _m_prefetchw(static_cast<uint8_t*>(args.Y) + at);
    }
    else
    {
        _m_prefetchw(static_cast<float*>(args.Y) + at);
        _m_prefetchw(static_cast<float*>(args.Y) + at + 16);
        if constexpr (E == Epilogue::kResidual)
        {
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at + 16), _MM_HINT_T0);
        }
    }
}

constexpr int64_t kTileBytes = 1024;           // 16 rows x 64 bytes
constexpr int64_t kPanelStep = 2 * kTileBytes; // one 64-wide K step of a 32-column panel

} // namespace
} // namespace int8
} // namespace debx
