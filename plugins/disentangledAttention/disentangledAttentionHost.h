/*
 * debx: CPU implementation of DebxDisentangledAttention with a C ABI (no CUDA, no TensorRT).
 *
 * It walks keys in the same tiles as the CUDA kernel and uses the same math header (index, bucket, mask, online
 * softmax), so comparing it with the PyTorch reference proves the algorithm the kernel runs. The Python tests load
 * it with ctypes.
 */
#pragma once

#include <cstdint>

#include "disentangledAttentionMath.h"

#if defined(_WIN32)
#define DEBX_HOST_API extern "C" __declspec(dllexport)
#else
#define DEBX_HOST_API extern "C" __attribute__((visibility("default")))
#endif

//! How the host implementation treats inputs and outputs: exactly as FP32, or rounded to FP16 / BF16 on load and on
//! store like the kernel's half-precision instantiations (accumulation stays FP32 in every mode).
enum DebxHostPrecision : int32_t
{
    kDEBX_HOST_FP32 = 0,
    kDEBX_HOST_FP16 = 1,
    kDEBX_HOST_BF16 = 2,
};

//! sizeof(debx::attention::Params), so callers can check that their mirror of the struct matches.
DEBX_HOST_API int32_t debx_attention_params_size();

//! Run the op. Tensors are dense row-major float32 (inputs are rounded to the requested precision on load):
//!   query, key, value (B, N, HD); pos_key, pos_query (P, HD); mask int32 (B, N); out (B, N, HD).
//! Returns 0 on success, else non-zero and the reason is available from debx_attention_last_error().
DEBX_HOST_API int32_t debx_attention_forward(debx::attention::Params const* params, float const* query,
    float const* key, float const* value, float const* posKey, float const* posQuery, int32_t const* mask, float* out,
    int32_t precision);

//! The shared index helpers, for direct tests of the bucket and clamp math.
DEBX_HOST_API int32_t debx_attention_log_bucket(int32_t rel, int32_t buckets, int32_t maxRelativePositions);
DEBX_HOST_API int32_t debx_attention_relative_index(int32_t i, int32_t j, debx::attention::Params const* params);

//! Round float32 values in place as the kernel's FP16 / BF16 loads and stores would (round to nearest even).
DEBX_HOST_API void debx_attention_round(float* values, int64_t count, int32_t precision);

//! Message of the last failed call on this thread ("" if none).
DEBX_HOST_API char const* debx_attention_last_error();
