/*
 * debx: the ONNX Runtime custom op around layerNormQuantizeCpu.h (domain "debx", version 1).
 *
 *   DebxLayerNormQuantize   inputs  X float (..., C), gamma float (C), beta float (C), y_scale float scalar,
 *                                   y_zero_point uint8 scalar
 *                           outputs Q uint8 (..., C); F float (..., C): the LN output, or with dequantized = 1 the
 *                                   DequantizeLinear of Q
 *                           attributes epsilon (float, default 1e-5), dequantized (int, default 0)
 *
 * It replaces LayerNormalization (last axis) -> QuantizeLinear [-> DequantizeLinear] in debx's INT8 graphs; debx's
 * ONNX Runtime runner makes that rewrite in memory (debx.runtimes.int8_cpu).
 */
#pragma once

#include "ortAbi.h"

namespace debx
{
namespace ort
{

//! The op definition (static storage, valid for the process lifetime).
CustomOp const* layerNormQuantizeOp();

} // namespace ort
} // namespace debx
