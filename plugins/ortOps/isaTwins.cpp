/*
 * debx: the run-time choice between the baseline code and its AVX-512 twins (see isaTwins.h). Baseline x86-64.
 */
#include "isaTwins.h"

#include "../disentangledAttention/disentangledAttentionBf16.h"

#include <cstdlib>
#include <cstring>

namespace debx
{
namespace isa
{

bool baselineOnly()
{
    static bool const yes = [] {
        char const* v = std::getenv("DEBX_CPU_ISA");
        return v != nullptr && std::strcmp(v, "baseline") == 0;
    }();
    return yes;
}

bool avx512()
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (baselineOnly())
    {
        return false;
    }
    // __builtin_cpu_supports also checks that the OS saves the ZMM state (XGETBV)
    static bool const yes = avx512Compiled() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2")
        && __builtin_cpu_supports("fma");
    return yes;
#else
    return false;
#endif
}

namespace
{

bool avx512Bf16Cpu()
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static bool const yes = __builtin_cpu_supports("avx512bf16");
    return yes;
#else
    return false;
#endif
}

} // namespace

void const* attentionBf16Kernels(int family)
{
    using attention::Bf16Family;
    if (!avx512())
    {
        return nullptr;
    }
    switch (static_cast<Bf16Family>(family))
    {
    case Bf16Family::kAmx: return avx512Bf16Cpu() ? attentionAmxBf16Kernels() : nullptr;
    case Bf16Family::kAvx512Bf16: return avx512Bf16Cpu() ? attentionAvx512Bf16Kernels() : nullptr;
    case Bf16Family::kAvx512Bf16Emulated: return attentionAvx512Bf16EmulatedKernels();
    case Bf16Family::kBest:
    {
        void const* amx = attentionBf16Kernels(static_cast<int>(Bf16Family::kAmx));
        return amx != nullptr ? amx : attentionBf16Kernels(static_cast<int>(Bf16Family::kAvx512Bf16));
    }
    case Bf16Family::kFloat32:
    default: return nullptr;
    }
}

} // namespace isa
} // namespace debx
