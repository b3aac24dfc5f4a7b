/*
 * debx: fused CUDA kernel of DebxDisentangledAttention. No TensorRT types: the plugin and any other host code call
 * launchDebxDisentangledAttention() with raw device pointers.
 *
 * Layouts (row-major, contiguous):
 *   query, key, value, out   (B, N, H * D)
 *   posKey, posQuery         (P, H * D)      P = 2 * span (any P >= 1 when the term using the table is off)
 *   mask                     (B, N) int32    1 = token, 0 = padding
 */
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "disentangledAttentionMath.h"

namespace debx
{
namespace attention
{

//! Enqueue the fused attention on `stream`. T is float, __half or __nv_bfloat16; accumulation is FP32 for all.
//! Returns cudaErrorInvalidValue (and launches nothing) when validateParams() rejects the parameters or the grid
//! would not fit, otherwise the launch status.
template <typename T>
cudaError_t launchDebxDisentangledAttention(Params const& params, T const* query, T const* key, T const* value,
    T const* posKey, T const* posQuery, int32_t const* mask, T* out, cudaStream_t stream);

extern template cudaError_t launchDebxDisentangledAttention<float>(Params const&, float const*, float const*,
    float const*, float const*, float const*, int32_t const*, float*, cudaStream_t);
extern template cudaError_t launchDebxDisentangledAttention<__half>(Params const&, __half const*, __half const*,
    __half const*, __half const*, __half const*, int32_t const*, __half*, cudaStream_t);
extern template cudaError_t launchDebxDisentangledAttention<__nv_bfloat16>(Params const&, __nv_bfloat16 const*,
    __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, int32_t const*,
    __nv_bfloat16*, cudaStream_t);

} // namespace attention
} // namespace debx
