/*
 * debx: the per-ISA entry points of the INT8 matmul (internal to matMulInt8*.cpp). Each is defined in the translation
 * unit compiled for its instructions; where the compiler could not target them it is a stub and `...Compiled()` says
 * false, so the family is reported unavailable instead of crashing.
 */
#pragma once

#include "matMulInt8Cpu.h"

namespace debx
{
namespace int8
{

//! matMulInt8Amx.cpp: AMX-INT8 detection (CPUID and the Linux tile permission) and the tile kernel.
bool amxDetect();
void runTaskAmx(MatMulArgs const& args, int64_t task);

//! matMulInt8Vnni.cpp: whether it was compiled with AVX-512 VNNI, and the VPDPBUSD kernel.
bool vnniCompiled();
void runTaskVnni(MatMulArgs const& args, int64_t task);

//! matMulInt8Avx2.cpp / matMulInt8AvxVnni.cpp: the 256-bit kernel (matMulInt8Avx2Kernel.h) without and with VNNI.
bool avx2Compiled();
void runTaskAvx2(MatMulArgs const& args, int64_t task);
bool avxVnniCompiled();
void runTaskAvxVnni(MatMulArgs const& args, int64_t task);

} // namespace int8
} // namespace debx
