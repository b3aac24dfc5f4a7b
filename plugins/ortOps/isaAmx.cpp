/*
 * debx: the AMX-BF16 twin of the attention's tile kernels (see isaTwins.h), called by the AVX-512 attention
 * (isaAvx512.cpp). Compiled with AVX-512 + AMX-BF16 + AVX512-BF16 flags into the namespace debx_avx512: the tile
 * products of disentangledAttentionAmx.cpp, with the conversions and packing of disentangledAttentionBf16.cpp (real
 * VCVTNE2PS2BF16; every AMX-BF16 CPU has AVX512_BF16). Its kernels run only after amx::available() said yes.
 */
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define debx debx_avx512
#include "../disentangledAttention/disentangledAttentionAmx.cpp"
#include "../disentangledAttention/disentangledAttentionBf16.cpp"
#undef debx

#include "isaTwins.h"

namespace
{

namespace attention = debx_avx512::attention;

attention::Bf16Kernels const kKernels{&attention::bf16::toBf16Rows, &attention::bf16::packRows,
    &attention::bf16::packValues, &attention::amx::bandProducts, &attention::bf16::dotLanes,
    &attention::bf16::convertLanes};

} // namespace

namespace debx
{
namespace isa
{

void const* attentionAmxBf16Kernels()
{
    return attention::amx::available() && attention::bf16::compiled() ? &kKernels : nullptr;
}

} // namespace isa
} // namespace debx
