/*
 * debx: the tensor-core path of DebxDisentangledAttention inside the TensorRT plugin. No TensorRT types.
 *
 * The same Triton kernel that PyTorch runs (debx/kernels/attention_triton.py), compiled ahead of time to sm_80 and
 * sm_90 cubins by disentangledAttentionTritonAot.py and launched here through the CUDA driver API, after
 *   1. the relative index table T[r + N - 1] = relativeIndex(r, 0) for r in [-(N - 1), N - 1] (the shared math
 *      header, one small kernel), and
 *   2. the band products C2P = pos_key[lo:hi] Q^T and P2C = pos_query[lo:hi] K^T, (H, R, B*N) each, over the
 *      R = hi - lo + 1 table rows a length-N input reads: the Triton band-products kernel, also built ahead of time.
 * The driver API is reached through cudart (cudaGetDriverEntryPointByVersion): no link against libcuda or cuBLAS.
 * Used for FP16/BF16 inputs with head size 64 and both relative terms on a GPU of compute capability 8.0 or newer;
 * everything else takes the scalar kernel (disentangledAttentionKernel.cu). Layouts as in that kernel's header.
 */
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "disentangledAttentionMath.h"

namespace debx
{
namespace attention
{

enum class TritonType : int32_t
{
    kHALF = 1,
    kBF16 = 2
};

//! True when this library carries a cubin for (type, the current device's compute capability, p) and p is a case the
//! tensor-core kernel covers. Cheap after the first call per device.
bool tritonPathAvailable(TritonType type, Params const& p);

//! Workspace bytes the tensor-core path needs for these parameters (0 if it does not apply): the two band products
//! and the table, each aligned to 256 bytes.
size_t tritonWorkspaceBytes(TritonType type, Params const& p);

//! Enqueue the tensor-core path on `stream`. `workspace` holds tritonWorkspaceBytes(type, p) bytes. Returns
//! cudaErrorNotSupported when the path does not apply, else the first CUDA/driver failure, or cudaSuccess.
cudaError_t launchDebxAttentionTriton(TritonType type, Params const& p, void const* query, void const* key,
    void const* value, void const* posKey, void const* posQuery, int32_t const* mask, void* out, void* workspace,
    cudaStream_t stream);

} // namespace attention
} // namespace debx
