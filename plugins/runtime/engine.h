/*
 * debx runtime: run a TensorRT plan (built by `debx build`) on tokenized batches.
 *
 * The engine's inputs are the standard debx feeds: input_ids, attention_mask and, for models with token types,
 * token_type_ids, each (B, N) int32 or int64 as the plan declares. Plugin libraries (libdebx_plugins.so) are loaded
 * into the runtime's plugin registry before the plan is deserialized.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace debx
{
namespace runtime
{

//! One float32 output of the engine for the whole batch.
struct Output
{
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values; // row-major
};

class TensorRTEngine
{
public:
    //! Throws std::runtime_error with a one-line reason (missing file, plugin library that does not load, plan
    //! built for another TensorRT version or GPU).
    TensorRTEngine(std::string const& planPath, std::vector<std::string> const& pluginLibraries);
    ~TensorRTEngine();
    TensorRTEngine(TensorRTEngine const&) = delete;
    TensorRTEngine& operator=(TensorRTEngine const&) = delete;

    //! Run a padded batch (every row the same length); returns every output of the engine, CUDA-synchronized.
    std::vector<Output> run(std::vector<Encoding> const& batch);

    std::vector<std::string> const& inputNames() const
    {
        return mInputs;
    }

private:
    struct Impl;
    std::unique_ptr<Impl> mImpl;
    std::vector<std::string> mInputs;
};

} // namespace runtime
} // namespace debx
