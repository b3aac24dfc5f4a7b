/*
 * debx: the attention's bf16 mode on AVX-512 BF16 (VDPBF16PS, VCVTNE2PS2BF16; see isaTwins.h and
 * ../disentangledAttention/disentangledAttentionBf16.h). Compiled with AVX-512 F/BW/VL + BF16 flags; the kernel source
 * is included into the namespace debx_avx512bf16. Its code runs only where CPUID reports AVX512_BF16.
 */
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define debx debx_avx512bf16
#include "../disentangledAttention/disentangledAttentionBf16.cpp"
#undef debx

#include "isaTwins.h"

namespace
{

namespace bf16 = debx_avx512bf16::attention::bf16;

debx_avx512bf16::attention::Bf16Kernels const kKernels{&bf16::toBf16Rows, &bf16::packRows, &bf16::packValues,
    &bf16::bandProducts, &bf16::dotLanes, &bf16::convertLanes};

} // namespace

namespace debx
{
namespace isa
{

void const* attentionAvx512Bf16Kernels()
{
#if defined(__AVX512BF16__)
    return bf16::compiled() ? &kKernels : nullptr;
#else
    return nullptr;
#endif
}

} // namespace isa
} // namespace debx
