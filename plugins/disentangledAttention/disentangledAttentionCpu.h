/*
 * debx: fast CPU implementation of DebxDisentangledAttention (FP32), for ONNX Runtime's CPU execution provider.
 *
 * No ONNX Runtime, TensorRT or CUDA types: the caller (plugins/ortOps/debxOrtOps.cpp) hands in dense row-major
 * tensors and runs the B * H independent (batch, head) tasks on its own thread pool. The index, bucket and mask
 * rules come from disentangledAttentionMath.h, the header the CUDA kernel uses.
 *
 * One task = one (batch b, head h), with W = number of distinct table rows the sequence touches (<= 2N - 1):
 *   Cm  = Q_h  . PK_h[lo:lo+W]^T           (N, W)   c2p products, one GEMM, rows by query
 *   Pm  = K_h  . PQ_h[lo:lo+W]^T           (N, W)   p2c products, one GEMM, rows by key
 *   S   = Q_h  . K_h^T                     (N, N)
 *   S  += Cm[i, idx(i, j) - lo] + Pm[j, idx(i, j) - lo]     (gathers, cache-blocked)
 *   P   = softmax(mask(S * scale))         (N, N)
 *   O_h = P . V_h                          (N, D)   written straight into (B, N, HD)
 * so nothing of size (B, H, N, 2k) is ever formed and no head transpose is needed.
 */
#pragma once

#include <cstddef>
#include <cstdint>

#include "disentangledAttentionBf16.h"
#include "disentangledAttentionMath.h"

namespace debx
{
namespace attention
{

struct CpuTensors
{
    float const* query;    //!< (B, N, HD)
    float const* key;      //!< (B, N, HD)
    float const* value;    //!< (B, N, HD)
    float const* posKey;   //!< (P, HD), may be null when c2p == 0
    float const* posQuery; //!< (P, HD), may be null when p2c == 0
    int32_t const* mask;   //!< (B, N), non-zero = token
    float* out;            //!< (B, N, HD)
    //! Optional: the tables already laid out (H, D, P) (see cpuTransposeTable), e.g. prepared once for constant
    //! tables; when null each task transposes the rows it needs.
    float const* posKeyT = nullptr;
    float const* posQueryT = nullptr;
    //! Mixed precision (opt-in): the bf16 products of a family this CPU runs (disentangledAttentionBf16.h). When set,
    //! QK^T, the c2p / p2c products and P . V take bfloat16 operands with float32 accumulation; needs the tables
    //! packed by amx::packTable for the terms in use. Scores, masking and softmax stay float32. Otherwise (null, or a
    //! table missing) the float32 path runs.
    Bf16Kernels const* bf16 = nullptr;
    uint16_t const* posKeyBf16 = nullptr;
    uint16_t const* posQueryBf16 = nullptr;
};

//! Row stride of a transposed table: P plus 16 floats, so that the D rows of a head do not all fall into the same
//! few L1 cache sets (P = 512 floats is a 2 KB stride: 64 rows would share 2 of the 64 sets and evict each other).
inline int64_t cpuTableStride(int64_t rows)
{
    return rows + 16;
}

//! (P, HD) table -> (H, D, P') with P' = cpuTableStride(P): per head, the transposed rows the products read.
//! `out` holds H * D * P' floats.
void cpuTransposeTable(float const* table, int32_t rows, int32_t numHeads, int32_t headSize, float* out);

//! Per-call plan: the relative index of every distance, shared by all tasks of one call.
struct CpuPlan
{
    Params params;
    int32_t const* indexByDistance; //!< 2N - 1 entries: idx for r = i - j = -(N-1) ... N-1
    int32_t lo;                     //!< smallest idx used
    int32_t width;                  //!< W = largest - smallest + 1
};

//! Fill `indexByDistance` (2N - 1 ints) and the window of `plan`; returns nullptr or an error message.
char const* cpuPlan(Params const& params, int32_t* indexByDistance, CpuPlan* plan);

//! Run task t in [0, B * H) of a call. Thread-safe: every task writes its own (b, h) slice of `out`.
void cpuRunTask(CpuPlan const& plan, CpuTensors const& tensors, int64_t task);

} // namespace attention
} // namespace debx
