/*
 * debx: the attention's avx512-bf16 mode, emulated: the same kernel source as isaAvx512Bf16.cpp, compiled for
 * AVX-512 F/BW/VL/DQ only with DEBX_BF16_EMULATED = 1, so its two bf16 instructions are bit-exact software
 * (../disentangledAttention/disentangledAttentionBf16.cpp) and everything else is the same code. Never chosen
 * automatically: tests and measurements ask for it (the op's bf16 = 4; debx's DEBX_CPU_ATTENTION=avx512-bf16-emulated)
 * to run avx512-bf16's code path on CPUs without AVX-512 BF16. Namespace debx_avx512bf16emu.
 */
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define DEBX_BF16_EMULATED 1
#define debx debx_avx512bf16emu
#include "../disentangledAttention/disentangledAttentionBf16.cpp"
#undef debx

#include "isaTwins.h"

namespace
{

namespace bf16 = debx_avx512bf16emu::attention::bf16;

debx_avx512bf16emu::attention::Bf16Kernels const kKernels{&bf16::toBf16Rows, &bf16::packRows, &bf16::packValues,
    &bf16::bandProducts, &bf16::dotLanes, &bf16::convertLanes};

} // namespace

namespace debx
{
namespace isa
{

void const* attentionAvx512Bf16EmulatedKernels()
{
    return bf16::compiled() ? &kKernels : nullptr;
}

} // namespace isa
} // namespace debx
