/*
 * debx plugins: library entry points (see registry.h).
 */
#include "registry.h"

#include "checks.h"

namespace debx
{
namespace plugin
{

std::vector<nvinfer1::IPluginCreatorInterface*>& creatorList()
{
    static std::vector<nvinfer1::IPluginCreatorInterface*> creators;
    return creators;
}

} // namespace plugin
} // namespace debx

extern "C" DEBX_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    debx::plugin::setLoggerFinder(finder);
}

extern "C" DEBX_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    auto& creators = debx::plugin::creatorList();
    nbCreators = static_cast<int32_t>(creators.size());
    return creators.data();
}

extern "C" DEBX_PLUGIN_API bool initDebxPlugins(void* registry)
{
    if (registry == nullptr)
    {
        return false;
    }
    auto* reg = static_cast<nvinfer1::IPluginRegistry*>(registry);
    bool ok = true;
    for (nvinfer1::IPluginCreatorInterface* creator : debx::plugin::creatorList())
    {
        auto* v3 = static_cast<nvinfer1::IPluginCreatorV3One*>(creator);
        ok = reg->registerCreator(*creator, v3->getPluginNamespace()) && ok;
    }
    return ok;
}
