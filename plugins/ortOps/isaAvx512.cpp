/*
 * debx: the AVX-512 twins of the attention's float kernel and of LayerNormalization + QuantizeLinear (see
 * isaTwins.h). Compiled with AVX-512 F/BW/VL/DQ flags; the sources are included into the namespace debx_avx512.
 */
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define debx debx_avx512
#include "../disentangledAttention/disentangledAttentionCpu.cpp"
#include "layerNormQuantizeCpu.cpp"
#undef debx

#include "isaTwins.h"

namespace debx
{
namespace isa
{

bool avx512Compiled()
{
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
    return true;
#else
    return false;
#endif
}

void attentionRunTaskAvx512(void const* plan, void const* tensors, int64_t task)
{
    debx_avx512::attention::cpuRunTask(*static_cast<debx_avx512::attention::CpuPlan const*>(plan),
        *static_cast<debx_avx512::attention::CpuTensors const*>(tensors), task);
}

void layerNormRowsAvx512(void const* args, int64_t r0, int64_t r1)
{
    debx_avx512::norm::runRows(*static_cast<debx_avx512::norm::LayerNormQuantizeArgs const*>(args), r0, r1);
}

} // namespace isa
} // namespace debx
