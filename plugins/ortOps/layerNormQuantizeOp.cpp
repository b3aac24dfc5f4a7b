/*
 * debx: ONNX Runtime glue of DebxLayerNormQuantize (see layerNormQuantizeOp.h for the contract).
 */
#include "layerNormQuantizeOp.h"

#include <algorithm>
#include <string>
#include <vector>

#include "isaTwins.h"
#include "layerNormQuantizeCpu.h"
#include "ortHelpers.h"

namespace debx
{
namespace ort
{
namespace
{

constexpr char const* kName = "DebxLayerNormQuantize";
constexpr size_t kInputs = 5;
constexpr int64_t kRowsPerTask = 8;

struct NormKernel
{
    Api api;
    float epsilon;
    bool dequantized;
};

Status* fail(Api const& api, std::string const& msg)
{
    return api.createStatus(kInvalidArgument, (std::string(kName) + ": " + msg).c_str());
}

Status* create(CustomOp const*, void const* apiTable, KernelInfo const* info, void** out)
{
    Api const api(static_cast<void const* const*>(apiTable));
    float epsilon = 1e-5F;
    if (Status* status = api.kernelInfoGetAttributeFloat(info, "epsilon", &epsilon))
    {
        api.releaseStatus(status); // absent: the ONNX default
        epsilon = 1e-5F;
    }
    int64_t dequantized = 0;
    if (Status* status = api.kernelInfoGetAttributeInt64(info, "dequantized", &dequantized))
    {
        api.releaseStatus(status);
        dequantized = 0;
    }
    if (!(epsilon >= 0.0F) || (dequantized != 0 && dequantized != 1))
    {
        return fail(api, "epsilon must be >= 0 and dequantized 0 or 1");
    }
    *out = new NormKernel{api, epsilon, dequantized == 1};
    return nullptr;
}

int64_t elementCount(std::vector<int64_t> const& dims)
{
    int64_t n = 1;
    for (int64_t d : dims)
    {
        n *= d;
    }
    return n;
}

void runTask(void* data, size_t task)
{
    auto const& args = *static_cast<norm::LayerNormQuantizeArgs const*>(data);
    int64_t const r0 = static_cast<int64_t>(task) * kRowsPerTask;
    if (isa::avx512()) // the AVX-512 twin (isaTwins.h); baseline x86-64 otherwise
    {
        isa::layerNormRowsAvx512(&args, r0, r0 + kRowsPerTask);
    }
    else
    {
        norm::runRows(args, r0, r0 + kRowsPerTask);
    }
}

Status* compute(void* opKernel, KernelContext* ctx)
{
    auto const* kernel = static_cast<NormKernel const*>(opKernel);
    Api const& api = kernel->api;
    Value const* inputs[kInputs] = {};
    ElementType types[kInputs] = {};
    std::vector<int64_t> dims[kInputs];
    for (size_t i = 0; i < kInputs; ++i)
    {
        DEBX_ORT_TRY(api.kernelContextGetInput(ctx, i, &inputs[i]));
        if (inputs[i] == nullptr)
        {
            return fail(api, "input " + std::to_string(i) + " is missing");
        }
        DEBX_ORT_TRY(describe(api, inputs[i], &types[i], &dims[i]));
    }
    if (types[0] != kElementFloat || dims[0].empty() || dims[0].back() <= 0)
    {
        return fail(api, "X must be float (..., C), got " + shapeText(dims[0]));
    }
    int64_t const C = dims[0].back();
    if (types[1] != kElementFloat || types[2] != kElementFloat || dims[1] != std::vector<int64_t>{C}
        || dims[2] != std::vector<int64_t>{C})
    {
        return fail(api, "gamma and beta must be float (" + std::to_string(C) + ")");
    }
    if (types[3] != kElementFloat || types[4] != kElementUint8 || elementCount(dims[3]) != 1
        || elementCount(dims[4]) != 1)
    {
        return fail(api, "y_scale must be a float scalar and y_zero_point a uint8 scalar");
    }
    void* data[kInputs] = {};
    for (size_t i = 0; i < kInputs; ++i)
    {
        DEBX_ORT_TRY(api.getTensorMutableData(const_cast<Value*>(inputs[i]), &data[i]));
    }
    float const yScale = *static_cast<float const*>(data[3]);
    if (!(yScale > 0.0F))
    {
        return fail(api, "y_scale must be positive");
    }
    Value* q = nullptr;
    Value* f = nullptr;
    DEBX_ORT_TRY(api.kernelContextGetOutput(ctx, 0, dims[0].data(), dims[0].size(), &q));
    DEBX_ORT_TRY(api.kernelContextGetOutput(ctx, 1, dims[0].data(), dims[0].size(), &f));
    void* qData = nullptr;
    void* fData = nullptr;
    DEBX_ORT_TRY(api.getTensorMutableData(q, &qData));
    DEBX_ORT_TRY(api.getTensorMutableData(f, &fData));
    int64_t const rows = elementCount(dims[0]) / C;
    if (rows == 0)
    {
        return nullptr;
    }
    norm::LayerNormQuantizeArgs args{static_cast<float const*>(data[0]), rows, C, static_cast<float const*>(data[1]),
        static_cast<float const*>(data[2]), kernel->epsilon, yScale,
        static_cast<int32_t>(*static_cast<uint8_t const*>(data[4])), kernel->dequantized,
        static_cast<uint8_t*>(qData), static_cast<float*>(fData)};
    size_t const tasks = static_cast<size_t>((rows + kRowsPerTask - 1) / kRowsPerTask);
    return api.kernelContextParallelFor(ctx, runTask, tasks, std::min<size_t>(tasks, 8), &args);
}

CustomOp makeOp()
{
    CustomOp op = baseOp();
    op.getName = [](CustomOp const*) { return kName; };
    op.getInputType = [](CustomOp const*, size_t i) { return i == 4 ? kElementUint8 : kElementFloat; };
    op.getInputTypeCount = [](CustomOp const*) { return kInputs; };
    op.getOutputType = [](CustomOp const*, size_t i) { return i == 0 ? kElementUint8 : kElementFloat; };
    op.getOutputTypeCount = [](CustomOp const*) { return size_t{2}; };
    op.kernelDestroy = [](void* kernel) { delete static_cast<NormKernel*>(kernel); };
    op.createKernelV2 = create;
    op.kernelComputeV2 = compute;
    return op;
}

CustomOp const gOp = makeOp();

} // namespace

CustomOp const* layerNormQuantizeOp()
{
    return &gOp;
}

} // namespace ort
} // namespace debx
