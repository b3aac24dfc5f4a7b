/*
 * debx plugins: the list of plugin creators this library exports.
 *
 * Each plugin's .cpp adds its creator with DEBX_REGISTER_PLUGIN_CREATOR(Creator). The library then exposes them
 * through the entry points TensorRT's IPluginRegistry::loadLibrary looks for (getCreators, setLoggerFinder), so the
 * library needs no link to libnvinfer: TensorRT, trtexec --dynamicPlugins, Polygraphy or the debx C++ runtime load
 * it and register the creators themselves.
 */
#pragma once

#include <cstdint>
#include <vector>

#include <NvInferRuntime.h>

#if defined(_WIN32)
#define DEBX_PLUGIN_API __declspec(dllexport)
#else
#define DEBX_PLUGIN_API __attribute__((visibility("default")))
#endif

namespace debx
{
namespace plugin
{

//! All creators of the library, in registration order.
std::vector<nvinfer1::IPluginCreatorInterface*>& creatorList();

template <typename Creator>
struct CreatorRegistrar
{
    CreatorRegistrar()
    {
        static Creator instance;
        creatorList().push_back(&instance);
    }
};

} // namespace plugin
} // namespace debx

#define DEBX_REGISTER_PLUGIN_CREATOR(Creator)                                                                          \
    static ::debx::plugin::CreatorRegistrar<Creator> debxCreatorRegistrar##Creator {}

extern "C"
{
    //! TensorRT hands over a way to reach its logger when it loads the library.
    DEBX_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

    //! The creators (IPluginCreatorV3One) of every plugin in the library.
    DEBX_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

    //! Register every creator into `registry` (an nvinfer1::IPluginRegistry*) under the creators' own namespace.
    //! For programs that link the library instead of calling IPluginRegistry::loadLibrary. Returns false if a
    //! creator could not be registered (for example because it already is).
    DEBX_PLUGIN_API bool initDebxPlugins(void* registry);
}
