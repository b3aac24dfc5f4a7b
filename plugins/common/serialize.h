/*
 * debx plugins: serialization of a small plain-old-data parameter struct.
 *
 * A plugin stores its attributes as one PluginField of type kUNKNOWN holding a versioned blob:
 *   [magic u32][format version u32][payload size u32][payload bytes]
 * so a plan written by another build is rejected with a clear message instead of being misread.
 */
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "checks.h"

namespace debx
{
namespace plugin
{

struct BlobHeader
{
    uint32_t magic;
    uint32_t version;
    uint32_t payloadSize;
};

//! Serialize a trivially copyable struct with a header.
template <typename T>
std::vector<uint8_t> serializePod(T const& value, uint32_t magic, uint32_t version)
{
    static_assert(std::is_trivially_copyable<T>::value, "only plain old data can be serialized this way");
    BlobHeader const header{magic, version, static_cast<uint32_t>(sizeof(T))};
    std::vector<uint8_t> blob(sizeof(BlobHeader) + sizeof(T));
    std::memcpy(blob.data(), &header, sizeof(BlobHeader));
    std::memcpy(blob.data() + sizeof(BlobHeader), &value, sizeof(T));
    return blob;
}

//! Read back what serializePod wrote; throws PluginError on a wrong size, magic or version.
template <typename T>
T deserializePod(void const* data, size_t size, uint32_t magic, uint32_t version)
{
    static_assert(std::is_trivially_copyable<T>::value, "only plain old data can be serialized this way");
    DEBX_VALIDATE(data != nullptr, "serialized parameters are missing");
    DEBX_VALIDATE(size == sizeof(BlobHeader) + sizeof(T),
        "serialized parameters have " << size << " bytes, expected " << sizeof(BlobHeader) + sizeof(T));
    BlobHeader header{};
    std::memcpy(&header, data, sizeof(BlobHeader));
    DEBX_VALIDATE(header.magic == magic, "serialized parameters belong to another plugin (bad magic)");
    DEBX_VALIDATE(header.version == version,
        "serialized parameters have format version " << header.version << ", this library reads " << version
                                                      << ": rebuild the engine with this plugin library");
    DEBX_VALIDATE(header.payloadSize == sizeof(T), "serialized parameter payload has the wrong size");
    T value{};
    std::memcpy(&value, static_cast<uint8_t const*>(data) + sizeof(BlobHeader), sizeof(T));
    return value;
}

} // namespace plugin
} // namespace debx
