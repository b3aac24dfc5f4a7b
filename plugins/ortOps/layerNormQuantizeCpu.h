/*
 * debx: LayerNormalization over the last axis fused with the QuantizeLinear that follows it in debx's INT8 graphs
 * (`debx calibrate --target ort`), one pass over each row instead of three ops:
 *
 *   y[r, c] = (x[r, c] - mean_r) / sqrt(var_r + epsilon) * gamma[c] + beta[c]     (population variance, two passes)
 *   q[r, c] = saturate_u8(round_half_even(y[r, c] / y_scale) + y_zp)
 *   f[r, c] = y[r, c]                     or, with `dequantized`, (q[r, c] - y_zp) * y_scale (DequantizeLinear of q)
 *
 * The float output serves the residual branch: the LN output itself where the graph reads it, or its dequantized
 * copy where the graph reads DequantizeLinear(q). No ONNX Runtime types (layerNormQuantizeOp.cpp wraps it).
 */
#pragma once

#include <cstdint>

namespace debx
{
namespace norm
{

struct LayerNormQuantizeArgs
{
    float const* X;     //!< (rows, C)
    int64_t rows;
    int64_t C;
    float const* gamma; //!< C
    float const* beta;  //!< C, or null
    float epsilon;
    float yScale;
    int32_t yZeroPoint;
    bool dequantized;   //!< F = DequantizeLinear(Q) instead of the LN output
    uint8_t* Q;         //!< (rows, C)
    float* F;           //!< (rows, C)
};

//! Rows [r0, r1).
void runRows(LayerNormQuantizeArgs const& args, int64_t r0, int64_t r1);

} // namespace norm
} // namespace debx
