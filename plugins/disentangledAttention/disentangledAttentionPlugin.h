/*
 * debx: DebxDisentangledAttention as a TensorRT IPluginV3 (TensorRT 10 and later) and its IPluginCreatorV3One.
 *
 * Inputs  0 query (B, N, HD), 1 key, 2 value, 3 pos_key (P, HD), 4 pos_query (P, HD): FP32 | FP16 | BF16, all one
 *         type; 5 mask (B, N) int32.
 * Output  0 context (B, N, HD), type of the query.
 * See README.md in this folder for attributes, tolerances and limits.
 */
#pragma once

#include <string>
#include <vector>

#include <NvInferRuntime.h>

#include "disentangledAttentionMath.h"

namespace debx
{
namespace plugin
{

constexpr char const* kDISENTANGLED_ATTENTION_NAME = "DebxDisentangledAttention";
constexpr char const* kDISENTANGLED_ATTENTION_VERSION = "1";

//! The node's attributes (ONNX attributes of the same names). Plain old data: serialized as one blob.
struct DisentangledAttentionAttributes
{
    int32_t numHeads{0};
    float scale{0.0F};
    int32_t span{0};
    int32_t positionBuckets{-1};
    int32_t maxRelativePositions{-1};
    int32_t c2p{1};
    int32_t p2c{1};

    bool operator==(DisentangledAttentionAttributes const& o) const
    {
        return numHeads == o.numHeads && scale == o.scale && span == o.span && positionBuckets == o.positionBuckets
            && maxRelativePositions == o.maxRelativePositions && c2p == o.c2p && p2c == o.p2c;
    }
};

//! Throws PluginError when the attributes cannot describe a valid op (num_heads > 0, span > 0, c2p/p2c in {0, 1},
//! scale finite > 0, log buckets consistent with max_relative_positions).
void validateAttributes(DisentangledAttentionAttributes const& a);

//! Parse a field collection: either the build-time attributes (names above) or the serialized blob written by
//! getFieldsToSerialize(). Throws PluginError with a message naming the offending field.
DisentangledAttentionAttributes parseAttributes(nvinfer1::PluginFieldCollection const* fc);

//! Kernel parameters for concrete input shapes; throws PluginError when the shapes are inconsistent (the same rules
//! as configurePlugin, onShapeChange and enqueue apply). Dims may not contain wildcards here.
attention::Params makeParams(DisentangledAttentionAttributes const& a, nvinfer1::Dims const& query,
    nvinfer1::Dims const& key, nvinfer1::Dims const& value, nvinfer1::Dims const& posKey,
    nvinfer1::Dims const& posQuery, nvinfer1::Dims const& mask);

class DisentangledAttentionPlugin : public nvinfer1::IPluginV3,
                                    public nvinfer1::IPluginV3OneCore,
                                    public nvinfer1::IPluginV3OneBuild,
                                    public nvinfer1::IPluginV3OneRuntime
{
public:
    static constexpr int32_t kNB_INPUTS = 6;
    static constexpr int32_t kNB_OUTPUTS = 1;

    explicit DisentangledAttentionPlugin(DisentangledAttentionAttributes const& attributes);
    ~DisentangledAttentionPlugin() override = default;

    DisentangledAttentionAttributes const& attributes() const noexcept
    {
        return mAttributes;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    char const* getTimingCacheID() noexcept override;
    //! The tensor-core path's band products and index table at the profile's largest shapes (FP16/BF16), else 0.
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    DisentangledAttentionAttributes mAttributes;
    std::string mDescription;                // attributes as text: timing-cache id and metadata
    std::vector<uint8_t> mSerialized;        // backing store of the serialized field
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class DisentangledAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    DisentangledAttentionPluginCreator();
    ~DisentangledAttentionPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldNames{};
};

} // namespace plugin
} // namespace debx
