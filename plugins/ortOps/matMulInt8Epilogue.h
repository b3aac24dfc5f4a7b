/*
 * debx: the epilogues of the INT8 matmul on one row of int32 sums (zero-point correction, scales, bias, then
 * nothing / the residual / GELU + QuantizeLinear), shared by every kernel family so all compute the same floats:
 * 16 sums at a time (ZMM, AVX-512 masks) for the AMX and AVX-512 VNNI kernels, 8 at a time (YMM) for the AVX2 and
 * AVX-VNNI ones (PanelConstants8 / finishRow8: the same operations in the same order, so the float and residual
 * outputs are bit for bit those of the 16-wide form). Internal linkage (anonymous namespace): each ISA translation
 * unit gets its own copy, compiled for its own instructions. Needs __AVX512F__, or __AVX2__ and __FMA__.
 */
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "../common/cpuVecMath.h"
#include "matMulInt8Cpu.h"

namespace debx
{
namespace int8
{
namespace
{

constexpr int64_t kTileBytes = 1024;           // 16 rows x 64 bytes
constexpr int64_t kPanelStep = 2 * kTileBytes; // one 64-wide K step of a 32-column panel

#if defined(__AVX512F__)
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

#endif // __AVX512F__

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
//! PanelConstants for 8-wide kernels: a 32-column panel as four slices of 8 columns.
struct PanelConstants8
{
    __m256i offset[4]; // a_zp * colSum
    __m256 scale[4];
    __m256 bias[4];
    __m256i mask[4];   // all ones in the columns inside N (maskload / maskstore)
    int cols[4];       // columns of the slice inside N (0 to 8)
    int64_t n0;        // first column of the panel
    __m256 invYScale;  // kGeluQuantize
    __m256 yZeroPoint;
};

inline PanelConstants8 panelConstants8(MatMulArgs const& args, int64_t panel)
{
    PackedWeights const& W = *args.B;
    PanelConstants8 c{};
    c.n0 = panel * 32;
    __m256i const lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int s = 0; s < 4; ++s)
    {
        int64_t const n0 = c.n0 + s * 8;
        int const cols = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(8, W.N - n0)));
        __m256i const k = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), lanes);
        c.cols[s] = cols;
        c.mask[s] = k;
        c.offset[s] = _mm256_mullo_epi32(_mm256_set1_epi32(args.aZeroPoint),
            _mm256_maskload_epi32(reinterpret_cast<int const*>(W.colSum.data() + n0), k));
        c.scale[s] = _mm256_maskload_ps(args.scale + n0, k);
        c.bias[s] = args.bias != nullptr ? _mm256_maskload_ps(args.bias + n0, k) : _mm256_setzero_ps();
    }
    c.invYScale = _mm256_set1_ps(args.epilogue == Epilogue::kGeluQuantize ? 1.0F / args.yScale : 0.0F);
    c.yZeroPoint = _mm256_set1_ps(static_cast<float>(args.yZeroPoint));
    return c;
}

//! Finish the 8 sums `acc` of row m, columns [n0 + 8 slice, +8) of the panel (only those inside N are written).
template <Epilogue E>
inline void finishRow8(MatMulArgs const& args, PanelConstants8 const& c, int64_t m, int slice, __m256i acc)
{
    __m256i const k = c.mask[slice];
    bool const full = c.cols[slice] == 8;
    __m256i const v = _mm256_sub_epi32(acc, c.offset[slice]);
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), c.scale[slice], c.bias[slice]);
    int64_t const at = m * args.B->N + c.n0 + slice * 8;
    if constexpr (E == Epilogue::kGeluQuantize)
    {
        // QuantizeLinear: x / scale (as x * (1 / scale)), round half to even, + zero point, saturate to [0, 255]
        __m256 q = _mm256_mul_ps(vec::gelu(y), c.invYScale);
        q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_max_ps(_mm256_add_ps(q, c.yZeroPoint), _mm256_setzero_ps());
        q = _mm256_min_ps(q, _mm256_set1_ps(255.0F));
        __m256i const i = _mm256_cvtps_epi32(q);
        __m128i const w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        __m128i const b = _mm_packus_epi16(w, w);
        uint8_t* const out = static_cast<uint8_t*>(args.Y) + at;
        if (full)
        {
            _mm_storel_epi64(reinterpret_cast<__m128i*>(out), b);
        }
        else
        {
            alignas(16) uint8_t bytes[16];
            _mm_store_si128(reinterpret_cast<__m128i*>(bytes), b);
            std::memcpy(out, bytes, static_cast<size_t>(c.cols[slice]));
        }
    }
    else
    {
        float* const out = static_cast<float*>(args.Y) + at;
        if constexpr (E == Epilogue::kResidual)
        {
            y = _mm256_add_ps(y, full ? _mm256_loadu_ps(args.residual + at) : _mm256_maskload_ps(args.residual + at, k));
        }
        if (full)
        {
            _mm256_storeu_ps(out, y);
        }
        else
        {
            _mm256_maskstore_ps(out, k, y);
        }
    }
}

//! prefetchOutputRow for the 8-wide kernels: the lines of row m that columns [n0 + first, + count) of the panel
//! write (and, with kResidual, read).
template <Epilogue E>
inline void prefetchOutputRow8(MatMulArgs const& args, PanelConstants8 const& c, int64_t m, int first, int count)
{
    if (m >= args.M)
    {
        return;
    }
    int64_t const at = m * args.B->N + c.n0 + first;
    if constexpr (E == Epilogue::kGeluQuantize)
    {
        _mm_prefetch(reinterpret_cast<char const*>(static_cast<uint8_t*>(args.Y) + at), _MM_HINT_T0);
    }
    else
    {
        _mm_prefetch(reinterpret_cast<char const*>(static_cast<float*>(args.Y) + at), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<char const*>(static_cast<float*>(args.Y) + at + count - 1), _MM_HINT_T0);
        if constexpr (E == Epilogue::kResidual)
        {
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at + count - 1), _MM_HINT_T0);
        }
    }
}
#endif // __AVX2__ && __FMA__ && !__AVX512F__

} // namespace
} // namespace int8
} // namespace debx
