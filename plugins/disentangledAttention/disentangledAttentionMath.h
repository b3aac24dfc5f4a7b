/*
 * debx: math of the DebxDisentangledAttention op, shared by the CUDA kernel and the host implementation.
 *
 * Everything here is header-only, `__host__ __device__` inline and free of TensorRT and CUDA runtime types, so the
 * exact same index, bucket, mask and online-softmax code runs in the GPU kernel and in the CPU build that the Python
 * tests compare with PyTorch. The op contract (inputs, outputs, attributes) is debx/contract.py DEBX_ATTENTION, held to
 * the C++ registrations by tests/test_contract.py; the prose is ../disentangledAttention/README.md. The math:
 *
 *   r(i, j)  = i - j, or log_bucket(i - j) when position_buckets > 0
 *   idx      = clamp(r + span, 0, 2 * span - 1)
 *   s        = (q_i.k_j + c2p * q_i.pos_key[idx] + p2c * k_j.pos_query[idx]) * scale
 *   s        = -65504 where mask[b, i] == 0 or mask[b, j] == 0
 *   out_i    = sum_j softmax_j(s) v_j
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <math.h>

#if defined(__CUDACC__)
#define DEBX_HD __host__ __device__ __forceinline__
#else
#define DEBX_HD inline
#endif

namespace debx
{
namespace attention
{

//! Value written into masked scores: the most negative finite FP16 number, so the same value works for FP16, BF16
//! and FP32 and a fully padded query row ends with uniform weights (as Hugging Face's masked_fill + softmax does).
constexpr float kMaskFill = -65504.0F;

//! Largest head size D the fused kernel keeps in registers (DeBERTa uses 64).
constexpr int32_t kMaxHeadSize = 128;

//! Tile sizes shared by the CUDA kernel and the host implementation, so both walk keys in the same order and the
//! online softmax rescales at the same points.
constexpr int32_t kQueryTile = 16;
constexpr int32_t kKeyTile = 32;

//! Plain parameters of one call. Plain old data: copied to the device by value, serialized inside the plugin and
//! mirrored by a ctypes.Structure in the Python tests (keep the field order).
struct Params
{
    int32_t batch;                //!< B
    int32_t seqLen;               //!< N
    int32_t numHeads;             //!< H
    int32_t headSize;             //!< D (hidden HD = H * D)
    int32_t span;                 //!< k: relative slots idx in [0, 2k)
    int32_t posRows;              //!< P: rows of pos_key / pos_query as given (must be 2k when a term uses them)
    int32_t positionBuckets;      //!< > 0: log buckets (v2/v3); <= 0: linear positions (v1)
    int32_t maxRelativePositions; //!< used by the log bucket
    int32_t c2p;                  //!< 0/1: content-to-position term
    int32_t p2c;                  //!< 0/1: position-to-content term
    float scale;                  //!< multiplies the summed scores
};

//! Hugging Face's make_log_bucket_position for one relative distance, evaluated in float32 like the PyTorch code:
//!   mid = buckets / 2; |r| <= mid -> r; else sign(r) * (ceil(log(|r| / mid) / log((max_rel - 1) / mid) * (mid - 1)) + mid)
DEBX_HD int32_t logBucket(int32_t rel, int32_t buckets, int32_t maxRelativePositions)
{
    int32_t const mid = buckets / 2;
    int32_t const absRel = rel < 0 ? -rel : rel;
    if (absRel <= mid)
    {
        return rel;
    }
    // float32 like PyTorch: (abs_pos / mid) is an int tensor divided by an int; the denominator is a Python float
    // turned into a float32 tensor.
    float const ratio = static_cast<float>(absRel) / static_cast<float>(mid);
    float const base = static_cast<float>(static_cast<double>(maxRelativePositions - 1) / static_cast<double>(mid));
    float const scaled = logf(ratio) / logf(base) * static_cast<float>(mid - 1);
    int32_t const bucket = static_cast<int32_t>(ceilf(scaled)) + mid;
    return rel < 0 ? -bucket : bucket;
}

//! Relative distance of query i to key j after optional bucketing.
DEBX_HD int32_t relativePosition(int32_t i, int32_t j, Params const& p)
{
    int32_t const rel = i - j;
    return p.positionBuckets > 0 ? logBucket(rel, p.positionBuckets, p.maxRelativePositions) : rel;
}

//! Row of pos_key / pos_query used for the pair (i, j): clamp(r + span, 0, 2 * span - 1). Always a valid row of a
//! (2 * span, HD) table, whatever i and j are.
DEBX_HD int32_t relativeIndex(int32_t i, int32_t j, Params const& p)
{
    int32_t const idx = relativePosition(i, j, p) + p.span;
    int32_t const last = 2 * p.span - 1;
    return idx < 0 ? 0 : (idx > last ? last : idx);
}

//! Score after scaling and masking.
DEBX_HD float maskedScore(float rawScore, float scale, int32_t queryValid, int32_t keyValid)
{
    return (queryValid != 0 && keyValid != 0) ? rawScore * scale : kMaskFill;
}

//! Running state of the online (one-pass) softmax of one query row: running max m, running sum l of exp(s - m).
struct OnlineSoftmax
{
    float runMax;
    float runSum;
};

DEBX_HD OnlineSoftmax onlineSoftmaxInit()
{
    return OnlineSoftmax{-INFINITY, 0.0F};
}

//! Start a new key tile whose largest score is tileMax: returns the factor by which the running sum and the running
//! value accumulator must be multiplied, and moves the running max. The first tile always holds at least one key
//! (masked keys have a finite score), so the running max is finite from then on and the factor is exp(-inf) = 0
//! on the first tile.
DEBX_HD float onlineSoftmaxRescale(OnlineSoftmax& st, float tileMax)
{
    float const newMax = st.runMax > tileMax ? st.runMax : tileMax;
    float const factor = expf(st.runMax - newMax);
    st.runMax = newMax;
    st.runSum *= factor;
    return factor;
}

//! Weight of one key in the current tile (to be added to runSum and used for the value product).
DEBX_HD float onlineSoftmaxWeight(OnlineSoftmax const& st, float score)
{
    return expf(score - st.runMax);
}

//! Validation shared by the kernel launcher, the host implementation and the plugin. Returns nullptr when the
//! parameters can be run, else a message.
inline char const* validateParams(Params const& p)
{
    if (p.batch < 0 || p.seqLen < 0)
    {
        return "batch and sequence length must not be negative";
    }
    if (p.numHeads <= 0)
    {
        return "num_heads must be > 0";
    }
    if (p.headSize <= 0)
    {
        return "head size (hidden / num_heads) must be > 0";
    }
    if (p.headSize > kMaxHeadSize)
    {
        return "head size (hidden / num_heads) must be <= 128";
    }
    if (p.span <= 0)
    {
        return "span must be > 0";
    }
    if (p.c2p != 0 && p.c2p != 1)
    {
        return "c2p must be 0 or 1";
    }
    if (p.p2c != 0 && p.p2c != 1)
    {
        return "p2c must be 0 or 1";
    }
    if (!(p.scale > 0.0F) || !std::isfinite(p.scale))
    {
        return "scale must be a finite number > 0";
    }
    if (p.positionBuckets > 0)
    {
        if (p.positionBuckets < 2)
        {
            return "position_buckets must be >= 2 when > 0";
        }
        if (p.maxRelativePositions - 1 <= p.positionBuckets / 2)
        {
            return "max_relative_positions - 1 must exceed position_buckets / 2 for log buckets";
        }
    }
    if ((p.c2p != 0 || p.p2c != 0) && p.posRows != 2 * p.span)
    {
        return "pos_key / pos_query must have 2 * span rows";
    }
    if (p.posRows < 1)
    {
        return "pos_key / pos_query must have at least one row";
    }
    return nullptr;
}

} // namespace attention
} // namespace debx
