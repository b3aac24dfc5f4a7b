/*
 * debx engine library: the parts of engine.h that need neither TensorRT nor CUDA (element types, host tensors), so
 * they are unit-tested on machines without either (tests/plugins/test_runtime_engine.py).
 */
#include "engine.h"

#include <cstring>

namespace debx
{
namespace runtime
{
namespace
{

float halfToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000U) << 16;
    uint32_t exponent = (h >> 10) & 0x1FU;
    uint32_t mantissa = h & 0x3FFU;
    uint32_t bits = 0;
    if (exponent == 0x1FU) // inf / nan
    {
        bits = sign | 0x7F800000U | (mantissa << 13);
    }
    else if (exponent != 0) // normal
    {
        bits = sign | ((exponent + 112U) << 23) | (mantissa << 13);
    }
    else if (mantissa != 0) // subnormal: normalize
    {
        exponent = 113U;
        while ((mantissa & 0x400U) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
    }
    else
    {
        bits = sign;
    }
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

float bf16ToFloat(uint16_t b)
{
    uint32_t const bits = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

} // namespace

char const* dataTypeName(DataType type)
{
    switch (type)
    {
    case DataType::kFloat: return "float32";
    case DataType::kHalf: return "float16";
    case DataType::kBF16: return "bfloat16";
    case DataType::kInt8: return "int8";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kBool: return "bool";
    case DataType::kUInt8: return "uint8";
    case DataType::kOther: break;
    }
    return "unsupported";
}

size_t dataTypeSize(DataType type)
{
    switch (type)
    {
    case DataType::kFloat:
    case DataType::kInt32: return 4;
    case DataType::kHalf:
    case DataType::kBF16: return 2;
    case DataType::kInt64: return 8;
    case DataType::kInt8:
    case DataType::kBool:
    case DataType::kUInt8: return 1;
    case DataType::kOther: break;
    }
    throw std::invalid_argument("tensor type not handled by the debx runtime (FP8, INT4, ...)");
}

int64_t HostTensor::elementCount() const
{
    int64_t n = 1;
    for (int64_t d : shape)
    {
        n *= d;
    }
    return n;
}

std::vector<float> HostTensor::toFloat() const
{
    size_t const count = static_cast<size_t>(elementCount());
    if (type != DataType::kFloat && type != DataType::kHalf && type != DataType::kBF16)
    {
        throw std::invalid_argument("output '" + name + "' is " + dataTypeName(type) + ", not a floating-point tensor");
    }
    if (bytes < count * dataTypeSize(type) || (count != 0 && data == nullptr))
    {
        throw std::invalid_argument("output '" + name + "' holds fewer bytes than its shape " + shapeString(shape));
    }
    std::vector<float> out(count);
    auto const* raw = static_cast<unsigned char const*>(data);
    for (size_t k = 0; k < count; ++k)
    {
        if (type == DataType::kFloat)
        {
            std::memcpy(&out[k], raw + 4 * k, 4);
            continue;
        }
        uint16_t bits;
        std::memcpy(&bits, raw + 2 * k, 2);
        out[k] = type == DataType::kHalf ? halfToFloat(bits) : bf16ToFloat(bits);
    }
    return out;
}

} // namespace runtime
} // namespace debx
