/*
 * debx: LayerNormalization + QuantizeLinear in one pass per row (see layerNormQuantizeCpu.h). AVX-512 with masked
 * tails where the compiler targets it, a plain loop computing the same values otherwise.
 */
#include "layerNormQuantizeCpu.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace debx
{
namespace norm
{
namespace
{

#if defined(__AVX512F__)
__mmask16 tailMask(int64_t left)
{
    return static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1U << left) - 1U);
}

void row(LayerNormQuantizeArgs const& a, int64_t r)
{
    float const* x = a.X + r * a.C;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < a.C; c += 16)
    {
        sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(tailMask(a.C - c), x + c));
    }
    float const mean = _mm512_reduce_add_ps(sum) / static_cast<float>(a.C);
    __m512 const vmean = _mm512_set1_ps(mean);
    __m512 sq = _mm512_setzero_ps();
    for (int64_t c = 0; c < a.C; c += 16)
    {
        __mmask16 const k = tailMask(a.C - c);
        __m512 const d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vmean);
        sq = _mm512_fmadd_ps(d, d, sq);
    }
    float const rstd = 1.0F / std::sqrt(_mm512_reduce_add_ps(sq) / static_cast<float>(a.C) + a.epsilon);
    __m512 const vrstd = _mm512_set1_ps(rstd);
    __m512 const inv = _mm512_set1_ps(1.0F / a.yScale);
    __m512 const scale = _mm512_set1_ps(a.yScale);
    __m512 const zp = _mm512_set1_ps(static_cast<float>(a.yZeroPoint));
    __m512 const hi = _mm512_set1_ps(255.0F);
    for (int64_t c = 0; c < a.C; c += 16)
    {
        __mmask16 const k = tailMask(a.C - c);
        __m512 const d = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vmean);
        __m512 const beta = a.beta != nullptr ? _mm512_maskz_loadu_ps(k, a.beta + c) : _mm512_setzero_ps();
        __m512 const y = _mm512_fmadd_ps(_mm512_mul_ps(d, vrstd), _mm512_maskz_loadu_ps(k, a.gamma + c), beta);
        __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(y, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, zp), _mm512_setzero_ps()), hi);
        _mm_mask_storeu_epi8(a.Q + r * a.C + c, k, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
        _mm512_mask_storeu_ps(a.F + r * a.C + c, k, a.dequantized ? _mm512_mul_ps(_mm512_sub_ps(q, zp), scale) : y);
    }
}
#else
void row(LayerNormQuantizeArgs const& a, int64_t r)
{
    float const* x = a.X + r * a.C;
    float sum = 0.0F;
    for (int64_t c = 0; c < a.C; ++c)
    {
        sum += x[c];
    }
    float const mean = sum / static_cast<float>(a.C);
    float sq = 0.0F;
    for (int64_t c = 0; c < a.C; ++c)
    {
        sq += (x[c] - mean) * (x[c] - mean);
    }
    float const rstd = 1.0F / std::sqrt(sq / static_cast<float>(a.C) + a.epsilon);
    for (int64_t c = 0; c < a.C; ++c)
    {
        float const y = (x[c] - mean) * rstd * a.gamma[c] + (a.beta != nullptr ? a.beta[c] : 0.0F);
        float const q = std::min(255.0F, std::max(0.0F, std::nearbyint(y * (1.0F / a.yScale)) + a.yZeroPoint));
        a.Q[r * a.C + c] = static_cast<uint8_t>(q);
        a.F[r * a.C + c] = a.dequantized ? (q - static_cast<float>(a.yZeroPoint)) * a.yScale : y;
    }
}
#endif

} // namespace

void runRows(LayerNormQuantizeArgs const& args, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < std::min(r1, args.rows); ++r)
    {
        row(args, r);
    }
}

} // namespace norm
} // namespace debx
