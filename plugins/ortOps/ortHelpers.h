/*
 * debx: small helpers shared by the ONNX Runtime custom ops of libdebx_ort_ops (status plumbing, tensor shapes, the
 * common OrtCustomOp fields). Internal to the library; uses only the hand-declared ABI of ortAbi.h.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ortAbi.h"

//! The first failing call returns its status; the macro keeps the compute bodies readable.
#define DEBX_ORT_TRY(expr)                                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        if (::debx::ort::Status* status_ = (expr))                                                                     \
        {                                                                                                              \
            return status_;                                                                                            \
        }                                                                                                              \
    } while (0)

namespace debx
{
namespace ort
{

//! Element type and dims of a tensor value.
inline Status* describe(Api const& api, Value const* value, ElementType* type, std::vector<int64_t>* dims)
{
    TensorInfo* info = nullptr;
    DEBX_ORT_TRY(api.getTensorTypeAndShape(value, &info));
    size_t rank = 0;
    Status* status = api.getTensorElementType(info, type);
    if (status == nullptr)
    {
        status = api.getDimensionsCount(info, &rank);
    }
    if (status == nullptr)
    {
        dims->assign(rank, 0);
        status = api.getDimensions(info, dims->data(), rank);
    }
    api.releaseTensorInfo(info);
    return status;
}

inline std::string shapeText(std::vector<int64_t> const& dims)
{
    std::string s = "(";
    for (size_t i = 0; i < dims.size(); ++i)
    {
        s += (i ? ", " : "") + std::to_string(dims[i]);
    }
    return s + ")";
}

//! An OrtCustomOp for the CPU execution provider with required inputs and one output; the caller fills the name,
//! the types, and the V2 create / compute / destroy functions.
inline CustomOp baseOp()
{
    CustomOp op{};
    op.version = kCustomOpVersion;
    op.createKernel = [](CustomOp const*, void const*, KernelInfo const*) -> void* { return nullptr; };
    op.getExecutionProviderType = [](CustomOp const*) -> char const* { return nullptr; }; // CPU
    op.getOutputTypeCount = [](CustomOp const*) { return size_t{1}; };
    op.kernelCompute = [](void*, KernelContext*) {}; // never called: version >= 16 uses kernelComputeV2
    op.getInputCharacteristic = [](CustomOp const*, size_t) { return kRequired; };
    op.getOutputCharacteristic = [](CustomOp const*, size_t) { return kRequired; };
    op.getInputMemoryType = [](CustomOp const*, size_t) { return int32_t{0}; };
    op.getVariadicInputMinArity = [](CustomOp const*) { return 1; };
    op.getVariadicInputHomogeneity = [](CustomOp const*) { return 1; };
    op.getVariadicOutputMinArity = [](CustomOp const*) { return 1; };
    op.getVariadicOutputHomogeneity = [](CustomOp const*) { return 1; };
    return op;
}

} // namespace ort
} // namespace debx
