/*
 * debx: one library for every x86-64 CPU. The library is compiled for baseline x86-64; the code that needs newer
 * instructions is compiled a second time, for them, in its own translation unit ("twin"), and chosen at run time by
 * CPUID:
 *
 *   isaAvx512.cpp  AVX-512 F/BW/VL/DQ (+ AVX2, FMA): the attention's float kernel (disentangledAttentionCpu.cpp) and
 *                  LayerNormalization + QuantizeLinear (layerNormQuantizeCpu.cpp), compiled into the namespace
 *                  debx_avx512 (a #define of `debx`), so they never collide with the baseline copies
 *   isaAmx.cpp     the same + AMX-BF16 / AVX512-BF16: the attention's bf16 tile kernels (disentangledAttentionAmx.cpp)
 *                  that the AVX-512 attention calls in its amx-bf16 mode
 *   isaAvx512Bf16.cpp     AVX-512 F/BW/VL + BF16: the attention's avx512-bf16 mode (VDPBF16PS;
 *                         disentangledAttentionBf16.cpp), namespace debx_avx512bf16
 *   isaAvx512Bf16Emu.cpp  the same source for AVX-512 F/BW/VL/DQ only, its two bf16 instructions in bit-exact
 *                         software: the avx512-bf16-emulated mode, for tests on CPUs without AVX-512 BF16; never
 *                         chosen automatically (namespace debx_avx512bf16emu)
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

//! The bf16 products (an attention::Bf16Kernels const*, of the twin's namespace; the layout is the same) of the
//! attention's bf16 mode `family` (attention::Bf16Family; kBest = amx-bf16, else avx512-bf16, never the emulation)
//! where it runs here: the AVX-512 twins run (the mode lives in them) and the CPU has the family's instructions.
//! nullptr otherwise, and for kFloat32.
void const* attentionBf16Kernels(int family);

//! isaAvx512.cpp: the AVX-512 attention task (plan: attention::CpuPlan const*, tensors: attention::CpuTensors const*)
//! and LayerNormalization + QuantizeLinear rows (args: norm::LayerNormQuantizeArgs const*). Stubs where the compiler
//! could not target AVX-512 (then avx512Compiled() is false).
bool avx512Compiled();
void attentionRunTaskAvx512(void const* plan, void const* tensors, int64_t task);
void layerNormRowsAvx512(void const* args, int64_t r0, int64_t r1);

//! The families' tables (nullptr where the compiler could not target them; isaAmx.cpp's also where AMX-BF16 is absent
//! or not granted): isaAmx.cpp, isaAvx512Bf16.cpp, isaAvx512Bf16Emu.cpp. Callers check the CPU first.
void const* attentionAmxBf16Kernels();
void const* attentionAvx512Bf16Kernels();
void const* attentionAvx512Bf16EmulatedKernels();

} // namespace isa
} // namespace debx
