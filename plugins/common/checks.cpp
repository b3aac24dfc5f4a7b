/*
 * debx plugins: logging through the logger TensorRT hands to the plugin library.
 */
#include "checks.h"

#include <atomic>
#include <cstdio>

namespace debx
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

char const* severityName(nvinfer1::ILogger::Severity severity)
{
    switch (severity)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "internal error";
    case nvinfer1::ILogger::Severity::kERROR: return "error";
    case nvinfer1::ILogger::Severity::kWARNING: return "warning";
    case nvinfer1::ILogger::Severity::kINFO: return "info";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "verbose";
    }
    return "log";
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void log(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    std::string const text = "[debx plugins] " + message;
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    nvinfer1::ILogger* logger = nullptr;
    if (finder != nullptr)
    {
        try
        {
            logger = finder->findLogger();
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger != nullptr)
    {
        logger->log(severity, text.c_str());
    }
    else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "%s: %s\n", severityName(severity), text.c_str());
    }
}

int32_t reportError(char const* where, std::exception const& e) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, std::string(where) + ": " + e.what());
    auto const* pe = dynamic_cast<PluginError const*>(&e);
    return pe != nullptr ? pe->status() : kSTATUS_FAILURE;
}

} // namespace plugin
} // namespace debx
