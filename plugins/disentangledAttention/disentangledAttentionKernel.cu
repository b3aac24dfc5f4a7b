/*
 * debx: fused disentangled attention, flash style.
 *
 * One thread block owns (batch b, head h, a tile of kQueryTile queries). It walks the keys in tiles of kKeyTile:
 * the key and value tiles are staged in shared memory as float, every query row computes its kKeyTile scores
 * (q.k + c2p * q.pos_key[idx] + p2c * k.pos_query[idx], scaled and masked), and an online softmax (running max and
 * running sum) folds the tile into an FP32 value accumulator. The (B, H, N, N) score matrix never exists; memory
 * traffic is O(N * HD) per query tile plus the small relative tables, which stay in L1/L2.
 *
 * Work split: 4 warps per block, each warp owns kQueryTile / 4 query rows. Inside a warp the lanes split the head
 * dimension (lane + 32 * c), so global loads of q/k/v/pos rows are coalesced, and a dot product is one warp sum.
 * Every index is bounds-checked: the last query tile and the last key tile may be partial (any N), and the relative
 * index is clamped to [0, 2 * span) by the shared math header.
 */
#include "disentangledAttentionKernel.h"

#include <cmath>

namespace debx
{
namespace attention
{
namespace
{

constexpr int32_t kWarps = 4;
constexpr int32_t kThreads = kWarps * 32;
constexpr int32_t kRowsPerWarp = kQueryTile / kWarps;
constexpr unsigned kFullMask = 0xFFFFFFFFU;

static_assert(kQueryTile % kWarps == 0, "query tile must split evenly over the warps");
static_assert(kKeyTile == 32, "one key per lane when the softmax weights are spread over a warp");

template <typename T>
__device__ __forceinline__ float toFloat(T x);
template <>
__device__ __forceinline__ float toFloat<float>(float x)
{
    return x;
}
template <>
__device__ __forceinline__ float toFloat<__half>(__half x)
{
    return __half2float(x);
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ float fromFloat<float>(float x)
{
    return x;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float x)
{
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

//! Sum over the warp; every lane gets lane 0's result, so all lanes agree bit for bit.
__device__ __forceinline__ float warpSum(float x)
{
    for (int32_t offset = 16; offset > 0; offset >>= 1)
    {
        x += __shfl_xor_sync(kFullMask, x, offset);
    }
    return __shfl_sync(kFullMask, x, 0);
}

__device__ __forceinline__ float warpMax(float x)
{
    for (int32_t offset = 16; offset > 0; offset >>= 1)
    {
        x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
    }
    return x;
}

template <typename T, int32_t kDPerLane>
__global__ void __launch_bounds__(kThreads) debxDisentangledAttentionKernel(Params const p,
    T const* __restrict__ query, T const* __restrict__ key, T const* __restrict__ value,
    T const* __restrict__ posKey, T const* __restrict__ posQuery, int32_t const* __restrict__ mask,
    T* __restrict__ out)
{
    constexpr int32_t kMaxD = 32 * kDPerLane;
    constexpr int32_t kStride = kMaxD + 1; // padded rows: no shared-memory bank conflicts

    __shared__ float qTile[kQueryTile * kMaxD];
    __shared__ float kTile[kKeyTile * kStride];
    __shared__ float vTile[kKeyTile * kStride];
    __shared__ int32_t keyMask[kKeyTile];

    int32_t const n = p.seqLen;
    int32_t const d = p.headSize;
    int64_t const hidden = static_cast<int64_t>(p.numHeads) * d;
    int32_t const b = blockIdx.x / p.numHeads;
    int32_t const h = blockIdx.x % p.numHeads;
    int32_t const i0 = blockIdx.y * kQueryTile;
    int32_t const lane = threadIdx.x & 31;
    int32_t const warp = threadIdx.x >> 5;
    int64_t const tokenBase = static_cast<int64_t>(b) * n;
    int64_t const headOffset = static_cast<int64_t>(h) * d;

    // Query tile -> shared memory (rows past N and columns past D are zero and never used).
    for (int32_t t = threadIdx.x; t < kQueryTile * kMaxD; t += kThreads)
    {
        int32_t const r = t / kMaxD;
        int32_t const c = t % kMaxD;
        int32_t const i = i0 + r;
        qTile[t] = (i < n && c < d) ? toFloat(query[(tokenBase + i) * hidden + headOffset + c]) : 0.0F;
    }

    OnlineSoftmax state[kRowsPerWarp];
    float acc[kRowsPerWarp][kDPerLane];
    int32_t queryValid[kRowsPerWarp];
#pragma unroll
    for (int32_t rr = 0; rr < kRowsPerWarp; ++rr)
    {
        state[rr] = onlineSoftmaxInit();
        int32_t const i = i0 + warp * kRowsPerWarp + rr;
        queryValid[rr] = i < n ? mask[tokenBase + i] : 0;
#pragma unroll
        for (int32_t c = 0; c < kDPerLane; ++c)
        {
            acc[rr][c] = 0.0F;
        }
    }

    for (int32_t j0 = 0; j0 < n; j0 += kKeyTile)
    {
        int32_t const jCount = min(kKeyTile, n - j0); // last tile may be partial
        __syncthreads();                              // previous tile fully consumed (and qTile written)
        for (int32_t t = threadIdx.x; t < kKeyTile * kMaxD; t += kThreads)
        {
            int32_t const jj = t / kMaxD;
            int32_t const c = t % kMaxD;
            bool const inside = jj < jCount && c < d;
            int64_t const src = (tokenBase + j0 + jj) * hidden + headOffset + c;
            kTile[jj * kStride + c] = inside ? toFloat(key[src]) : 0.0F;
            vTile[jj * kStride + c] = inside ? toFloat(value[src]) : 0.0F;
        }
        if (threadIdx.x < kKeyTile)
        {
            keyMask[threadIdx.x] = static_cast<int32_t>(threadIdx.x) < jCount ? mask[tokenBase + j0 + threadIdx.x] : 0;
        }
        __syncthreads();

#pragma unroll
        for (int32_t rr = 0; rr < kRowsPerWarp; ++rr)
        {
            int32_t const r = warp * kRowsPerWarp + rr;
            int32_t const i = i0 + r;
            if (i >= n) // warp-uniform: the whole warp skips
            {
                continue;
            }
            // Relative slot of (i, j0 + lane): one bucket evaluation per key, shared through the warp below.
            int32_t const myIndex = relativeIndex(i, j0 + lane, p);
            // Scores of this tile: lane jj keeps the score of key j0 + jj.
            float myScore = -INFINITY;
            for (int32_t jj = 0; jj < jCount; ++jj)
            {
                int32_t const index = __shfl_sync(kFullMask, myIndex, jj);
                int64_t const rowOffset = static_cast<int64_t>(index) * hidden + headOffset;
                float partial = 0.0F;
#pragma unroll
                for (int32_t c = 0; c < kDPerLane; ++c)
                {
                    int32_t const dd = lane + 32 * c;
                    if (dd < d)
                    {
                        float const qd = qTile[r * kMaxD + dd];
                        float const kd = kTile[jj * kStride + dd];
                        float term = qd * kd;
                        if (p.c2p)
                        {
                            term += qd * toFloat(posKey[rowOffset + dd]);
                        }
                        if (p.p2c)
                        {
                            term += kd * toFloat(posQuery[rowOffset + dd]);
                        }
                        partial += term;
                    }
                }
                float const s = maskedScore(warpSum(partial), p.scale, queryValid[rr], keyMask[jj]);
                if (lane == jj)
                {
                    myScore = s;
                }
            }
            float const factor = onlineSoftmaxRescale(state[rr], warpMax(myScore));
            float const weight = lane < jCount ? onlineSoftmaxWeight(state[rr], myScore) : 0.0F;
            state[rr].runSum += warpSum(weight);
#pragma unroll
            for (int32_t c = 0; c < kDPerLane; ++c)
            {
                acc[rr][c] *= factor;
            }
            for (int32_t jj = 0; jj < jCount; ++jj)
            {
                float const w = __shfl_sync(kFullMask, weight, jj);
#pragma unroll
                for (int32_t c = 0; c < kDPerLane; ++c)
                {
                    int32_t const dd = lane + 32 * c;
                    if (dd < d)
                    {
                        acc[rr][c] += w * vTile[jj * kStride + dd];
                    }
                }
            }
        }
    }

#pragma unroll
    for (int32_t rr = 0; rr < kRowsPerWarp; ++rr)
    {
        int32_t const i = i0 + warp * kRowsPerWarp + rr;
        if (i >= n)
        {
            continue;
        }
        float const inv = 1.0F / state[rr].runSum;
#pragma unroll
        for (int32_t c = 0; c < kDPerLane; ++c)
        {
            int32_t const dd = lane + 32 * c;
            if (dd < d)
            {
                out[(tokenBase + i) * hidden + headOffset + dd] = fromFloat<T>(acc[rr][c] * inv);
            }
        }
    }
}

template <typename T, int32_t kDPerLane>
cudaError_t launchWithHeadSize(Params const& p, T const* q, T const* k, T const* v, T const* pk, T const* pq,
    int32_t const* mask, T* out, cudaStream_t stream)
{
    int64_t const blocksX = static_cast<int64_t>(p.batch) * p.numHeads;
    int64_t const blocksY = (static_cast<int64_t>(p.seqLen) + kQueryTile - 1) / kQueryTile;
    if (blocksX > 2147483647LL || blocksY > 65535LL)
    {
        return cudaErrorInvalidValue; // batch * heads or the sequence length exceeds the grid limits
    }
    dim3 const grid(static_cast<unsigned>(blocksX), static_cast<unsigned>(blocksY));
    debxDisentangledAttentionKernel<T, kDPerLane><<<grid, kThreads, 0, stream>>>(p, q, k, v, pk, pq, mask, out);
    return cudaGetLastError();
}

} // namespace

template <typename T>
cudaError_t launchDebxDisentangledAttention(Params const& params, T const* query, T const* key, T const* value,
    T const* posKey, T const* posQuery, int32_t const* mask, T* out, cudaStream_t stream)
{
    if (validateParams(params) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (params.batch == 0 || params.seqLen == 0)
    {
        return cudaSuccess; // empty output, nothing to compute
    }
    if (query == nullptr || key == nullptr || value == nullptr || posKey == nullptr || posQuery == nullptr
        || mask == nullptr || out == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    if (params.headSize <= 32)
    {
        return launchWithHeadSize<T, 1>(params, query, key, value, posKey, posQuery, mask, out, stream);
    }
    if (params.headSize <= 64)
    {
        return launchWithHeadSize<T, 2>(params, query, key, value, posKey, posQuery, mask, out, stream);
    }
    return launchWithHeadSize<T, 4>(params, query, key, value, posKey, posQuery, mask, out, stream);
}

template cudaError_t launchDebxDisentangledAttention<float>(Params const&, float const*, float const*, float const*,
    float const*, float const*, int32_t const*, float*, cudaStream_t);
template cudaError_t launchDebxDisentangledAttention<__half>(Params const&, __half const*, __half const*,
    __half const*, __half const*, __half const*, int32_t const*, __half*, cudaStream_t);
template cudaError_t launchDebxDisentangledAttention<__nv_bfloat16>(Params const&, __nv_bfloat16 const*,
    __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, int32_t const*,
    __nv_bfloat16*, cudaStream_t);

} // namespace attention
} // namespace debx
