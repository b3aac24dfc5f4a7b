/*
 * debx: AVX-512 float math shared by the CPU kernels (attention softmax, INT8 matmul epilogues). Header only, no
 * TensorRT or ONNX Runtime types; compiled only where __AVX512F__ is defined. Internal linkage (static): every
 * translation unit compiled for its own instruction set (plugins/ortOps/isa*.cpp, matMulInt8{Amx,Vnni}.cpp) keeps its
 * own copy, so the linker never swaps in one compiled for other instructions.
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
