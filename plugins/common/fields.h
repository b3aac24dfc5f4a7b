/*
 * debx plugins: reading attribute values out of a PluginFieldCollection.
 *
 * TensorRT's ONNX parser turns an ONNX INT attribute into a kINT32 field and a FLOAT attribute into kFLOAT32; a
 * Python or C++ caller may pass other widths. The helpers accept any integer / floating width of length 1 and
 * reject everything else with a message naming the field.
 */
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "checks.h"

namespace debx
{
namespace plugin
{

inline float halfBitsToFloat(uint16_t h)
{
    uint32_t const sign = (h >> 15) & 1U;
    int32_t const exponent = (h >> 10) & 0x1F;
    uint32_t const mantissa = h & 0x3FFU;
    float value;
    if (exponent == 0)
    {
        value = std::ldexp(static_cast<float>(mantissa), -24);
    }
    else if (exponent == 31)
    {
        value = mantissa == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
    }
    else
    {
        value = std::ldexp(static_cast<float>(mantissa | 0x400U), exponent - 25);
    }
    return sign ? -value : value;
}

//! Integer value of a length-1 integer field.
inline int64_t fieldToInt(nvinfer1::PluginField const& f)
{
    DEBX_VALIDATE(f.data != nullptr && f.length == 1, "attribute '" << f.name << "' must hold exactly one value");
    switch (f.type)
    {
    case nvinfer1::PluginFieldType::kINT8: return *static_cast<int8_t const*>(f.data);
    case nvinfer1::PluginFieldType::kINT16: return *static_cast<int16_t const*>(f.data);
    case nvinfer1::PluginFieldType::kINT32: return *static_cast<int32_t const*>(f.data);
    case nvinfer1::PluginFieldType::kINT64: return *static_cast<int64_t const*>(f.data);
    default: break;
    }
    throw PluginError(std::string("attribute '") + f.name + "' must be an integer");
}

//! int32 value of an integer field, range-checked.
inline int32_t fieldToInt32(nvinfer1::PluginField const& f)
{
    int64_t const v = fieldToInt(f);
    DEBX_VALIDATE(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
        "attribute '" << f.name << "' = " << v << " does not fit in int32");
    return static_cast<int32_t>(v);
}

//! float value of a length-1 floating-point field.
inline float fieldToFloat(nvinfer1::PluginField const& f)
{
    DEBX_VALIDATE(f.data != nullptr && f.length == 1, "attribute '" << f.name << "' must hold exactly one value");
    switch (f.type)
    {
    case nvinfer1::PluginFieldType::kFLOAT32: return *static_cast<float const*>(f.data);
    case nvinfer1::PluginFieldType::kFLOAT64: return static_cast<float>(*static_cast<double const*>(f.data));
    case nvinfer1::PluginFieldType::kFLOAT16:
    {
        uint16_t bits;
        std::memcpy(&bits, f.data, sizeof(bits));
        return halfBitsToFloat(bits);
    }
    default: break;
    }
    throw PluginError(std::string("attribute '") + f.name + "' must be a floating-point number");
}

} // namespace plugin
} // namespace debx
