/*
 * debx engine library: run a TensorRT plan (built by `debx build`) from a C++ service.
 *
 *   find_package(debx REQUIRED COMPONENTS engine)           # CMAKE_PREFIX_PATH=<debx install prefix>
 *   target_link_libraries(service PRIVATE debx::engine)     # brings debx::tokenizer, libnvinfer, the CUDA runtime
 *
 *   debx::runtime::Engine const engine("model.plan", {"libdebx_plugins.so"});   // once per process
 *   // in each worker thread:
 *   std::unique_ptr<debx::runtime::Session> session = engine.createSession();
 *   session->setInput("input_ids", {batch, seq}, ids);                          // int64 host data, copied
 *   session->setInput("attention_mask", {batch, seq}, mask);
 *   session->run();
 *   debx::runtime::HostTensor const& logits = session->output("logits");       // pinned host memory
 *
 * This header needs neither the TensorRT nor the CUDA headers: a service compiles against it alone and links
 * debx::engine (libnvinfer and libcudart come with the target).
 *
 * THREAD SAFETY
 *   - Engine: immutable after its constructor returns. Any number of threads may call its const members, including
 *     createSession(), at the same time (TensorRT: non-modifying engine calls and createExecutionContext() are
 *     thread-safe). Construct it once and share it. Sessions keep the engine's TensorRT objects alive, so the Engine
 *     may be destroyed before its sessions.
 *   - Session: one TensorRT execution context, one CUDA stream, and the device and pinned host buffers of every I/O
 *     tensor. A session is NOT thread-safe: use one per thread (or guard it with a lock). Two sessions never share
 *     memory, so sessions of one engine run concurrently on the GPU, each on its own stream.
 *   - Plugin libraries are loaded into the runtime's registry by the Engine constructor; plugins run inside every
 *     session (the debx plugins are IPluginV3: TensorRT clones one per execution context).
 *
 * BUFFERS
 *   setInput() copies the caller's data into the session's pinned (page-locked, cudaHostAlloc) host buffer of that
 *   input, converting integers to the type the plan declares (int64 -> int32 with a range check). run() copies
 *   every input host-to-device asynchronously from pinned memory, enqueues the plan, copies every output
 *   device-to-host into its pinned buffer and synchronizes the stream once. Buffers grow to the largest shape seen
 *   and are reused by later calls; nothing is allocated per call once the largest batch has run.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace debx
{
namespace runtime
{

//! Element types of I/O tensors (TensorRT's DataType, without the TensorRT header).
enum class DataType
{
    kFloat,
    kHalf,
    kBF16,
    kInt8,
    kInt32,
    kInt64,
    kBool,
    kUInt8,
    kOther, //!< FP8, INT4, ...: the engine loads, but setInput/output refuse the tensor
};

char const* dataTypeName(DataType type);
size_t dataTypeSize(DataType type); //!< bytes per element; throws std::invalid_argument for kOther

//! One I/O tensor of the plan. Dynamic dimensions are -1 in `shape`; inputs carry optimization profile 0's bounds.
struct TensorInfo
{
    std::string name;
    bool isInput{false};
    DataType type{DataType::kOther};
    std::vector<int64_t> shape;    //!< as built; -1 where dynamic
    std::vector<int64_t> minShape; //!< inputs: smallest shape profile 0 accepts (empty for outputs)
    std::vector<int64_t> optShape; //!< inputs: the shape profile 0 was tuned for
    std::vector<int64_t> maxShape; //!< inputs: largest shape profile 0 accepts

    //! Throws std::invalid_argument with a one-line reason when `candidate` has the wrong rank, a fixed dimension of
    //! another size, or a dynamic dimension outside [minShape, maxShape].
    void checkShape(std::vector<int64_t> const& candidate) const;
};

//! An output after Session::run(): row-major, in the session's pinned host buffer. Valid until the session's next
//! run() or its destruction.
struct HostTensor
{
    std::string name;
    DataType type{DataType::kOther};
    std::vector<int64_t> shape;
    void const* data{nullptr};
    size_t bytes{0};

    int64_t elementCount() const;
    //! The values as float32 (float, half and bfloat16 outputs); throws std::invalid_argument for other types.
    std::vector<float> toFloat() const;
};

//! One float32 output of the engine for the whole batch (what Session::run(batch) returns).
struct Output
{
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values; // row-major
};

class Session;

class Engine
{
public:
    //! Loads every plugin library into TensorRT's plugin registry, then deserializes the plan. Throws
    //! std::runtime_error with a one-line reason (missing file, plugin library that does not load, plan built for
    //! another TensorRT version or GPU, no CUDA device).
    Engine(std::string const& planPath, std::vector<std::string> const& pluginLibraries = {});
    ~Engine();
    Engine(Engine const&) = delete;
    Engine& operator=(Engine const&) = delete;

    //! Every I/O tensor, in the plan's order.
    std::vector<TensorInfo> const& tensors() const;
    //! The tensor called `name`; throws std::invalid_argument listing the plan's tensors when there is none.
    TensorInfo const& tensor(std::string const& name) const;
    std::vector<std::string> inputNames() const;
    std::vector<std::string> outputNames() const;

    //! A new execution context with its own stream and buffers. Thread-safe; call it once per worker thread.
    std::unique_ptr<Session> createSession() const;

    struct Impl;

private:
    std::shared_ptr<Impl> mImpl;
};

class Session
{
public:
    ~Session();
    Session(Session const&) = delete;
    Session& operator=(Session const&) = delete;

    //! Bind an input by name: checks the shape against the plan (TensorInfo::checkShape), copies `data` into the
    //! pinned buffer of that input, converting to the plan's type. int64 data fits int32 and int64 inputs (values
    //! outside int32 are refused); float data fits float inputs. Throws std::invalid_argument on a bad name, shape,
    //! count or type.
    void setInput(std::string const& name, std::vector<int64_t> const& shape, std::vector<int64_t> const& data);
    void setInput(std::string const& name, std::vector<int64_t> const& shape, std::vector<float> const& data);

    //! Run the plan on the inputs set so far (every input must be set once; later calls keep the last values).
    //! Synchronous: returns when the outputs are in host memory. Throws std::runtime_error on a TensorRT or CUDA
    //! failure.
    void run();

    //! An output of the last run(); throws std::invalid_argument for an unknown name or before the first run().
    HostTensor const& output(std::string const& name) const;

    //! Convenience for tokenized text: binds input_ids, attention_mask and token_type_ids (those the plan has) from
    //! a batch padded to one length (DebertaTokenizer::padBatch), runs, and returns every output as float32.
    std::vector<Output> run(std::vector<Encoding> const& batch);

    struct Impl;

private:
    friend class Engine;
    explicit Session(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> mImpl;
};

// ---- inline parts: no TensorRT or CUDA needed --------------------------------------------------------------------

inline std::string shapeString(std::vector<int64_t> const& shape)
{
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        s += (i != 0 ? ", " : "") + std::to_string(shape[i]);
    }
    return s + (shape.size() == 1 ? ",)" : ")");
}

inline void TensorInfo::checkShape(std::vector<int64_t> const& candidate) const
{
    if (candidate.size() != shape.size())
    {
        throw std::invalid_argument("input '" + name + "' has rank " + std::to_string(shape.size()) + ", got shape "
            + shapeString(candidate));
    }
    for (size_t d = 0; d < shape.size(); ++d)
    {
        if (shape[d] >= 0 && candidate[d] != shape[d])
        {
            throw std::invalid_argument("input '" + name + "' dimension " + std::to_string(d)
                + " is fixed at " + std::to_string(shape[d]) + ", got shape " + shapeString(candidate));
        }
        bool const bounded = minShape.size() == shape.size() && maxShape.size() == shape.size();
        if (candidate[d] < 0 || (bounded && (candidate[d] < minShape[d] || candidate[d] > maxShape[d])))
        {
            throw std::invalid_argument("input '" + name + "' shape " + shapeString(candidate)
                + " is outside the plan's optimization profile " + shapeString(minShape) + " .. "
                + shapeString(maxShape));
        }
    }
}

} // namespace runtime
} // namespace debx
