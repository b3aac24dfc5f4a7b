/*
 * debx: DebxDisentangledAttention TensorRT plugin (IPluginV3) and creator. Written against the TensorRT 10
 * NvInferRuntime.h declarations; the math lives in disentangledAttentionMath.h, the kernel in
 * disentangledAttentionKernel.cu.
 */
#include "disentangledAttentionPlugin.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <sstream>

#include "checks.h"
#include "disentangledAttentionKernel.h"
#include "disentangledAttentionTriton.h"
#include "fields.h"
#include "registry.h"
#include "serialize.h"

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace debx
{
namespace plugin
{
namespace
{

constexpr char const* kFIELD_NUM_HEADS = "num_heads";
constexpr char const* kFIELD_SCALE = "scale";
constexpr char const* kFIELD_SPAN = "span";
constexpr char const* kFIELD_POSITION_BUCKETS = "position_buckets";
constexpr char const* kFIELD_MAX_RELATIVE_POSITIONS = "max_relative_positions";
constexpr char const* kFIELD_C2P = "c2p";
constexpr char const* kFIELD_P2C = "p2c";
constexpr char const* kFIELD_SERIALIZED = "debx_params";

constexpr uint32_t kSERIAL_MAGIC = 0x41584244U; // "DBXA"
constexpr uint32_t kSERIAL_VERSION = 1U;

enum InputIndex : int32_t
{
    kQUERY = 0,
    kKEY = 1,
    kVALUE = 2,
    kPOS_KEY = 3,
    kPOS_QUERY = 4,
    kMASK = 5,
    kOUTPUT = 6, // position of the output in supportsFormatCombination's inOut
};

bool isFloatType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

std::string dimsToString(Dims const& d)
{
    std::ostringstream os;
    os << "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        os << (i ? ", " : "") << d.d[i];
    }
    os << ")";
    return os.str();
}

//! a == b unless either is a build-time wildcard (-1).
bool sameOrWildcard(int64_t a, int64_t b)
{
    return a < 0 || b < 0 || a == b;
}

//! Shape rules that hold with wildcards (build time): ranks, equal dims where known, HD % H, D <= 128, P = 2 * span.
void checkShapesWithWildcards(DisentangledAttentionAttributes const& a, Dims const* d /* 6 input dims */)
{
    DEBX_VALIDATE(d[kQUERY].nbDims == 3, "query must be (B, N, HD), got rank " << d[kQUERY].nbDims);
    for (int32_t t : {kKEY, kVALUE})
    {
        DEBX_VALIDATE(d[t].nbDims == 3, "key and value must be (B, N, HD) like the query");
        for (int32_t k = 0; k < 3; ++k)
        {
            DEBX_VALIDATE(sameOrWildcard(d[t].d[k], d[kQUERY].d[k]),
                "key and value must have the shape of the query " << dimsToString(d[kQUERY]) << ", got "
                                                                  << dimsToString(d[t]));
        }
    }
    for (int32_t t : {kPOS_KEY, kPOS_QUERY})
    {
        DEBX_VALIDATE(d[t].nbDims == 2, "pos_key and pos_query must be (P, HD), got rank " << d[t].nbDims);
        DEBX_VALIDATE(sameOrWildcard(d[t].d[1], d[kQUERY].d[2]),
            "pos_key / pos_query hidden size " << d[t].d[1] << " differs from the query's " << d[kQUERY].d[2]);
    }
    if (a.c2p)
    {
        DEBX_VALIDATE(sameOrWildcard(d[kPOS_KEY].d[0], 2 * int64_t{a.span}),
            "pos_key must have 2 * span = " << 2 * a.span << " rows, got " << d[kPOS_KEY].d[0]);
    }
    if (a.p2c)
    {
        DEBX_VALIDATE(sameOrWildcard(d[kPOS_QUERY].d[0], 2 * int64_t{a.span}),
            "pos_query must have 2 * span = " << 2 * a.span << " rows, got " << d[kPOS_QUERY].d[0]);
    }
    DEBX_VALIDATE(d[kMASK].nbDims == 2, "mask must be (B, N), got rank " << d[kMASK].nbDims);
    DEBX_VALIDATE(sameOrWildcard(d[kMASK].d[0], d[kQUERY].d[0]) && sameOrWildcard(d[kMASK].d[1], d[kQUERY].d[1]),
        "mask " << dimsToString(d[kMASK]) << " must be (B, N) of the query " << dimsToString(d[kQUERY]));
    int64_t const hidden = d[kQUERY].d[2];
    if (hidden >= 0)
    {
        DEBX_VALIDATE(hidden % a.numHeads == 0, "hidden size " << hidden << " is not divisible by num_heads "
                                                               << a.numHeads);
        DEBX_VALIDATE(hidden / a.numHeads <= attention::kMaxHeadSize,
            "head size " << hidden / a.numHeads << " exceeds the kernel limit " << attention::kMaxHeadSize);
    }
}

int32_t toInt32Dim(int64_t v, char const* what)
{
    DEBX_VALIDATE(v >= 0 && v <= std::numeric_limits<int32_t>::max(), what << " " << v << " is out of range");
    return static_cast<int32_t>(v);
}

std::string describe(DisentangledAttentionAttributes const& a)
{
    char buffer[256];
    std::snprintf(buffer, sizeof(buffer),
        "num_heads=%d,scale=%.9g,span=%d,position_buckets=%d,max_relative_positions=%d,c2p=%d,p2c=%d", a.numHeads,
        static_cast<double>(a.scale), a.span, a.positionBuckets, a.maxRelativePositions, a.c2p, a.p2c);
    return buffer;
}

template <typename T>
cudaError_t launchTyped(attention::Params const& p, void const* const* inputs, void* const* outputs,
    cudaStream_t stream)
{
    return attention::launchDebxDisentangledAttention<T>(p, static_cast<T const*>(inputs[kQUERY]),
        static_cast<T const*>(inputs[kKEY]), static_cast<T const*>(inputs[kVALUE]),
        static_cast<T const*>(inputs[kPOS_KEY]), static_cast<T const*>(inputs[kPOS_QUERY]),
        static_cast<int32_t const*>(inputs[kMASK]), static_cast<T*>(outputs[0]), stream);
}

} // namespace

// ---- attributes ----------------------------------------------------------------------------------------------------

void validateAttributes(DisentangledAttentionAttributes const& a)
{
    DEBX_VALIDATE(a.numHeads > 0, "num_heads must be > 0, got " << a.numHeads);
    DEBX_VALIDATE(a.span > 0, "span must be > 0, got " << a.span);
    DEBX_VALIDATE(a.c2p == 0 || a.c2p == 1, "c2p must be 0 or 1, got " << a.c2p);
    DEBX_VALIDATE(a.p2c == 0 || a.p2c == 1, "p2c must be 0 or 1, got " << a.p2c);
    DEBX_VALIDATE(std::isfinite(a.scale) && a.scale > 0.0F, "scale must be a finite number > 0, got " << a.scale);
    if (a.positionBuckets > 0)
    {
        DEBX_VALIDATE(a.positionBuckets >= 2, "position_buckets must be >= 2 when > 0, got " << a.positionBuckets);
        DEBX_VALIDATE(a.maxRelativePositions - 1 > a.positionBuckets / 2,
            "max_relative_positions (" << a.maxRelativePositions << ") - 1 must exceed position_buckets / 2 ("
                                       << a.positionBuckets / 2 << ") for log-bucket positions");
    }
}

DisentangledAttentionAttributes parseAttributes(PluginFieldCollection const* fc)
{
    DEBX_VALIDATE(fc != nullptr, "no plugin fields given");
    DEBX_VALIDATE(fc->nbFields == 0 || fc->fields != nullptr, "plugin field array is null");
    DisentangledAttentionAttributes a;
    bool seen[5] = {false, false, false, false, false}; // num_heads, scale, span, c2p, p2c are required
    for (int32_t n = 0; n < fc->nbFields; ++n)
    {
        PluginField const& f = fc->fields[n];
        DEBX_VALIDATE(f.name != nullptr, "plugin field without a name");
        std::string const name = f.name;
        if (name == kFIELD_SERIALIZED)
        {
            DEBX_VALIDATE(f.type == PluginFieldType::kUNKNOWN, "field debx_params must be of type kUNKNOWN");
            DisentangledAttentionAttributes const stored = deserializePod<DisentangledAttentionAttributes>(
                f.data, static_cast<size_t>(f.length), kSERIAL_MAGIC, kSERIAL_VERSION);
            validateAttributes(stored);
            return stored;
        }
        if (name == kFIELD_NUM_HEADS)
        {
            a.numHeads = fieldToInt32(f);
            seen[0] = true;
        }
        else if (name == kFIELD_SCALE)
        {
            a.scale = fieldToFloat(f);
            seen[1] = true;
        }
        else if (name == kFIELD_SPAN)
        {
            a.span = fieldToInt32(f);
            seen[2] = true;
        }
        else if (name == kFIELD_POSITION_BUCKETS)
        {
            a.positionBuckets = fieldToInt32(f);
        }
        else if (name == kFIELD_MAX_RELATIVE_POSITIONS)
        {
            a.maxRelativePositions = fieldToInt32(f);
        }
        else if (name == kFIELD_C2P)
        {
            a.c2p = fieldToInt32(f);
            seen[3] = true;
        }
        else if (name == kFIELD_P2C)
        {
            a.p2c = fieldToInt32(f);
            seen[4] = true;
        }
        else if (name == "plugin_version" || name == "plugin_namespace")
        {
            // ONNX-side lookup keys of TensorRT's parser, not attributes of the op.
        }
        else
        {
            throw PluginError("unknown attribute '" + name + "' for " + kDISENTANGLED_ATTENTION_NAME);
        }
    }
    char const* required[5] = {kFIELD_NUM_HEADS, kFIELD_SCALE, kFIELD_SPAN, kFIELD_C2P, kFIELD_P2C};
    for (int32_t r = 0; r < 5; ++r)
    {
        DEBX_VALIDATE(seen[r], "missing required attribute '" << required[r] << "'");
    }
    validateAttributes(a);
    return a;
}

attention::Params makeParams(DisentangledAttentionAttributes const& a, Dims const& query, Dims const& key,
    Dims const& value, Dims const& posKey, Dims const& posQuery, Dims const& mask)
{
    Dims const all[6] = {query, key, value, posKey, posQuery, mask};
    for (Dims const& d : all)
    {
        for (int32_t k = 0; k < d.nbDims; ++k)
        {
            DEBX_VALIDATE(d.d[k] >= 0, "runtime shape " << dimsToString(d) << " has an unresolved dimension");
        }
    }
    checkShapesWithWildcards(a, all);
    attention::Params p{};
    p.batch = toInt32Dim(query.d[0], "batch");
    p.seqLen = toInt32Dim(query.d[1], "sequence length");
    p.numHeads = a.numHeads;
    p.headSize = toInt32Dim(query.d[2] / a.numHeads, "head size");
    p.span = a.span;
    // The kernel only reads a table whose term is on; report the rows of the table(s) in use.
    p.posRows = toInt32Dim(a.c2p ? posKey.d[0] : (a.p2c ? posQuery.d[0] : posKey.d[0]), "relative table rows");
    p.positionBuckets = a.positionBuckets;
    p.maxRelativePositions = a.maxRelativePositions;
    p.c2p = a.c2p;
    p.p2c = a.p2c;
    p.scale = a.scale;
    if (char const* msg = attention::validateParams(p))
    {
        throw PluginError(msg);
    }
    return p;
}

// ---- plugin --------------------------------------------------------------------------------------------------------

DisentangledAttentionPlugin::DisentangledAttentionPlugin(DisentangledAttentionAttributes const& attributes)
    : mAttributes(attributes)
    , mDescription(describe(attributes))
{
    validateAttributes(mAttributes);
}

nvinfer1::IPluginCapability* DisentangledAttentionPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* DisentangledAttentionPlugin::clone() noexcept
{
    try
    {
        return new DisentangledAttentionPlugin(mAttributes);
    }
    catch (std::exception const& e)
    {
        reportError("DebxDisentangledAttention::clone", e);
    }
    return nullptr;
}

char const* DisentangledAttentionPlugin::getPluginName() const noexcept
{
    return kDISENTANGLED_ATTENTION_NAME;
}

char const* DisentangledAttentionPlugin::getPluginVersion() const noexcept
{
    return kDISENTANGLED_ATTENTION_VERSION;
}

char const* DisentangledAttentionPlugin::getPluginNamespace() const noexcept
{
    return "";
}

int32_t DisentangledAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        DEBX_VALIDATE(in != nullptr && out != nullptr, "configurePlugin: null tensor descriptions");
        DEBX_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "expects 6 inputs and 1 output, got " << nbInputs << " and " << nbOutputs);
        Dims declared[kNB_INPUTS];
        for (int32_t t = 0; t < kNB_INPUTS; ++t)
        {
            declared[t] = in[t].desc.dims;
        }
        checkShapesWithWildcards(mAttributes, declared);
        // The profile's largest shapes must be runnable too.
        makeParams(mAttributes, in[kQUERY].max, in[kKEY].max, in[kVALUE].max, in[kPOS_KEY].max, in[kPOS_QUERY].max,
            in[kMASK].max);
        DEBX_VALIDATE(isFloatType(in[kQUERY].desc.type), "query must be FP32, FP16 or BF16");
        DEBX_VALIDATE(in[kMASK].desc.type == DataType::kINT32, "mask must be int32");
        DEBX_VALIDATE(out[0].desc.type == in[kQUERY].desc.type, "output type must equal the query type");
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        return reportError("DebxDisentangledAttention::configurePlugin", e);
    }
}

int32_t DisentangledAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        DEBX_VALIDATE(outputTypes != nullptr && inputTypes != nullptr, "getOutputDataTypes: null arrays");
        DEBX_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "expects 6 inputs and 1 output, got " << nbInputs << " and " << nbOutputs);
        DEBX_VALIDATE(isFloatType(inputTypes[kQUERY]),
            "query must be FP32, FP16 or BF16 (INT8 is not supported: see the plugin README)");
        outputTypes[0] = inputTypes[kQUERY];
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        return reportError("DebxDisentangledAttention::getOutputDataTypes", e);
    }
}

int32_t DisentangledAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        DEBX_VALIDATE(inputs != nullptr && outputs != nullptr, "getOutputShapes: null arrays");
        DEBX_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "expects 6 inputs and 1 output, got " << nbInputs << " and " << nbOutputs);
        DEBX_VALIDATE(inputs[kQUERY].nbDims == 3, "query must be (B, N, HD), got rank " << inputs[kQUERY].nbDims);
        DEBX_VALIDATE(inputs[kKEY].nbDims == 3 && inputs[kVALUE].nbDims == 3, "key and value must be (B, N, HD)");
        DEBX_VALIDATE(inputs[kPOS_KEY].nbDims == 2 && inputs[kPOS_QUERY].nbDims == 2,
            "pos_key and pos_query must be (P, HD)");
        DEBX_VALIDATE(inputs[kMASK].nbDims == 2, "mask must be (B, N)");
        nvinfer1::IDimensionExpr const* hidden = inputs[kQUERY].d[2];
        if (hidden != nullptr && hidden->isConstant())
        {
            int64_t const hd = hidden->getConstantValue();
            DEBX_VALIDATE(hd % mAttributes.numHeads == 0,
                "hidden size " << hd << " is not divisible by num_heads " << mAttributes.numHeads);
            DEBX_VALIDATE(hd / mAttributes.numHeads <= attention::kMaxHeadSize,
                "head size " << hd / mAttributes.numHeads << " exceeds the kernel limit " << attention::kMaxHeadSize);
        }
        // context has the query's shape: (B, N, HD), symbolic dimensions passed through unchanged.
        outputs[0].nbDims = 3;
        for (int32_t k = 0; k < 3; ++k)
        {
            outputs[0].d[k] = inputs[kQUERY].d[k];
        }
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        return reportError("DebxDisentangledAttention::getOutputShapes", e);
    }
}

bool DisentangledAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
        || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR) // dense row-major only
    {
        return false;
    }
    if (pos == kMASK)
    {
        return desc.type == DataType::kINT32;
    }
    if (pos == kQUERY)
    {
        // FP32, FP16 and BF16 only. INT8 (and FP8) is refused on purpose: the scores need the dequantized q, k
        // and relative tables, the softmax and the value product need more range than 8 bits, and the per-tensor
        // scale TensorRT would attach to an INT8 plugin tensor is only defined for implicit quantization, which
        // TensorRT 10 deprecates and TensorRT 11 removes. INT8 engines keep this op in FP16/FP32 while the
        // surrounding GEMMs run INT8 through explicit Q/DQ nodes.
        return isFloatType(desc.type);
    }
    // key, value, pos tables and the output: the query's type.
    return desc.type == inOut[kQUERY].desc.type;
}

int32_t DisentangledAttentionPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

size_t DisentangledAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) const noexcept
{
    try
    {
        DEBX_VALIDATE(in != nullptr && nbInputs == kNB_INPUTS, "getWorkspaceSize: expected " << kNB_INPUTS << " inputs");
        DataType const type = in[kQUERY].desc.type;
        if (type != DataType::kHALF && type != DataType::kBF16)
        {
            return 0;
        }
        // the largest shapes of the profile: band products grow with B, N and the rows N reads
        attention::Params const p = makeParams(mAttributes, in[kQUERY].max, in[kKEY].max, in[kVALUE].max,
            in[kPOS_KEY].max, in[kPOS_QUERY].max, in[kMASK].max);
        return attention::tritonWorkspaceBytes(
            type == DataType::kHALF ? attention::TritonType::kHALF : attention::TritonType::kBF16, p);
    }
    catch (std::exception const& e)
    {
        reportError("DebxDisentangledAttention::getWorkspaceSize", e);
    }
    return 0;
}

char const* DisentangledAttentionPlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* DisentangledAttentionPlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t DisentangledAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        DEBX_VALIDATE(in != nullptr && out != nullptr, "onShapeChange: null tensor descriptions");
        DEBX_VALIDATE(nbInputs == kNB_INPUTS && nbOutputs == kNB_OUTPUTS,
            "expects 6 inputs and 1 output, got " << nbInputs << " and " << nbOutputs);
        makeParams(mAttributes, in[kQUERY].dims, in[kKEY].dims, in[kVALUE].dims, in[kPOS_KEY].dims,
            in[kPOS_QUERY].dims, in[kMASK].dims);
        DEBX_VALIDATE(out[0].dims.nbDims == 3 && out[0].dims.d[0] == in[kQUERY].dims.d[0]
                && out[0].dims.d[1] == in[kQUERY].dims.d[1] && out[0].dims.d[2] == in[kQUERY].dims.d[2],
            "output shape " << dimsToString(out[0].dims) << " differs from the query's "
                            << dimsToString(in[kQUERY].dims));
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        return reportError("DebxDisentangledAttention::onShapeChange", e);
    }
}

int32_t DisentangledAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        DEBX_VALIDATE(inputDesc != nullptr && outputDesc != nullptr && inputs != nullptr && outputs != nullptr,
            "enqueue: null arguments");
        // Re-derive (B, N, D, P) from this call's shapes: a mask or table that does not match the query is an
        // error here, never an out-of-bounds read in the kernel.
        attention::Params const p = makeParams(mAttributes, inputDesc[kQUERY].dims, inputDesc[kKEY].dims,
            inputDesc[kVALUE].dims, inputDesc[kPOS_KEY].dims, inputDesc[kPOS_QUERY].dims, inputDesc[kMASK].dims);
        DataType const type = inputDesc[kQUERY].type;
        for (int32_t t : {kKEY, kVALUE, kPOS_KEY, kPOS_QUERY})
        {
            DEBX_VALIDATE(inputDesc[t].type == type, "all float inputs must share the query's type");
        }
        DEBX_VALIDATE(inputDesc[kMASK].type == DataType::kINT32, "mask must be int32");
        DEBX_VALIDATE(outputDesc[0].type == type, "output type must equal the query type");
        cudaError_t status = cudaErrorInvalidValue;
        if (type == DataType::kHALF || type == DataType::kBF16)
        {
            // the tensor-core kernel (the Triton kernel PyTorch runs, built ahead of time) when this build, this GPU
            // and these shapes allow it, with the workspace getWorkspaceSize() asked for
            auto const tt = type == DataType::kHALF ? attention::TritonType::kHALF : attention::TritonType::kBF16;
            if (workspace != nullptr && attention::tritonPathAvailable(tt, p))
            {
                status = attention::launchDebxAttentionTriton(tt, p, inputs[kQUERY], inputs[kKEY], inputs[kVALUE],
                    inputs[kPOS_KEY], inputs[kPOS_QUERY], static_cast<int32_t const*>(inputs[kMASK]), outputs[0],
                    workspace, stream);
                if (status != cudaSuccess)
                {
                    throw PluginError(std::string("tensor-core attention failed: ") + cudaGetErrorString(status),
                        kSTATUS_CUDA_ERROR);
                }
                return kSTATUS_SUCCESS;
            }
        }
        switch (type)
        {
        case DataType::kFLOAT: status = launchTyped<float>(p, inputs, outputs, stream); break;
        case DataType::kHALF: status = launchTyped<__half>(p, inputs, outputs, stream); break;
        case DataType::kBF16: status = launchTyped<__nv_bfloat16>(p, inputs, outputs, stream); break;
        default: throw PluginError("unsupported data type (FP32, FP16, BF16 only)", kSTATUS_NOT_SUPPORTED);
        }
        if (status != cudaSuccess)
        {
            throw PluginError(std::string("kernel launch failed: ") + cudaGetErrorString(status), kSTATUS_CUDA_ERROR);
        }
        return kSTATUS_SUCCESS;
    }
    catch (std::exception const& e)
    {
        return reportError("DebxDisentangledAttention::enqueue", e);
    }
}

nvinfer1::IPluginV3* DisentangledAttentionPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* DisentangledAttentionPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerialized = serializePod(mAttributes, kSERIAL_MAGIC, kSERIAL_VERSION);
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back(kFIELD_SERIALIZED, mSerialized.data(), PluginFieldType::kUNKNOWN,
            static_cast<int32_t>(mSerialized.size()));
        mFieldCollection.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFieldCollection.fields = mFieldsToSerialize.data();
        return &mFieldCollection;
    }
    catch (std::exception const& e)
    {
        reportError("DebxDisentangledAttention::getFieldsToSerialize", e);
    }
    return nullptr;
}

// ---- creator -------------------------------------------------------------------------------------------------------

DisentangledAttentionPluginCreator::DisentangledAttentionPluginCreator()
{
    mFields.emplace_back(kFIELD_NUM_HEADS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_SCALE, nullptr, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back(kFIELD_SPAN, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_POSITION_BUCKETS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_MAX_RELATIVE_POSITIONS, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_C2P, nullptr, PluginFieldType::kINT32, 1);
    mFields.emplace_back(kFIELD_P2C, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.nbFields = static_cast<int32_t>(mFields.size());
    mFieldNames.fields = mFields.data();
}

char const* DisentangledAttentionPluginCreator::getPluginName() const noexcept
{
    return kDISENTANGLED_ATTENTION_NAME;
}

char const* DisentangledAttentionPluginCreator::getPluginVersion() const noexcept
{
    return kDISENTANGLED_ATTENTION_VERSION;
}

char const* DisentangledAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return "";
}

PluginFieldCollection const* DisentangledAttentionPluginCreator::getFieldNames() noexcept
{
    return &mFieldNames;
}

nvinfer1::IPluginV3* DisentangledAttentionPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        return new DisentangledAttentionPlugin(parseAttributes(fc));
    }
    catch (std::exception const& e)
    {
        reportError("DebxDisentangledAttention::createPlugin", e);
    }
    return nullptr;
}

DEBX_REGISTER_PLUGIN_CREATOR(DisentangledAttentionPluginCreator);

} // namespace plugin
} // namespace debx
