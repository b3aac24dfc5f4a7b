/*
 * debx: the run-time choice between the baseline code and its AVX-512 twins (see isaTwins.h). Baseline x86-64.
 */
#include "isaTwins.h"

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

bool attentionBf16()
{
    static bool const yes = avx512() && attentionAmxBf16Avx512();
    return yes;
}

} // namespace isa
} // namespace debx
