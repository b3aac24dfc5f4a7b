/*
 * debx: the ONNX Runtime custom ops around the INT8 matmul of matMulInt8Cpu.h (domain "debx", version 1).
 *
 *   DebxMatMulInt8              inputs of com.microsoft MatMulIntegerToFloat: A uint8 (..., K), B int8 (K, N)
 *                               constant, a_scale float scalar, b_scale float (N) constant, a_zero_point uint8
 *                               scalar, b_zero_point int8 (N) constant and all 0, bias float (N) -> float (..., N)
 *   DebxMatMulInt8Add           the same + residual float (..., N) -> float (..., N)        (MatMul then Sum)
 *   DebxMatMulInt8GeluQuantize  the same + y_scale float scalar, y_zero_point uint8 scalar -> uint8 (..., N)
 *                               (MatMul, Gelu, QuantizeLinear)
 *
 * Optional int64 attribute `family`: the kernel family (1 = avx512-vnni, 2 = amx, 3 = avx2, 4 = avx-vnni;
 * matMulInt8Cpu.h Family); absent: the best this CPU has. debx's ONNX Runtime runner rewrites INT8 graphs to these ops
 * on CPUs with any of them (AVX2 + FMA at least) and writes the family it chose; kernel creation fails with a clear
 * message (the CPUID features the family needs) where the family cannot run.
 */
#pragma once

#include <cstddef>

#include "ortAbi.h"

namespace debx
{
namespace ort
{

//! The three op definitions (static storage, valid for the process lifetime).
CustomOp const* matMulInt8Ops(size_t* count);

} // namespace ort
} // namespace debx
