/*
 * debx runtime: TensorRT engine wrapper (see engine.h). TensorRT 10 runtime API: named I/O tensors,
 * setInputShape / setTensorAddress / enqueueV3.
 */
#include "engine.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <NvInferRuntime.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace debx
{
namespace runtime
{
namespace
{

class StderrLogger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::fprintf(stderr, "[TensorRT] %s\n", msg);
        }
    }
};

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

size_t elementSize(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    default: break;
    }
    throw std::runtime_error("engine has an I/O tensor of a type the runtime does not handle");
}

int64_t volume(nvinfer1::Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

float bf16ToFloat(uint16_t bits)
{
    uint32_t const u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
}

//! A device buffer that grows on demand.
struct DeviceBuffer
{
    void* ptr{nullptr};
    size_t bytes{0};
    void reserve(size_t n)
    {
        if (n <= bytes)
        {
            return;
        }
        if (ptr != nullptr)
        {
            cudaFree(ptr);
            ptr = nullptr;
            bytes = 0;
        }
        checkCuda(cudaMalloc(&ptr, n), "cudaMalloc");
        bytes = n;
    }
    ~DeviceBuffer()
    {
        if (ptr != nullptr)
        {
            cudaFree(ptr);
        }
    }
};

} // namespace

struct TensorRTEngine::Impl
{
    StderrLogger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    std::vector<std::string> outputs;
    std::vector<DeviceBuffer> buffers; // one per I/O tensor, in getIOTensorName order
    cudaStream_t stream{nullptr};

    ~Impl()
    {
        context.reset();
        engine.reset();
        if (stream != nullptr)
        {
            cudaStreamDestroy(stream);
        }
    }
};

TensorRTEngine::TensorRTEngine(std::string const& planPath, std::vector<std::string> const& pluginLibraries)
    : mImpl(std::make_unique<Impl>())
{
    std::ifstream file(planPath, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error(planPath + ": plan file not found");
    }
    std::vector<char> const plan((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());

    mImpl->runtime.reset(nvinfer1::createInferRuntime(mImpl->logger));
    if (!mImpl->runtime)
    {
        throw std::runtime_error("cannot create the TensorRT runtime (no CUDA GPU or driver?)");
    }
    for (std::string const& lib : pluginLibraries)
    {
        if (mImpl->runtime->getPluginRegistry().loadLibrary(lib.c_str()) == nullptr)
        {
            throw std::runtime_error(lib + ": TensorRT could not load this plugin library");
        }
    }
    mImpl->engine.reset(mImpl->runtime->deserializeCudaEngine(plan.data(), plan.size()));
    if (!mImpl->engine)
    {
        throw std::runtime_error(planPath + ": cannot deserialize the plan (built by another TensorRT version or for "
                                            "another GPU, or a plugin library is missing)");
    }
    mImpl->context.reset(mImpl->engine->createExecutionContext());
    if (!mImpl->context)
    {
        throw std::runtime_error("cannot create an execution context");
    }
    checkCuda(cudaStreamCreate(&mImpl->stream), "cudaStreamCreate");
    int32_t const n = mImpl->engine->getNbIOTensors();
    mImpl->buffers.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i)
    {
        char const* name = mImpl->engine->getIOTensorName(i);
        if (mImpl->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
        {
            mInputs.emplace_back(name);
        }
        else
        {
            mImpl->outputs.emplace_back(name);
        }
    }
}

TensorRTEngine::~TensorRTEngine() = default;

std::vector<Output> TensorRTEngine::run(std::vector<Encoding> const& batch)
{
    if (batch.empty())
    {
        return {};
    }
    int64_t const rows = static_cast<int64_t>(batch.size());
    int64_t const cols = static_cast<int64_t>(batch.front().inputIds.size());
    auto& eng = *mImpl->engine;
    auto& ctx = *mImpl->context;

    int32_t const n = eng.getNbIOTensors();
    for (int32_t i = 0; i < n; ++i)
    {
        char const* name = eng.getIOTensorName(i);
        if (eng.getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT)
        {
            continue;
        }
        std::string const input = name;
        std::vector<int64_t> Encoding::*field = nullptr;
        if (input == "input_ids")
        {
            field = &Encoding::inputIds;
        }
        else if (input == "attention_mask")
        {
            field = &Encoding::attentionMask;
        }
        else if (input == "token_type_ids")
        {
            field = &Encoding::tokenTypeIds;
        }
        else
        {
            throw std::runtime_error("engine input '" + input + "' is not one of input_ids, attention_mask, "
                                                                "token_type_ids");
        }
        nvinfer1::DataType const type = eng.getTensorDataType(name);
        std::vector<int64_t> flat;
        flat.reserve(static_cast<size_t>(rows * cols));
        for (Encoding const& e : batch)
        {
            auto const& values = e.*field;
            if (static_cast<int64_t>(values.size()) != cols)
            {
                throw std::runtime_error("batch rows must be padded to one length");
            }
            flat.insert(flat.end(), values.begin(), values.end());
        }
        std::vector<int32_t> narrow;
        void const* host = flat.data();
        if (type == nvinfer1::DataType::kINT32)
        {
            narrow.assign(flat.begin(), flat.end());
            host = narrow.data();
        }
        else if (type != nvinfer1::DataType::kINT64)
        {
            throw std::runtime_error("engine input '" + input + "' must be int32 or int64");
        }
        size_t const bytes = static_cast<size_t>(rows * cols) * elementSize(type);
        DeviceBuffer& buf = mImpl->buffers[static_cast<size_t>(i)];
        buf.reserve(bytes);
        checkCuda(cudaMemcpyAsync(buf.ptr, host, bytes, cudaMemcpyHostToDevice, mImpl->stream), "cudaMemcpyAsync");
        nvinfer1::Dims dims{};
        dims.nbDims = 2;
        dims.d[0] = rows;
        dims.d[1] = cols;
        if (!ctx.setInputShape(name, dims) || !ctx.setTensorAddress(name, buf.ptr))
        {
            throw std::runtime_error("batch shape (" + std::to_string(rows) + ", " + std::to_string(cols)
                + ") is outside the engine's optimization profile");
        }
    }
    for (int32_t i = 0; i < n; ++i)
    {
        char const* name = eng.getIOTensorName(i);
        if (eng.getTensorIOMode(name) != nvinfer1::TensorIOMode::kOUTPUT)
        {
            continue;
        }
        nvinfer1::Dims const dims = ctx.getTensorShape(name);
        DeviceBuffer& buf = mImpl->buffers[static_cast<size_t>(i)];
        buf.reserve(static_cast<size_t>(volume(dims)) * elementSize(eng.getTensorDataType(name)));
        if (!ctx.setTensorAddress(name, buf.ptr))
        {
            throw std::runtime_error(std::string("cannot bind output ") + name);
        }
    }
    if (!ctx.enqueueV3(mImpl->stream))
    {
        throw std::runtime_error("TensorRT enqueueV3 failed");
    }

    std::vector<Output> results;
    for (int32_t i = 0; i < n; ++i)
    {
        char const* name = eng.getIOTensorName(i);
        if (eng.getTensorIOMode(name) != nvinfer1::TensorIOMode::kOUTPUT)
        {
            continue;
        }
        nvinfer1::Dims const dims = ctx.getTensorShape(name);
        nvinfer1::DataType const type = eng.getTensorDataType(name);
        size_t const count = static_cast<size_t>(volume(dims));
        std::vector<uint8_t> raw(count * elementSize(type));
        checkCuda(cudaMemcpyAsync(raw.data(), mImpl->buffers[static_cast<size_t>(i)].ptr, raw.size(),
                      cudaMemcpyDeviceToHost, mImpl->stream),
            "cudaMemcpyAsync");
        checkCuda(cudaStreamSynchronize(mImpl->stream), "cudaStreamSynchronize");
        Output out;
        out.name = name;
        out.shape.assign(dims.d, dims.d + dims.nbDims);
        out.values.resize(count);
        for (size_t k = 0; k < count; ++k)
        {
            switch (type)
            {
            case nvinfer1::DataType::kFLOAT: std::memcpy(&out.values[k], raw.data() + 4 * k, 4); break;
            case nvinfer1::DataType::kHALF:
            {
                __half h;
                std::memcpy(&h, raw.data() + 2 * k, 2);
                out.values[k] = __half2float(h);
                break;
            }
            case nvinfer1::DataType::kBF16:
            {
                uint16_t bits;
                std::memcpy(&bits, raw.data() + 2 * k, 2);
                out.values[k] = bf16ToFloat(bits);
                break;
            }
            default: throw std::runtime_error(std::string("output ") + name + " is not a floating-point tensor");
            }
        }
        results.push_back(std::move(out));
    }
    return results;
}

} // namespace runtime
} // namespace debx
