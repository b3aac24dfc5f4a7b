/*
 * debx: the INT8 matmul on AVX-VNNI (family avx-vnni; the kernel is matMulInt8Avx2Kernel.h): VEX VPDPBUSD on
 * 8 columns x 4 values of k, one tile row (16 columns) as two B vectors, for CPUs with AVX-VNNI but no AVX-512.
 *
 * Compiled for AVX2 + FMA + AVX-VNNI (its own flags, no AVX-512); run only after avxVnniAvailable() said yes.
 */
#include "matMulInt8Kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__AVXVNNI__) && !defined(__AVX512F__)
#define DEBX_HAVE_AVXVNNI 1
#include "matMulInt8Avx2Kernel.h"
#else
#define DEBX_HAVE_AVXVNNI 0
#endif

namespace debx
{
namespace int8
{

#if DEBX_HAVE_AVXVNNI
namespace
{
//! 16 columns per slice (one B tile row, as two vectors of 8 columns x 4 values of k); A: its 4 bytes broadcast.
struct AvxVnni
{
    static constexpr int kColumns = 16;
    static constexpr int kRows = 6; // 6 x 2 accumulators + 2 B vectors + 1 broadcast of 16 YMM
    using Elem = uint8_t;

    static __m256i loadB(int8_t const* row, int slice, int j)
    {
        return _mm256_load_si256(reinterpret_cast<__m256i const*>(row + slice * kTileBytes + j * 32));
    }

    static __m256i broadcastA(uint8_t const* p)
    {
        return _mm256_set1_epi32(load4(p));
    }

    static __m256i madd(__m256i acc, __m256i a, __m256i b)
    {
        return _mm256_dpbusd_avx_epi32(acc, a, b);
    }

    static void finish(__m256i acc0, __m256i acc1, __m256i* out)
    {
        out[0] = acc0;
        out[1] = acc1;
    }
};
} // namespace
#endif

bool avxVnniCompiled()
{
    return DEBX_HAVE_AVXVNNI != 0;
}

void runTaskAvxVnni(MatMulArgs const& args, int64_t task)
{
#if DEBX_HAVE_AVXVNNI
    runTaskWith<AvxVnni>(args, task);
#else
    (void) args;
    (void) task;
#endif
}

} // namespace int8
} // namespace debx
