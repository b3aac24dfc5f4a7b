/*
 * debx: CPU implementation of DebxDisentangledAttention (see disentangledAttentionHost.h).
 */
#include "disentangledAttentionHost.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace
{

using debx::attention::Params;

thread_local std::string gLastError;

// ---- precision emulation (round to nearest even, like __float2half_rn / __float2bfloat16_rn) -----------------------

uint32_t floatBits(float x)
{
    uint32_t u;
    std::memcpy(&u, &x, sizeof(u));
    return u;
}

float bitsFloat(uint32_t u)
{
    float x;
    std::memcpy(&x, &u, sizeof(x));
    return x;
}

float roundToBf16(float x)
{
    if (std::isnan(x))
    {
        return x;
    }
    uint32_t u = floatBits(x);
    uint32_t const lsb = (u >> 16) & 1U;
    u += 0x7FFFU + lsb;
    return bitsFloat(u & 0xFFFF0000U);
}

float roundToHalf(float x)
{
    if (std::isnan(x) || std::isinf(x))
    {
        return x;
    }
    float const ax = std::fabs(x);
    if (ax >= 65520.0F) // rounds to infinity in FP16
    {
        return std::copysign(INFINITY, x);
    }
    // Quantum of the FP16 grid at this magnitude: 2^(e - 10) for normals, 2^-24 for subnormals.
    int exponent = 0;
    std::frexp(ax, &exponent); // ax = m * 2^exponent, m in [0.5, 1)
    int const e = exponent - 1;
    float const quantum = std::ldexp(1.0F, (e < -14 ? -14 : e) - 10);
    // nearbyint rounds half to even in the default rounding mode.
    return std::copysign(std::nearbyint(ax / quantum) * quantum, x);
}

float roundTo(float x, int32_t precision)
{
    switch (precision)
    {
    case kDEBX_HOST_FP16: return roundToHalf(x);
    case kDEBX_HOST_BF16: return roundToBf16(x);
    default: return x;
    }
}

// ---- the op --------------------------------------------------------------------------------------------------------

// One (b, h, query i) row: same tile walk and online softmax as the CUDA kernel.
void attendOneQuery(Params const& p, int32_t b, int32_t h, int32_t i, std::vector<float> const& q,
    std::vector<float> const& k, std::vector<float> const& v, std::vector<float> const& pk,
    std::vector<float> const& pq, int32_t const* mask, float* out)
{
    namespace da = debx::attention;
    int64_t const hidden = static_cast<int64_t>(p.numHeads) * p.headSize;
    int32_t const d = p.headSize;
    int64_t const headOffset = static_cast<int64_t>(h) * d;
    float const* qi = q.data() + (static_cast<int64_t>(b) * p.seqLen + i) * hidden + headOffset;
    int32_t const queryValid = mask[static_cast<int64_t>(b) * p.seqLen + i];

    std::vector<float> acc(d, 0.0F);
    float scores[da::kKeyTile];
    da::OnlineSoftmax st = da::onlineSoftmaxInit();

    for (int32_t j0 = 0; j0 < p.seqLen; j0 += da::kKeyTile)
    {
        int32_t const jEnd = std::min(j0 + da::kKeyTile, p.seqLen); // bounds: the last tile may be partial
        float tileMax = -INFINITY;
        for (int32_t j = j0; j < jEnd; ++j)
        {
            float const* kj = k.data() + (static_cast<int64_t>(b) * p.seqLen + j) * hidden + headOffset;
            int32_t const idx = da::relativeIndex(i, j, p);
            // Tables are only indexed when their term is on (they may have any row count otherwise).
            float const* pkRow = p.c2p ? pk.data() + idx * hidden + headOffset : nullptr;
            float const* pqRow = p.p2c ? pq.data() + idx * hidden + headOffset : nullptr;
            float raw = 0.0F;
            for (int32_t c = 0; c < d; ++c)
            {
                float term = qi[c] * kj[c];
                if (p.c2p)
                {
                    term += qi[c] * pkRow[c];
                }
                if (p.p2c)
                {
                    term += kj[c] * pqRow[c];
                }
                raw += term;
            }
            int32_t const keyValid = mask[static_cast<int64_t>(b) * p.seqLen + j];
            float const s = da::maskedScore(raw, p.scale, queryValid, keyValid);
            scores[j - j0] = s;
            tileMax = std::max(tileMax, s);
        }
        float const factor = da::onlineSoftmaxRescale(st, tileMax);
        for (int32_t c = 0; c < d; ++c)
        {
            acc[c] *= factor;
        }
        for (int32_t j = j0; j < jEnd; ++j)
        {
            float const w = da::onlineSoftmaxWeight(st, scores[j - j0]);
            st.runSum += w;
            float const* vj = v.data() + (static_cast<int64_t>(b) * p.seqLen + j) * hidden + headOffset;
            for (int32_t c = 0; c < d; ++c)
            {
                acc[c] += w * vj[c];
            }
        }
    }
    float* oi = out + (static_cast<int64_t>(b) * p.seqLen + i) * hidden + headOffset;
    float const inv = 1.0F / st.runSum;
    for (int32_t c = 0; c < d; ++c)
    {
        oi[c] = acc[c] * inv;
    }
}

std::vector<float> loadRounded(float const* src, int64_t count, int32_t precision)
{
    std::vector<float> dst(src, src + count);
    for (float& x : dst)
    {
        x = roundTo(x, precision);
    }
    return dst;
}

} // namespace

DEBX_HOST_API int32_t debx_attention_params_size()
{
    return static_cast<int32_t>(sizeof(Params));
}

DEBX_HOST_API int32_t debx_attention_forward(Params const* params, float const* query, float const* key,
    float const* value, float const* posKey, float const* posQuery, int32_t const* mask, float* out,
    int32_t precision)
{
    gLastError.clear();
    if (params == nullptr || query == nullptr || key == nullptr || value == nullptr || posKey == nullptr
        || posQuery == nullptr || mask == nullptr || out == nullptr)
    {
        gLastError = "null pointer argument";
        return 1;
    }
    if (precision < kDEBX_HOST_FP32 || precision > kDEBX_HOST_BF16)
    {
        gLastError = "precision must be 0 (fp32), 1 (fp16) or 2 (bf16)";
        return 1;
    }
    Params const& p = *params;
    if (char const* msg = debx::attention::validateParams(p))
    {
        gLastError = msg;
        return 1;
    }
    int64_t const hidden = static_cast<int64_t>(p.numHeads) * p.headSize;
    int64_t const tokens = static_cast<int64_t>(p.batch) * p.seqLen;
    int64_t const posCount = static_cast<int64_t>(p.posRows) * hidden;
    std::vector<float> const q = loadRounded(query, tokens * hidden, precision);
    std::vector<float> const k = loadRounded(key, tokens * hidden, precision);
    std::vector<float> const v = loadRounded(value, tokens * hidden, precision);
    std::vector<float> const pk = loadRounded(posKey, posCount, precision);
    std::vector<float> const pq = loadRounded(posQuery, posCount, precision);
    for (int32_t b = 0; b < p.batch; ++b)
    {
        for (int32_t h = 0; h < p.numHeads; ++h)
        {
            for (int32_t i = 0; i < p.seqLen; ++i)
            {
                attendOneQuery(p, b, h, i, q, k, v, pk, pq, mask, out);
            }
        }
    }
    debx_attention_round(out, tokens * hidden, precision);
    return 0;
}

DEBX_HOST_API int32_t debx_attention_log_bucket(int32_t rel, int32_t buckets, int32_t maxRelativePositions)
{
    return debx::attention::logBucket(rel, buckets, maxRelativePositions);
}

DEBX_HOST_API int32_t debx_attention_relative_index(int32_t i, int32_t j, Params const* params)
{
    return debx::attention::relativeIndex(i, j, *params);
}

DEBX_HOST_API void debx_attention_round(float* values, int64_t count, int32_t precision)
{
    for (int64_t n = 0; n < count; ++n)
    {
        values[n] = roundTo(values[n], precision);
    }
}

DEBX_HOST_API char const* debx_attention_last_error()
{
    return gLastError.c_str();
}
