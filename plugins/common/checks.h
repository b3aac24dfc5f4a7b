/*
 * debx plugins: status codes, validation macros and logging shared by every plugin.
 *
 * Inside a plugin, validation throws PluginError (DEBX_VALIDATE). Every TensorRT entry point is noexcept, so each one
 * wraps its body in try/catch, logs the message through the logger TensorRT handed over (setLoggerFinder) and
 * returns a failure status or nullptr.
 */
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include <NvInferRuntime.h>

namespace debx
{
namespace plugin
{

//! Return values of the int32_t plugin methods: 0 = success, anything else stops TensorRT.
enum Status : int32_t
{
    kSTATUS_SUCCESS = 0,
    kSTATUS_FAILURE = 1,
    kSTATUS_BAD_PARAM = 2,
    kSTATUS_NOT_SUPPORTED = 3,
    kSTATUS_CUDA_ERROR = 4,
};

//! Raised by validation inside the plugins; caught at the TensorRT boundary.
class PluginError : public std::runtime_error
{
public:
    PluginError(std::string const& message, Status status = kSTATUS_BAD_PARAM)
        : std::runtime_error(message)
        , mStatus(status)
    {
    }
    Status status() const noexcept
    {
        return mStatus;
    }

private:
    Status mStatus;
};

//! Log through the TensorRT logger when one was handed over, else to stderr (errors and warnings only).
void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

//! Remember the logger finder TensorRT passes to the library's setLoggerFinder entry point.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Log an exception caught at a TensorRT entry point and return its status.
int32_t reportError(char const* where, std::exception const& e) noexcept;

} // namespace plugin
} // namespace debx

//! Validate a condition; on failure throw PluginError whose message is the streamed arguments.
#define DEBX_VALIDATE(condition, message)                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            std::ostringstream debxValidateStream_;                                                                    \
            debxValidateStream_ << message;                                                                            \
            throw ::debx::plugin::PluginError(debxValidateStream_.str());                                              \
        }                                                                                                              \
    } while (false)

//! Turn a CUDA error into a PluginError naming the call.
#define DEBX_CHECK_CUDA(call)                                                                                          \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const debxCudaStatus_ = (call);                                                                    \
        if (debxCudaStatus_ != cudaSuccess)                                                                            \
        {                                                                                                              \
            throw ::debx::plugin::PluginError(std::string(#call " failed: ") + cudaGetErrorString(debxCudaStatus_),   \
                ::debx::plugin::kSTATUS_CUDA_ERROR);                                                                   \
        }                                                                                                              \
    } while (false)
