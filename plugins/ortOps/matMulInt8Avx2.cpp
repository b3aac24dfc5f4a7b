/*
 * debx: the INT8 matmul on AVX2 without VNNI (family avx2; the kernel is matMulInt8Avx2Kernel.h): uint8 x int8 by
 * widening both to int16 and VPMADDWD, whose int32 sums are exact (VPMADDUBSW's int16 sums would saturate).
 *
 * Compiled for AVX2 + FMA (its own flags, no AVX-512); run only after avx2Available() said yes.
 */
#include "matMulInt8Kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define DEBX_HAVE_AVX2 1
#include "matMulInt8Avx2Kernel.h"
#else
#define DEBX_HAVE_AVX2 0
#endif

namespace debx
{
namespace int8
{

#if DEBX_HAVE_AVX2
namespace
{
//! 8 columns per slice. A B vector: 4 columns x 4 values of k as int16 (16 bytes of a tile row, sign-extended); A:
//! a row's 4 values of k as int16 (widened once per register block), 4 times; VPMADDWD sums k pairs, so each column
//! has two int32 lanes.
struct Avx2
{
    static constexpr int kColumns = 8;
    static constexpr int kRows = 6; // 6 x 2 accumulators + 2 B vectors + 1 broadcast (+ 1 product) of 16 YMM
    using Elem = int16_t;

    //! row[0, width) as int16 into out (width a multiple of 4; out has room for width rounded up to 16)
    static void widenRow(uint8_t const* row, int64_t width, int16_t* out)
    {
        int64_t k = 0;
        for (; k + 16 <= width; k += 16)
        {
            __m128i const v = _mm_loadu_si128(reinterpret_cast<__m128i const*>(row + k));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), _mm256_cvtepu8_epi16(v));
        }
        for (; k < width; ++k)
        {
            out[k] = row[k];
        }
    }

    static __m256i loadB(int8_t const* row, int slice, int j)
    {
        int8_t const* p = row + (slice >> 1) * kTileBytes + (slice & 1) * 32 + j * 16;
        return _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<__m128i const*>(p)));
    }

    static __m256i broadcastA(int16_t const* p)
    {
        int64_t v;
        std::memcpy(&v, p, 8);
        return _mm256_set1_epi64x(v);
    }

    static __m256i madd(__m256i acc, __m256i a, __m256i b)
    {
        return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
    }

    //! acc0: columns 0-3, acc1: columns 4-7, two lanes each (k pairs) -> the 8 column sums in order.
    static void finish(__m256i acc0, __m256i acc1, __m256i* out)
    {
        // lanes [c0 c1 c4 c5 | c2 c3 c6 c7] -> [c0 .. c7]
        out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc0, acc1), _MM_SHUFFLE(3, 1, 2, 0));
    }
};
} // namespace
#endif

bool avx2Compiled()
{
    return DEBX_HAVE_AVX2 != 0;
}

void runTaskAvx2(MatMulArgs const& args, int64_t task)
{
#if DEBX_HAVE_AVX2
    runTaskWith<Avx2>(args, task);
#else
    (void) args;
    (void) task;
#endif
}

} // namespace int8
} // namespace debx
