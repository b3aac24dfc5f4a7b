/*
 * debx: the attention's bf16 products on AVX-512 BF16 (see disentangledAttentionBf16.h). Not a translation unit of
 * its own: plugins/ortOps/isaAvx512Bf16.cpp compiles it for AVX-512 BF16 (the real instructions), isaAmx.cpp for the
 * AMX family's conversions and packing, and isaAvx512Bf16Emu.cpp a third time with DEBX_BF16_EMULATED = 1 for
 * AVX-512 F/BW/VL/DQ only, where the two bf16 instructions below are software (bit-exact, per Intel's pseudo-code),
 * so the code the tests run on CPUs without AVX-512 BF16 is this code.
 *
 * Products: C[16 rb + i, 16 cb + c] = sum over the tile steps and pairs p of A[i][2p] X[c][2p] + A[i][2p + 1] X[c][2p + 1]:
 * a B tile row is one VDPBF16PS operand (16 columns x one bf16 pair), A's pair is broadcast to all lanes, and 8 rows x
 * 2 column blocks of float32 sums stay in 16 ZMM registers across the contraction.
 */
#include "disentangledAttentionBf16.h"

#include "disentangledAttentionAmx.h"

#include <cstdint>
#include <cstring>

#if !defined(DEBX_BF16_EMULATED)
#define DEBX_BF16_EMULATED 0
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && (DEBX_BF16_EMULATED || defined(__AVX512BF16__))
#define DEBX_HAVE_DPBF16 1
#include <immintrin.h>
#else
#define DEBX_HAVE_DPBF16 0
#endif

namespace debx
{
namespace attention
{
namespace bf16
{
#if DEBX_HAVE_DPBF16
namespace
{

using amx::kTileElems;

#if DEBX_BF16_EMULATED
// ---- the two instructions in software: exact, whatever MXCSR says -----------------------------------------------

// (functions, not constants: a namespace-scope vector would be initialised at load, on CPUs without AVX-512 too)
inline __m512i signBits()
{
    return _mm512_set1_epi32(INT32_MIN);
}

inline __m512i exponentBits()
{
    return _mm512_set1_epi32(0x7F800000);
}

//! Denormal lanes -> zero of the same sign ("input denormals are always treated as zero").
inline __m512 daz(__m512 x)
{
    __m512i const u = _mm512_castps_si512(x);
    return _mm512_castsi512_ps(_mm512_mask_and_epi32(u, _mm512_testn_epi32_mask(u, exponentBits()), u, signBits()));
}

//! round_to_float32(x * y + z), x * y exact (bfloat16 factors): in double, where no intermediate rounding can change
//! the float32 result (the sum of a 16-bit and a 24-bit significand never lands falsely on a float32 midpoint), with
//! round to nearest even and x86's flush to zero: a result that is tiny after rounding to 24 bits with unbounded
//! exponent (|r| < 2^-126 - 2^-151; at that midpoint it rounds up to 2^-126) becomes a zero of its sign.
inline __m256 fmaFtz(__m256 x, __m256 y, __m256 z)
{
    constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m512d const r = _mm512_fmadd_round_pd(_mm512_cvtps_pd(x), _mm512_cvtps_pd(y), _mm512_cvtps_pd(z), kRne);
    __mmask8 const tiny = _mm512_cmp_pd_mask(_mm512_abs_pd(r), _mm512_set1_pd(0x1p-126 - 0x1p-151), _CMP_LT_OQ);
    __m512i const u = _mm512_castpd_si512(r);
    __m512d const flushed
        = _mm512_castsi512_pd(_mm512_mask_and_epi64(u, tiny, u, _mm512_set1_epi64(INT64_MIN)));
    return _mm512_cvt_roundpd_ps(flushed, kRne);
}

inline __m256 low8(__m512 x)
{
    return _mm512_castps512_ps256(x);
}

inline __m256 high8(__m512 x)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}

inline __m512 join(__m256 lo, __m256 hi)
{
    return _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

inline __m512 fmaFtz(__m512 x, __m512 y, __m512 z)
{
    return join(fmaFtz(low8(x), low8(y), low8(z)), fmaFtz(high8(x), high8(y), high8(z)));
}

inline __mmask16 isNan(__m512 x)
{
    return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
}

//! x with the quiet bit set.
inline __m512i quiet(__m512 x)
{
    return _mm512_or_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x00400000));
}

//! VDPBF16PS acc, a, b: per float32 lane i, acc += a[2i+1] b[2i+1] (one FMA), then acc += a[2i] b[2i] (another),
//! each rounded to nearest even, input denormals as zero, output denormals flushed; MXCSR neither read nor written.
//! A NaN result is the quieted NaN of the first of a low, b low, a high, b high, acc that is one (Intel's NaN
//! priorities for the instruction), else the default NaN (inf x 0, inf - inf).
inline __m512 dot(__m512 acc, __m512i a, __m512i b)
{
    __m512i const high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000U));
    __m512 const aHi = daz(_mm512_castsi512_ps(_mm512_and_si512(a, high)));
    __m512 const bHi = daz(_mm512_castsi512_ps(_mm512_and_si512(b, high)));
    __m512 const aLo = daz(_mm512_castsi512_ps(_mm512_slli_epi32(a, 16)));
    __m512 const bLo = daz(_mm512_castsi512_ps(_mm512_slli_epi32(b, 16)));
    __m512 const r = fmaFtz(aLo, bLo, fmaFtz(aHi, bHi, daz(acc)));
    __mmask16 const nan = isNan(r);
    if (nan == 0)
    {
        return r;
    }
    __m512i pick = _mm512_set1_epi32(static_cast<int32_t>(0xFFC00000U)); // lowest priority first
    pick = _mm512_mask_mov_epi32(pick, isNan(acc), quiet(acc));
    pick = _mm512_mask_mov_epi32(pick, isNan(bHi), quiet(bHi));
    pick = _mm512_mask_mov_epi32(pick, isNan(aHi), quiet(aHi));
    pick = _mm512_mask_mov_epi32(pick, isNan(bLo), quiet(bLo));
    pick = _mm512_mask_mov_epi32(pick, isNan(aLo), quiet(aLo));
    return _mm512_mask_mov_ps(r, nan, _mm512_castsi512_ps(pick));
}

//! One float32 lane per 32-bit lane -> bfloat16 in its low 16 bits (VCVTNEPS2BF16's convert_fp32_to_bfloat16): zero
//! and denormal -> zero of the sign; NaN -> its top half with the quiet bit; else round to nearest even (an integer
//! add of 0x7FFF + the kept lsb, which also takes a value past the largest bfloat16 to infinity, and keeps infinity).
inline __m512i toBf16Lanes(__m512 x)
{
    __m512i const u = _mm512_castps_si512(x);
    __m512i const top = _mm512_srli_epi32(u, 16);
    __m512i const bias = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(top, _mm512_set1_epi32(1)));
    __m512i out = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    out = _mm512_mask_and_epi32(out, _mm512_testn_epi32_mask(u, exponentBits()), top, _mm512_set1_epi32(0x8000));
    return _mm512_mask_or_epi32(out, isNan(x), top, _mm512_set1_epi32(0x40));
}

//! VCVTNE2PS2BF16 hi, lo: 32 bfloat16, lo's 16 values first.
inline __m512i convert(__m512 hi, __m512 lo)
{
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm512_cvtepi32_epi16(toBf16Lanes(lo))), _mm512_cvtepi32_epi16(toBf16Lanes(hi)), 1);
}
#else
// ---- the instructions ------------------------------------------------------------------------------------------

inline __m512 dot(__m512 acc, __m512i a, __m512i b)
{
    return _mm512_dpbf16_ps(acc, (__m512bh) a, (__m512bh) b);
}

inline __m512i convert(__m512 hi, __m512 lo)
{
    return (__m512i) _mm512_cvtne2ps_pbh(hi, lo);
}
#endif

__mmask16 tail16(int64_t left)
{
    return static_cast<__mmask16>(left >= 16 ? 0xFFFF : left <= 0 ? 0 : (1U << left) - 1U);
}

//! C[i, 16 nb + c] for the 16 rows of a (bf16, row stride lda) and NB column blocks of tiles (each kSteps tiles).
template <int NB>
inline void blockProducts(uint16_t const* a, int64_t lda, int kSteps, uint16_t const* tiles, float* c, int64_t ldc)
{
    int64_t const blockElems = static_cast<int64_t>(kSteps) * kTileElems;
    for (int r0 = 0; r0 < 16; r0 += 8)
    {
        __m512 acc[8][NB];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
        {
#pragma GCC unroll 4
            for (int nb = 0; nb < NB; ++nb)
            {
                acc[i][nb] = _mm512_setzero_ps();
            }
        }
        for (int ks = 0; ks < kSteps; ++ks)
        {
            uint16_t const* row = a + r0 * lda + ks * 32;
            uint16_t const* b = tiles + static_cast<int64_t>(ks) * kTileElems;
            for (int p = 0; p < 16; ++p) // the 16 bf16 pairs of this step
            {
                __m512i bv[NB];
#pragma GCC unroll 4
                for (int nb = 0; nb < NB; ++nb)
                {
                    bv[nb] = _mm512_loadu_si512(b + nb * blockElems + p * 32);
                }
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i)
                {
                    int32_t pair = 0;
                    std::memcpy(&pair, row + i * lda + 2 * p, sizeof pair);
                    __m512i const av = _mm512_set1_epi32(pair);
#pragma GCC unroll 4
                    for (int nb = 0; nb < NB; ++nb)
                    {
                        acc[i][nb] = dot(acc[i][nb], av, bv[nb]);
                    }
                }
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
        {
#pragma GCC unroll 4
            for (int nb = 0; nb < NB; ++nb)
            {
                _mm512_storeu_ps(c + (r0 + i) * ldc + nb * 16, acc[i][nb]);
            }
        }
    }
}

} // namespace

bool compiled()
{
    return true;
}

void toBf16Rows(float const* X, int64_t ldx, int rows, int cols, int rowsPad, int colsPad, uint16_t* out)
{
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
            _mm512_storeu_si512(dst + c, convert(hi, lo));
        }
    }
}

void packRows(uint16_t const* X, int64_t ldx, int rowBlocks, int kSteps, uint16_t* out)
{
    // tile row r = the r-th bf16 pair (one 32-bit lane) of each of the 16 rows: a 16 x 16 transpose of 32-bit lanes,
    // one gather per tile row
    __m512i const rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(static_cast<int32_t>(ldx / 2)));
    for (int cb = 0; cb < rowBlocks; ++cb)
    {
        for (int ks = 0; ks < kSteps; ++ks)
        {
            uint16_t* tile = out + (static_cast<int64_t>(cb) * kSteps + ks) * kTileElems;
            uint16_t const* src = X + static_cast<int64_t>(cb) * 16 * ldx + ks * 32;
            for (int r = 0; r < 16; ++r)
            {
                __m512i const lanes = _mm512_add_epi32(rows, _mm512_set1_epi32(r));
                _mm512_storeu_si512(tile + r * 32, _mm512_i32gather_epi32(lanes, src, 4));
            }
        }
    }
}

void packValues(float const* V, int64_t ldv, int keys, int D, int keySteps, uint16_t* out)
{
    int const blocks = (D + 15) / 16;
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
                __m512i const ab = convert(b, a); // a in lanes 0-15, b in 16-31
                _mm512_storeu_si512(tile + r * 32, _mm512_permutexvar_epi16(interleave, ab));
            }
        }
    }
}

void bandProducts(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
    int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase)
{
    int64_t const blockElems = static_cast<int64_t>(kSteps) * kTileElems;
    for (int rb = 0; rb < rowBlocks; ++rb)
    {
        uint16_t const* a = A + static_cast<int64_t>(rb) * 16 * lda;
        float* c = C + static_cast<int64_t>(rb) * 16 * ldc - colBase;
        int cb = cbFirst[rb];
        for (; cb + 2 <= cbEnd[rb]; cb += 2)
        {
            blockProducts<2>(a, lda, kSteps, tiles + cb * blockElems, c + cb * 16, ldc);
        }
        if (cb < cbEnd[rb])
        {
            blockProducts<1>(a, lda, kSteps, tiles + cb * blockElems, c + cb * 16, ldc);
        }
    }
}

void dotLanes(float* acc, uint16_t const* a, uint16_t const* b, int64_t n)
{
    for (int64_t i = 0; i + 16 <= n; i += 16)
    {
        __m512 const r = dot(_mm512_loadu_ps(acc + i), _mm512_loadu_si512(a + 2 * i), _mm512_loadu_si512(b + 2 * i));
        _mm512_storeu_ps(acc + i, r);
    }
}

void convertLanes(float const* x, uint16_t* out, int64_t n)
{
    for (int64_t i = 0; i + 32 <= n; i += 32)
    {
        _mm512_storeu_si512(out + i, convert(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    }
}

#else // the compiler could not target AVX-512 BF16 (nor AVX-512 for the emulation): nothing here runs

bool compiled()
{
    return false;
}

void toBf16Rows(float const*, int64_t, int, int, int, int, uint16_t*) {}

void packRows(uint16_t const*, int64_t, int, int, uint16_t*) {}

void packValues(float const*, int64_t, int, int, int, uint16_t*) {}

void bandProducts(uint16_t const*, int64_t, int, int, uint16_t const*, int32_t const*, int32_t const*, float*,
    int64_t, int64_t)
{
}

void dotLanes(float*, uint16_t const*, uint16_t const*, int64_t) {}

void convertLanes(float const*, uint16_t*, int64_t) {}
#endif

} // namespace bf16
} // namespace attention
} // namespace debx
