/*
 * debx: the few pieces of ONNX Runtime's C ABI the debx custom-op library uses, declared by hand.
 *
 * ONNX Runtime's pip wheel ships no C headers and none can be installed here, so this library talks to the runtime
 * through its documented, stable C ABI directly:
 *   - a custom-op library exports `RegisterCustomOps(OrtSessionOptions*, const OrtApiBase*)`;
 *   - OrtApiBase is {GetApi(version), GetVersionString()}; GetApi returns the OrtApi table of function pointers;
 *   - the OrtApi table is append-only: an entry keeps its slot in every later release, so an entry is reached by its
 *     slot number (the numbers below, counted from the public API listing). tests/runtimes/test_native_ops.py checks
 *     them against the running ONNX Runtime (status round trip, build-info string) before anything else runs;
 *   - OrtCustomOp is a struct of function pointers whose `version` field tells the runtime how many fields it may
 *     read; version 16 covers everything up to KernelComputeV2 and nothing after it.
 * Only opaque pointer types, plain enums and the slot numbers are declared; nothing here is ONNX Runtime code.
 */
#pragma once

#include <cstddef>
#include <cstdint>

namespace debx
{
namespace ort
{

struct Status;
struct Value;
struct KernelInfo;
struct KernelContext;
struct SessionOptions;
struct CustomOpDomain;
struct TensorInfo;

//! ONNXTensorElementDataType values used here.
enum ElementType : int32_t
{
    kElementUndefined = 0,
    kElementFloat = 1,
    kElementUint8 = 2,
    kElementInt8 = 3,
    kElementInt32 = 6,
};

//! OrtErrorCode values used here.
enum ErrorCode : int32_t
{
    kOk = 0,
    kFail = 1,
    kInvalidArgument = 2,
};

//! OrtApiBase.
struct ApiBase
{
    void const* const* (*getApi)(uint32_t version);
    char const* (*getVersionString)();
};

//! Slot numbers of the OrtApi entries used (0-based positions in the table).
namespace slot
{
constexpr int kCreateStatus = 0;
constexpr int kGetErrorCode = 1;
constexpr int kGetErrorMessage = 2;
constexpr int kCreateCustomOpDomain = 26;
constexpr int kCustomOpDomainAdd = 27;
constexpr int kAddCustomOpDomain = 28;
constexpr int kGetTensorMutableData = 51;
constexpr int kGetTensorElementType = 60;
constexpr int kGetDimensionsCount = 61;
constexpr int kGetDimensions = 62;
constexpr int kGetTensorTypeAndShape = 65;
constexpr int kKernelInfoGetAttributeFloat = 85;
constexpr int kKernelInfoGetAttributeInt64 = 86;
constexpr int kKernelContextGetInputCount = 88;
constexpr int kKernelContextGetInput = 90;
constexpr int kKernelContextGetOutput = 91;
constexpr int kReleaseStatus = 93;
constexpr int kReleaseTensorTypeAndShapeInfo = 99;
constexpr int kKernelInfoGetConstantInputTensor = 249;
constexpr int kGetBuildInfoString = 254;
constexpr int kKernelContextParallelFor = 274;
} // namespace slot

//! API version requested from GetApi: the first release with KernelContext_ParallelFor is well below it.
constexpr uint32_t kApiVersion = 18;

//! Typed access to the OrtApi table.
class Api
{
public:
    explicit Api(void const* const* table)
        : mTable(table)
    {
    }

    Status* createStatus(ErrorCode code, char const* msg) const
    {
        return fn<Status* (*)(ErrorCode, char const*)>(slot::kCreateStatus)(code, msg);
    }
    ErrorCode getErrorCode(Status const* s) const
    {
        return fn<ErrorCode (*)(Status const*)>(slot::kGetErrorCode)(s);
    }
    char const* getErrorMessage(Status const* s) const
    {
        return fn<char const* (*)(Status const*)>(slot::kGetErrorMessage)(s);
    }
    void releaseStatus(Status* s) const
    {
        fn<void (*)(Status*)>(slot::kReleaseStatus)(s);
    }
    Status* createCustomOpDomain(char const* name, CustomOpDomain** out) const
    {
        return fn<Status* (*)(char const*, CustomOpDomain**)>(slot::kCreateCustomOpDomain)(name, out);
    }
    Status* customOpDomainAdd(CustomOpDomain* domain, void const* op) const
    {
        return fn<Status* (*)(CustomOpDomain*, void const*)>(slot::kCustomOpDomainAdd)(domain, op);
    }
    Status* addCustomOpDomain(SessionOptions* options, CustomOpDomain* domain) const
    {
        return fn<Status* (*)(SessionOptions*, CustomOpDomain*)>(slot::kAddCustomOpDomain)(options, domain);
    }
    Status* getTensorMutableData(Value* value, void** out) const
    {
        return fn<Status* (*)(Value*, void**)>(slot::kGetTensorMutableData)(value, out);
    }
    Status* getTensorTypeAndShape(Value const* value, TensorInfo** out) const
    {
        return fn<Status* (*)(Value const*, TensorInfo**)>(slot::kGetTensorTypeAndShape)(value, out);
    }
    Status* getTensorElementType(TensorInfo const* info, ElementType* out) const
    {
        return fn<Status* (*)(TensorInfo const*, ElementType*)>(slot::kGetTensorElementType)(info, out);
    }
    Status* getDimensionsCount(TensorInfo const* info, size_t* out) const
    {
        return fn<Status* (*)(TensorInfo const*, size_t*)>(slot::kGetDimensionsCount)(info, out);
    }
    Status* getDimensions(TensorInfo const* info, int64_t* dims, size_t count) const
    {
        return fn<Status* (*)(TensorInfo const*, int64_t*, size_t)>(slot::kGetDimensions)(info, dims, count);
    }
    void releaseTensorInfo(TensorInfo* info) const
    {
        fn<void (*)(TensorInfo*)>(slot::kReleaseTensorTypeAndShapeInfo)(info);
    }
    Status* kernelInfoGetAttributeFloat(KernelInfo const* info, char const* name, float* out) const
    {
        return fn<Status* (*)(KernelInfo const*, char const*, float*)>(slot::kKernelInfoGetAttributeFloat)(
            info, name, out);
    }
    Status* kernelInfoGetAttributeInt64(KernelInfo const* info, char const* name, int64_t* out) const
    {
        return fn<Status* (*)(KernelInfo const*, char const*, int64_t*)>(slot::kKernelInfoGetAttributeInt64)(
            info, name, out);
    }
    Status* kernelContextGetInputCount(KernelContext const* ctx, size_t* out) const
    {
        return fn<Status* (*)(KernelContext const*, size_t*)>(slot::kKernelContextGetInputCount)(ctx, out);
    }
    Status* kernelContextGetInput(KernelContext const* ctx, size_t index, Value const** out) const
    {
        return fn<Status* (*)(KernelContext const*, size_t, Value const**)>(slot::kKernelContextGetInput)(
            ctx, index, out);
    }
    Status* kernelContextGetOutput(KernelContext* ctx, size_t index, int64_t const* dims, size_t count,
        Value** out) const
    {
        return fn<Status* (*)(KernelContext*, size_t, int64_t const*, size_t, Value**)>(
            slot::kKernelContextGetOutput)(ctx, index, dims, count, out);
    }
    Status* kernelContextParallelFor(KernelContext const* ctx, void (*body)(void*, size_t), size_t total,
        size_t numBatch, void* data) const
    {
        return fn<Status* (*)(KernelContext const*, void (*)(void*, size_t), size_t, size_t, void*)>(
            slot::kKernelContextParallelFor)(ctx, body, total, numBatch, data);
    }
    Status* kernelInfoGetConstantInput(KernelInfo const* info, size_t index, int* isConstant, Value const** out) const
    {
        return fn<Status* (*)(KernelInfo const*, size_t, int*, Value const**)>(
            slot::kKernelInfoGetConstantInputTensor)(info, index, isConstant, out);
    }
    char const* getBuildInfoString() const
    {
        return fn<char const* (*)()>(slot::kGetBuildInfoString)();
    }

private:
    template <typename F>
    F fn(int index) const
    {
        return reinterpret_cast<F>(const_cast<void*>(mTable[index]));
    }

    void const* const* mTable;
};

//! OrtCustomOpInputOutputCharacteristic value used here.
enum Characteristic : int32_t
{
    kRequired = 0,
};

//! OrtCustomOp, fields up to KernelComputeV2 (declare `version` = kCustomOpVersion so no later field is read).
struct CustomOp
{
    uint32_t version;
    void* (*createKernel)(CustomOp const* op, void const* api, KernelInfo const* info);
    char const* (*getName)(CustomOp const* op);
    char const* (*getExecutionProviderType)(CustomOp const* op);
    ElementType (*getInputType)(CustomOp const* op, size_t index);
    size_t (*getInputTypeCount)(CustomOp const* op);
    ElementType (*getOutputType)(CustomOp const* op, size_t index);
    size_t (*getOutputTypeCount)(CustomOp const* op);
    void (*kernelCompute)(void* kernel, KernelContext* ctx);
    void (*kernelDestroy)(void* kernel);
    Characteristic (*getInputCharacteristic)(CustomOp const* op, size_t index);
    Characteristic (*getOutputCharacteristic)(CustomOp const* op, size_t index);
    int32_t (*getInputMemoryType)(CustomOp const* op, size_t index); // OrtMemType; 0 = default (CPU)
    int (*getVariadicInputMinArity)(CustomOp const* op);
    int (*getVariadicInputHomogeneity)(CustomOp const* op);
    int (*getVariadicOutputMinArity)(CustomOp const* op);
    int (*getVariadicOutputHomogeneity)(CustomOp const* op);
    Status* (*createKernelV2)(CustomOp const* op, void const* api, KernelInfo const* info, void** kernel);
    Status* (*kernelComputeV2)(void* kernel, KernelContext* ctx);
};

constexpr uint32_t kCustomOpVersion = 16;

} // namespace ort
} // namespace debx
