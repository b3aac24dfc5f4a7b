/*
 * debx: one library for every x86-64 CPU. The library is compiled for baseline x86-64; the code that needs newer
 * instructions is compiled a second time, for them, in its own translation unit ("twin"), and chosen at run time by
 * CPUID:
 *
 *   isaAvx512.cpp  AVX-512 F/BW/VL/DQ (+ AVX2, FMA): the attention's float kernel (disentangledAttentionCpu.cpp) and
 *                  LayerNormalization + QuantizeLinear (layerNormQuantizeCpu.cpp), compiled into the namespace
 *                  debx_avx512 (a #define of `debx`), so they never collide with the baseline copies
 *   isaAmx.cpp     the same + AMX-BF16 / AVX512-BF16: the attention's bf16 tile kernels (disentangledAttentionAmx.cpp)
 *                  that the AVX-512 attention calls
 *   matMulInt8Amx.cpp / matMulInt8Vnni.cpp: the INT8 matmul families (matMulInt8Cpu.h chooses)
 *
 * The sources themselves keep their compile-time `#if defined(__AVX512F__)` paths; a build for one machine
 * (-march=native) would simply make the twins redundant. Link order puts the baseline objects first, so where an
 * inline function of the standard library is emitted by both, the linker keeps the baseline copy.
 *
 * The twins take the baseline types through void pointers: both copies are compiled from the same headers, so the
 * layouts are the same.
 */
#pragma once

#include <cstdint>

namespace debx
{
namespace isa
{

//! True when $DEBX_CPU_ISA is "baseline" (read once): the library then runs only its baseline x86-64 code, as on a CPU
//! without AVX-512 (the INT8 matmul families included), so tests can check that path on any machine.
bool baselineOnly();

//! True when this CPU runs the AVX-512 twins (AVX-512 F/BW/VL/DQ, AVX2, FMA, and the OS saves the ZMM state).
bool avx512();

//! True when the attention's bf16 = 1 mode runs here: the AVX-512 twins run and AMX-BF16 is present and granted.
bool attentionBf16();

//! isaAvx512.cpp: the AVX-512 attention task (plan: attention::CpuPlan const*, tensors: attention::CpuTensors const*)
//! and LayerNormalization + QuantizeLinear rows (args: norm::LayerNormQuantizeArgs const*). Stubs where the compiler
//! could not target AVX-512 (then avx512Compiled() is false).
bool avx512Compiled();
void attentionRunTaskAvx512(void const* plan, void const* tensors, int64_t task);
void layerNormRowsAvx512(void const* args, int64_t r0, int64_t r1);

//! isaAmx.cpp: whether the AVX-512 attention's bf16 mode runs on AMX-BF16 tiles here.
bool attentionAmxBf16Avx512();

} // namespace isa
} // namespace debx
