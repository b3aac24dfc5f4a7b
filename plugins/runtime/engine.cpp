/*
 * debx engine library (see engine.h): TensorRT 10 runtime API (named I/O tensors, setInputShape / setTensorAddress /
 * enqueueV3), one execution context + CUDA stream + pinned host buffers per Session.
 */
#include "engine.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <unordered_map>

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

namespace debx
{
namespace runtime
{
namespace
{

//! TensorRT keeps one logger per process (the first runtime's): one shared instance, thread-safe (stdio locks).
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

StderrLogger& logger()
{
    static StderrLogger instance;
    return instance;
}

void checkCuda(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
    }
}

DataType fromTensorRT(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return DataType::kFloat;
    case nvinfer1::DataType::kHALF: return DataType::kHalf;
    case nvinfer1::DataType::kBF16: return DataType::kBF16;
    case nvinfer1::DataType::kINT8: return DataType::kInt8;
    case nvinfer1::DataType::kINT32: return DataType::kInt32;
    case nvinfer1::DataType::kINT64: return DataType::kInt64;
    case nvinfer1::DataType::kBOOL: return DataType::kBool;
    case nvinfer1::DataType::kUINT8: return DataType::kUInt8;
    default: break;
    }
    return DataType::kOther;
}

std::vector<int64_t> fromDims(nvinfer1::Dims const& d)
{
    if (d.nbDims < 0)
    {
        return {};
    }
    return std::vector<int64_t>(d.d, d.d + d.nbDims);
}

nvinfer1::Dims toDims(std::vector<int64_t> const& shape)
{
    nvinfer1::Dims d{};
    if (shape.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS))
    {
        throw std::invalid_argument("shape " + shapeString(shape) + " has more dimensions than TensorRT allows");
    }
    d.nbDims = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i)
    {
        d.d[i] = shape[i];
    }
    return d;
}

size_t byteCount(std::vector<int64_t> const& shape, DataType type)
{
    size_t n = 1;
    for (int64_t d : shape)
    {
        n *= static_cast<size_t>(d);
    }
    return n * dataTypeSize(type);
}

//! Page-locked host memory (cudaHostAlloc): the source and target of asynchronous copies. Grows, never shrinks.
struct PinnedBuffer
{
    void* ptr{nullptr};
    size_t bytes{0};
    PinnedBuffer() = default;
    PinnedBuffer(PinnedBuffer const&) = delete;
    PinnedBuffer& operator=(PinnedBuffer const&) = delete;
    void reserve(size_t n)
    {
        n = n == 0 ? 1 : n;
        if (n <= bytes)
        {
            return;
        }
        if (ptr != nullptr)
        {
            cudaFreeHost(ptr);
            ptr = nullptr;
            bytes = 0;
        }
        checkCuda(cudaHostAlloc(&ptr, n, cudaHostAllocDefault), "cudaHostAlloc");
        bytes = n;
    }
    ~PinnedBuffer()
    {
        if (ptr != nullptr)
        {
            cudaFreeHost(ptr);
        }
    }
};

//! Device memory of one I/O tensor. Grows, never shrinks.
struct DeviceBuffer
{
    void* ptr{nullptr};
    size_t bytes{0};
    DeviceBuffer() = default;
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    void reserve(size_t n)
    {
        n = n == 0 ? 1 : n;
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

// ---- Engine ---------------------------------------------------------------------------------------------------------

struct Engine::Impl
{
    // Declaration order is destruction order reversed: the engine goes before the runtime that made it.
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::vector<TensorInfo> tensors;
    std::unordered_map<std::string, size_t> index;

    ~Impl()
    {
        engine.reset();
        runtime.reset();
    }

    TensorInfo const& find(std::string const& name) const
    {
        auto const it = index.find(name);
        if (it == index.end())
        {
            std::string known;
            for (TensorInfo const& t : tensors)
            {
                known += (known.empty() ? "" : ", ") + t.name;
            }
            throw std::invalid_argument("the plan has no tensor '" + name + "' (it has: " + known + ")");
        }
        return tensors[it->second];
    }
};

Engine::Engine(std::string const& planPath, std::vector<std::string> const& pluginLibraries)
    : mImpl(std::make_shared<Impl>())
{
    std::ifstream file(planPath, std::ios::binary);
    if (!file)
    {
        throw std::runtime_error(planPath + ": plan file not found");
    }
    std::vector<char> const plan((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());

    mImpl->runtime.reset(nvinfer1::createInferRuntime(logger()));
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
    nvinfer1::ICudaEngine const& eng = *mImpl->engine;
    int32_t const n = eng.getNbIOTensors();
    for (int32_t i = 0; i < n; ++i)
    {
        char const* name = eng.getIOTensorName(i);
        TensorInfo info;
        info.name = name;
        info.isInput = eng.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
        info.type = fromTensorRT(eng.getTensorDataType(name));
        info.shape = fromDims(eng.getTensorShape(name));
        if (info.isInput && eng.getTensorLocation(name) != nvinfer1::TensorLocation::kDEVICE)
        {
            throw std::runtime_error(planPath + ": input '" + info.name + "' is a host (shape) tensor, which the "
                                                  "debx runtime does not bind");
        }
        if (info.isInput && eng.getNbOptimizationProfiles() > 0)
        {
            info.minShape = fromDims(eng.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN));
            info.optShape = fromDims(eng.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kOPT));
            info.maxShape = fromDims(eng.getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX));
        }
        mImpl->index.emplace(info.name, mImpl->tensors.size());
        mImpl->tensors.push_back(std::move(info));
    }
}

Engine::~Engine() = default;

std::vector<TensorInfo> const& Engine::tensors() const
{
    return mImpl->tensors;
}

TensorInfo const& Engine::tensor(std::string const& name) const
{
    return mImpl->find(name);
}

std::vector<std::string> Engine::inputNames() const
{
    std::vector<std::string> names;
    for (TensorInfo const& t : mImpl->tensors)
    {
        if (t.isInput)
        {
            names.push_back(t.name);
        }
    }
    return names;
}

std::vector<std::string> Engine::outputNames() const
{
    std::vector<std::string> names;
    for (TensorInfo const& t : mImpl->tensors)
    {
        if (!t.isInput)
        {
            names.push_back(t.name);
        }
    }
    return names;
}

// ---- Session --------------------------------------------------------------------------------------------------------

struct Session::Impl
{
    struct Binding
    {
        TensorInfo const* info{nullptr};
        PinnedBuffer host;
        DeviceBuffer device;
        std::vector<int64_t> shape; // inputs: the shape set; outputs: the shape of the last run
        bool set{false};
        HostTensor result;
    };

    std::shared_ptr<Engine::Impl> engine; // keeps the ICudaEngine alive for the context
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream{nullptr};
    std::vector<Binding> bindings; // Engine::Impl::tensors order
    bool ran{false};

    ~Impl()
    {
        if (stream != nullptr)
        {
            cudaStreamSynchronize(stream);
        }
        context.reset();
        bindings.clear();
        if (stream != nullptr)
        {
            cudaStreamDestroy(stream);
        }
    }

    Binding& input(std::string const& name, std::vector<int64_t> const& shape, size_t count)
    {
        TensorInfo const& info = engine->find(name);
        if (!info.isInput)
        {
            throw std::invalid_argument("'" + name + "' is an output of the plan, not an input");
        }
        info.checkShape(shape);
        int64_t elements = 1;
        for (int64_t d : shape)
        {
            elements *= d;
        }
        if (static_cast<size_t>(elements) != count)
        {
            throw std::invalid_argument("input '" + name + "' shape " + shapeString(shape) + " holds "
                + std::to_string(elements) + " values, got " + std::to_string(count));
        }
        Binding& b = bindings[engine->index.at(name)];
        b.host.reserve(byteCount(shape, info.type));
        b.shape = shape;
        b.set = true;
        return b;
    }
};

Session::Session(std::unique_ptr<Impl> impl)
    : mImpl(std::move(impl))
{
}

Session::~Session() = default;

std::unique_ptr<Session> Engine::createSession() const
{
    auto impl = std::make_unique<Session::Impl>();
    impl->engine = mImpl;
    impl->context.reset(mImpl->engine->createExecutionContext());
    if (!impl->context)
    {
        throw std::runtime_error("cannot create a TensorRT execution context (out of GPU memory?)");
    }
    checkCuda(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    std::vector<Session::Impl::Binding> bindings(mImpl->tensors.size()); // buffers are not movable: no resize()
    impl->bindings.swap(bindings);
    for (size_t i = 0; i < mImpl->tensors.size(); ++i)
    {
        impl->bindings[i].info = &mImpl->tensors[i];
    }
    return std::unique_ptr<Session>(new Session(std::move(impl)));
}

void Session::setInput(std::string const& name, std::vector<int64_t> const& shape, std::vector<int64_t> const& data)
{
    Impl::Binding& b = mImpl->input(name, shape, data.size());
    DataType const type = b.info->type;
    if (type == DataType::kInt64)
    {
        std::memcpy(b.host.ptr, data.data(), data.size() * sizeof(int64_t));
        return;
    }
    if (type != DataType::kInt32)
    {
        b.set = false;
        throw std::invalid_argument("input '" + name + "' is " + dataTypeName(type) + ", not int32 or int64");
    }
    auto* out = static_cast<int32_t*>(b.host.ptr);
    for (size_t k = 0; k < data.size(); ++k)
    {
        if (data[k] < std::numeric_limits<int32_t>::min() || data[k] > std::numeric_limits<int32_t>::max())
        {
            b.set = false;
            throw std::invalid_argument("input '" + name + "' is int32 and value " + std::to_string(data[k])
                + " does not fit");
        }
        out[k] = static_cast<int32_t>(data[k]);
    }
}

void Session::setInput(std::string const& name, std::vector<int64_t> const& shape, std::vector<float> const& data)
{
    Impl::Binding& b = mImpl->input(name, shape, data.size());
    if (b.info->type != DataType::kFloat)
    {
        b.set = false;
        throw std::invalid_argument("input '" + name + "' is " + dataTypeName(b.info->type) + ", not float32");
    }
    std::memcpy(b.host.ptr, data.data(), data.size() * sizeof(float));
}

void Session::run()
{
    nvinfer1::IExecutionContext& ctx = *mImpl->context;
    cudaStream_t const stream = mImpl->stream;
    for (Impl::Binding& b : mImpl->bindings)
    {
        if (!b.info->isInput)
        {
            continue;
        }
        if (!b.set)
        {
            throw std::invalid_argument("input '" + b.info->name + "' was not set (Session::setInput)");
        }
        size_t const bytes = byteCount(b.shape, b.info->type);
        b.device.reserve(bytes);
        checkCuda(cudaMemcpyAsync(b.device.ptr, b.host.ptr, bytes, cudaMemcpyHostToDevice, stream),
            "cudaMemcpyAsync (input)");
        char const* name = b.info->name.c_str();
        if (!ctx.setInputShape(name, toDims(b.shape)) || !ctx.setTensorAddress(name, b.device.ptr))
        {
            throw std::runtime_error("TensorRT refused input '" + b.info->name + "' of shape " + shapeString(b.shape));
        }
    }
    for (Impl::Binding& b : mImpl->bindings)
    {
        if (b.info->isInput)
        {
            continue;
        }
        char const* name = b.info->name.c_str();
        b.shape = fromDims(ctx.getTensorShape(name));
        for (int64_t d : b.shape)
        {
            if (d < 0)
            {
                throw std::runtime_error("output '" + b.info->name + "' has a data-dependent shape "
                    + shapeString(b.shape) + ", which the debx runtime does not handle");
            }
        }
        size_t const bytes = byteCount(b.shape, b.info->type);
        b.device.reserve(bytes);
        b.host.reserve(bytes);
        if (!ctx.setTensorAddress(name, b.device.ptr))
        {
            throw std::runtime_error("TensorRT refused the buffer of output '" + b.info->name + "'");
        }
    }
    if (!ctx.enqueueV3(stream))
    {
        throw std::runtime_error("TensorRT enqueueV3 failed (see the [TensorRT] lines above)");
    }
    for (Impl::Binding& b : mImpl->bindings)
    {
        if (b.info->isInput)
        {
            continue;
        }
        size_t const bytes = byteCount(b.shape, b.info->type);
        checkCuda(cudaMemcpyAsync(b.host.ptr, b.device.ptr, bytes, cudaMemcpyDeviceToHost, stream),
            "cudaMemcpyAsync (output)");
        b.result.name = b.info->name;
        b.result.type = b.info->type;
        b.result.shape = b.shape;
        b.result.data = b.host.ptr;
        b.result.bytes = bytes;
    }
    checkCuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    mImpl->ran = true;
}

HostTensor const& Session::output(std::string const& name) const
{
    TensorInfo const& info = mImpl->engine->find(name);
    if (info.isInput)
    {
        throw std::invalid_argument("'" + name + "' is an input of the plan, not an output");
    }
    if (!mImpl->ran)
    {
        throw std::invalid_argument("output '" + name + "' before the first Session::run()");
    }
    return mImpl->bindings[mImpl->engine->index.at(name)].result;
}

std::vector<Output> Session::run(std::vector<Encoding> const& batch)
{
    if (batch.empty())
    {
        return {};
    }
    int64_t const rows = static_cast<int64_t>(batch.size());
    int64_t const cols = static_cast<int64_t>(batch.front().inputIds.size());
    for (Impl::Binding const& b : mImpl->bindings)
    {
        if (!b.info->isInput)
        {
            continue;
        }
        std::vector<int64_t> Encoding::*field = nullptr;
        if (b.info->name == "input_ids")
        {
            field = &Encoding::inputIds;
        }
        else if (b.info->name == "attention_mask")
        {
            field = &Encoding::attentionMask;
        }
        else if (b.info->name == "token_type_ids")
        {
            field = &Encoding::tokenTypeIds;
        }
        else
        {
            throw std::invalid_argument("plan input '" + b.info->name
                + "' is not one of input_ids, attention_mask, token_type_ids");
        }
        std::vector<int64_t> flat;
        flat.reserve(static_cast<size_t>(rows * cols));
        for (Encoding const& e : batch)
        {
            auto const& values = e.*field;
            if (static_cast<int64_t>(values.size()) != cols)
            {
                throw std::invalid_argument("batch rows must be padded to one length (DebertaTokenizer::padBatch)");
            }
            flat.insert(flat.end(), values.begin(), values.end());
        }
        setInput(b.info->name, {rows, cols}, flat);
    }
    run();
    std::vector<Output> results;
    for (Impl::Binding const& b : mImpl->bindings)
    {
        if (!b.info->isInput)
        {
            results.push_back(Output{b.result.name, b.result.shape, b.result.toFloat()});
        }
    }
    return results;
}

} // namespace runtime
} // namespace debx
