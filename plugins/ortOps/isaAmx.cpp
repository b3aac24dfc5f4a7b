/*
 * debx: the AMX-BF16 twin of the attention's tile kernels (see isaTwins.h), called by the AVX-512 attention
 * (isaAvx512.cpp). Compiled with AVX-512 + AMX-BF16 + AVX512-BF16 flags into the namespace debx_avx512; its kernels
 * run only after debx_avx512::attention::amx::available() said yes.
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
#undef debx

#include "isaTwins.h"

namespace debx
{
namespace isa
{

bool attentionAmxBf16Avx512()
{
    return debx_avx512::attention::amx::available();
}

} // namespace isa
} // namespace debx
