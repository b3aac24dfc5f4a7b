/*
 * debx: ONNX Runtime glue of the INT8 matmul ops (see matMulInt8Op.h for the contract).
 */
#include "matMulInt8Op.h"

#include <algorithm>
#include <string>
#include <vector>

#include "matMulInt8Cpu.h"
#include "ortHelpers.h"

namespace debx
{
namespace ort
{
namespace
{

enum Variant
{
    kPlain = 0,
    kAdd = 1,
    kGeluQuantize = 2,
};

constexpr char const* kNames[3] = {"DebxMatMulInt8", "DebxMatMulInt8Add", "DebxMatMulInt8GeluQuantize"};
constexpr size_t kInputs[3] = {7, 8, 9};

struct MatMulKernel
{
    Api api;
    Variant variant;
    int8::Family family;
    int8::PackedWeights weights;
    std::vector<float> bScale;
};

Status* fail(Api const& api, Variant variant, std::string const& msg)
{
    return api.createStatus(kInvalidArgument, (std::string(kNames[variant]) + ": " + msg).c_str());
}

//! A constant (initializer) input of the kernel: its dims and data, or an error.
Status* constantInput(Api const& api, Variant variant, KernelInfo const* info, size_t index, char const* name,
    ElementType want, std::vector<int64_t>* dims, void const** data)
{
    int isConstant = 0;
    Value const* value = nullptr;
    DEBX_ORT_TRY(api.kernelInfoGetConstantInput(info, index, &isConstant, &value));
    if (!isConstant || value == nullptr)
    {
        return fail(api, variant, std::string(name) + " must be a constant initializer");
    }
    ElementType type = kElementUndefined;
    DEBX_ORT_TRY(describe(api, value, &type, dims));
    if (type != want)
    {
        return fail(api, variant, std::string(name) + " has the wrong element type");
    }
    void* raw = nullptr;
    DEBX_ORT_TRY(api.getTensorMutableData(const_cast<Value*>(value), &raw));
    *data = raw;
    return nullptr;
}

template <Variant V>
Status* create(CustomOp const*, void const* apiTable, KernelInfo const* info, void** out)
{
    Api const api(static_cast<void const* const*>(apiTable));
    int64_t family = static_cast<int64_t>(int8::bestFamily());
    if (Status* status = api.kernelInfoGetAttributeInt64(info, "family", &family)) // optional: the best one here
    {
        api.releaseStatus(status);
        family = static_cast<int64_t>(int8::bestFamily());
    }
    if (family < 0 || family >= int8::kFamilyCount)
    {
        return fail(api, V, "unknown kernel family " + std::to_string(family)
                + " (1 = avx512-vnni, 2 = amx, 3 = avx2, 4 = avx-vnni)");
    }
    auto const chosen = static_cast<int8::Family>(family);
    if (chosen == int8::Family::kNone)
    {
        return fail(api, V, "this CPU (or OS) runs none of the native kernel families (they need AVX2 + FMA at "
                            "least); run the graph with com.microsoft MatMulIntegerToFloat instead (debx does this "
                            "where none runs)");
    }
    if (!int8::familyAvailable(chosen))
    {
        return fail(api, V, std::string("this CPU (or OS) cannot run the ") + int8::familyName(chosen)
                + " kernels (they need " + int8::familyNeeds(chosen) + "); run the graph with com.microsoft "
                  "MatMulIntegerToFloat instead, or another family");
    }
    std::vector<int64_t> bDims, sDims, zDims;
    void const* b = nullptr;
    void const* bScale = nullptr;
    void const* bZero = nullptr;
    DEBX_ORT_TRY(constantInput(api, V, info, 1, "B", kElementInt8, &bDims, &b));
    DEBX_ORT_TRY(constantInput(api, V, info, 3, "b_scale", kElementFloat, &sDims, &bScale));
    DEBX_ORT_TRY(constantInput(api, V, info, 5, "b_zero_point", kElementInt8, &zDims, &bZero));
    if (bDims.size() != 2 || bDims[0] <= 0 || bDims[1] <= 0)
    {
        return fail(api, V, "B must be (K, N), got " + shapeText(bDims));
    }
    int64_t const K = bDims[0];
    int64_t const N = bDims[1];
    if (sDims != std::vector<int64_t>{N} || zDims != std::vector<int64_t>{N})
    {
        return fail(api, V, "b_scale and b_zero_point must have N = " + std::to_string(N) + " entries (per column)");
    }
    auto const* zero = static_cast<int8_t const*>(bZero);
    if (std::any_of(zero, zero + N, [](int8_t z) { return z != 0; }))
    {
        return fail(api, V, "b_zero_point must be all 0 (symmetric weights)");
    }
    auto* kernel = new MatMulKernel{api, V, chosen, {}, {}};
    int8::packWeights(static_cast<int8_t const*>(b), K, N, &kernel->weights);
    auto const* scales = static_cast<float const*>(bScale);
    kernel->bScale.assign(scales, scales + N);
    *out = kernel;
    return nullptr;
}

void runTask(void* data, size_t task)
{
    int8::runTask(*static_cast<int8::MatMulArgs const*>(data), static_cast<int64_t>(task));
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

Status* compute(void* opKernel, KernelContext* ctx)
{
    auto const* kernel = static_cast<MatMulKernel const*>(opKernel);
    Api const& api = kernel->api;
    Variant const V = kernel->variant;
    size_t const count = kInputs[V];
    Value const* inputs[9] = {};
    ElementType types[9] = {};
    std::vector<int64_t> dims[9];
    for (size_t i = 0; i < count; ++i)
    {
        DEBX_ORT_TRY(api.kernelContextGetInput(ctx, i, &inputs[i]));
        if (inputs[i] == nullptr)
        {
            return fail(api, V, "input " + std::to_string(i) + " is missing");
        }
        DEBX_ORT_TRY(describe(api, inputs[i], &types[i], &dims[i]));
    }
    int64_t const K = kernel->weights.K;
    int64_t const N = kernel->weights.N;
    if (types[0] != kElementUint8 || dims[0].empty() || dims[0].back() != K)
    {
        return fail(api, V, "A must be uint8 (..., " + std::to_string(K) + "), got " + shapeText(dims[0]));
    }
    if (types[2] != kElementFloat || types[4] != kElementUint8 || types[6] != kElementFloat)
    {
        return fail(api, V, "a_scale must be float, a_zero_point uint8 and bias float");
    }
    if (elementCount(dims[2]) != 1 || elementCount(dims[4]) != 1 || dims[6] != std::vector<int64_t>{N})
    {
        return fail(api, V, "a_scale and a_zero_point must be scalars and bias (" + std::to_string(N) + ")");
    }
    std::vector<int64_t> outDims(dims[0]);
    outDims.back() = N;
    if (V == kAdd && (types[7] != kElementFloat || dims[7] != outDims))
    {
        return fail(api, V, "residual must be float " + shapeText(outDims) + ", got " + shapeText(dims[7]));
    }
    if (V == kGeluQuantize
        && (types[7] != kElementFloat || types[8] != kElementUint8 || elementCount(dims[7]) != 1
            || elementCount(dims[8]) != 1))
    {
        return fail(api, V, "y_scale must be a float scalar and y_zero_point a uint8 scalar");
    }
    void* data[9] = {};
    for (size_t i = 0; i < count; ++i)
    {
        if (i != 1 && i != 3 && i != 5) // the constants were read at creation
        {
            DEBX_ORT_TRY(api.getTensorMutableData(const_cast<Value*>(inputs[i]), &data[i]));
        }
    }
    int64_t const M = elementCount(dims[0]) / K;
    Value* output = nullptr;
    DEBX_ORT_TRY(api.kernelContextGetOutput(ctx, 0, outDims.data(), outDims.size(), &output));
    void* y = nullptr;
    DEBX_ORT_TRY(api.getTensorMutableData(output, &y));
    if (M == 0)
    {
        return nullptr;
    }
    float const aScale = *static_cast<float const*>(data[2]);
    thread_local std::vector<float> scale;
    scale.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n)
    {
        scale[static_cast<size_t>(n)] = aScale * kernel->bScale[static_cast<size_t>(n)];
    }
    auto const* a = static_cast<uint8_t const*>(data[0]);
    int64_t lda = K;
    thread_local std::vector<uint8_t> padded;
    if (int8::needsPadding(M, kernel->weights, kernel->family))
    {
        padded.resize(int8::paddedSize(M, kernel->weights));
        int8::padActivations(a, M, kernel->weights, padded.data());
        a = padded.data();
        lda = kernel->weights.kBlocks * 64;
    }
    int8::MatMulArgs args{kernel->family, a, lda, M, &kernel->weights, scale.data(),
        static_cast<int32_t>(*static_cast<uint8_t const*>(data[4])), static_cast<float const*>(data[6]),
        int8::Epilogue::kFloat, nullptr, 0.0F, 0, y};
    if (V == kAdd)
    {
        args.epilogue = int8::Epilogue::kResidual;
        args.residual = static_cast<float const*>(data[7]);
    }
    else if (V == kGeluQuantize)
    {
        args.epilogue = int8::Epilogue::kGeluQuantize;
        args.yScale = *static_cast<float const*>(data[7]);
        args.yZeroPoint = static_cast<int32_t>(*static_cast<uint8_t const*>(data[8]));
        if (!(args.yScale > 0.0F))
        {
            return fail(api, V, "y_scale must be positive");
        }
    }
    // contiguous batches of panels per thread, so the next-panel prefetch guesses right
    size_t const tasks = static_cast<size_t>(int8::taskCount(args));
    return api.kernelContextParallelFor(ctx, runTask, tasks, std::min<size_t>(tasks, 8), &args);
}

template <Variant V>
CustomOp makeOp()
{
    CustomOp op = baseOp();
    op.getName = [](CustomOp const*) { return kNames[V]; };
    op.getInputType = [](CustomOp const*, size_t i) {
        static ElementType const types[9] = {kElementUint8, kElementInt8, kElementFloat, kElementFloat, kElementUint8,
            kElementInt8, kElementFloat, kElementFloat, kElementUint8};
        return i < kInputs[V] ? types[i] : kElementUndefined;
    };
    op.getInputTypeCount = [](CustomOp const*) { return kInputs[V]; };
    op.getOutputType = [](CustomOp const*, size_t) { return V == kGeluQuantize ? kElementUint8 : kElementFloat; };
    op.kernelDestroy = [](void* kernel) { delete static_cast<MatMulKernel*>(kernel); };
    op.createKernelV2 = create<V>;
    op.kernelComputeV2 = compute;
    return op;
}

CustomOp const gOps[3] = {makeOp<kPlain>(), makeOp<kAdd>(), makeOp<kGeluQuantize>()};

} // namespace

CustomOp const* matMulInt8Ops(size_t* count)
{
    *count = 3;
    return gOps;
}

} // namespace ort
} // namespace debx
