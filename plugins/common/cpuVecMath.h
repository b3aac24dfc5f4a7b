/*
 * debx: vector float math shared by the CPU kernels (attention softmax, INT8 matmul epilogues): 16 floats where
 * __AVX512F__ is defined, 8 floats (the same formulas) where __AVX2__ and __FMA__ are. Header only, no TensorRT or
 * ONNX Runtime types. Internal linkage (static): every translation unit compiled for its own instruction set
 * (plugins/ortOps/isa*.cpp, matMulInt8{Amx,Vnni,Avx2,AvxVnni}.cpp) keeps its own copy, so the linker never swaps in one
 * compiled for other instructions.
 */
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

namespace debx
{
namespace vec
{

//! exp(x) for 16 floats; exactly 0 below -87 (where float32 exp underflows anyway). Cody-Waite reduction and a
//! degree-7 polynomial, ~1 ulp.
static inline __m512 exp(__m512 x)
{
    __mmask16 const live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0F), _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0F)), _mm512_set1_ps(88.0F));
    __m512 const n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375F), x); // x - n ln2, ln2 split in two parts
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4F), r);
    __m512 p = _mm512_set1_ps(1.0F / 5040.0F);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F / 720.0F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F / 120.0F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F / 24.0F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F / 6.0F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0F));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
}

//! 1 / d for 16 floats d >= 1: the 14-bit hardware estimate and one Newton step (~1 ulp), no division.
static inline __m512 reciprocal(__m512 d)
{
    __m512 const r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0F))); // r (2 - d r)
}

//! erf(x) for 16 floats: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), odd symmetry.
static inline __m512 erf(__m512 x)
{
    __m512 const ax = _mm512_abs_ps(x);
    __m512 const t = reciprocal(_mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911F), _mm512_set1_ps(1.0F)));
    __m512 p = _mm512_set1_ps(1.061405429F);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027F));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741F));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736F));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592F));
    p = _mm512_mul_ps(p, t);
    __m512 const e = exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(ax, ax)));
    __m512 const y = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0F)); // 1 - p e^{-x^2}
    // copy the sign of x
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y),
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000U)))));
}

//! GELU, the exact (erf) form: 0.5 x (1 + erf(x / sqrt 2)), as ONNX Gelu and com.microsoft Gelu define it.
static inline __m512 gelu(__m512 x)
{
    __m512 const e = erf(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752F)));
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5F)), _mm512_add_ps(e, _mm512_set1_ps(1.0F)));
}

} // namespace vec
} // namespace debx
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace debx
{
namespace vec
{

//! exp(x) for 8 floats: the 16-float exp above (same reduction and polynomial, 2^n built in the exponent bits:
//! n stays in [-126, 127] here, so the scaling is exact, as VSCALEFPS is).
static inline __m256 exp(__m256 x)
{
    __m256 const live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0F), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0F)), _mm256_set1_ps(88.0F));
    __m256 const n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341F)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375F), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4F), r);
    __m256 p = _mm256_set1_ps(1.0F / 5040.0F);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F / 720.0F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F / 120.0F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F / 24.0F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F / 6.0F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0F));
    __m256i const bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(live, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

//! erf(x) for 8 floats: Abramowitz & Stegun 7.1.26 as above (1 / d by division: there is no 14-bit estimate).
static inline __m256 erf(__m256 x)
{
    __m256 const sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000U)));
    __m256 const ax = _mm256_andnot_ps(sign, x);
    __m256 const t = _mm256_div_ps(_mm256_set1_ps(1.0F), _mm256_fmadd_ps(ax, _mm256_set1_ps(0.3275911F),
                                                                           _mm256_set1_ps(1.0F)));
    __m256 p = _mm256_set1_ps(1.061405429F);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027F));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741F));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736F));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592F));
    p = _mm256_mul_ps(p, t);
    __m256 const e = exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ax, ax)));
    __m256 const y = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0F));
    return _mm256_or_ps(y, _mm256_and_ps(x, sign));
}

//! GELU, the exact (erf) form, for 8 floats.
static inline __m256 gelu(__m256 x)
{
    __m256 const e = erf(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752F)));
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5F)), _mm256_add_ps(e, _mm256_set1_ps(1.0F)));
}

} // namespace vec
} // namespace debx
#endif
