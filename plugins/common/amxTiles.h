/*
 * debx: what every AMX kernel of the CPU ops needs: CPUID checks, the Linux permission for the tile data state, and
 * the one tile configuration they all use (8 tiles of 16 rows x 64 bytes). Header only; compiled only where the
 * compiler targets AMX (the callers guard with __AMX_TILE__). No ONNX Runtime or TensorRT types.
 */
#pragma once

#if defined(__AMX_TILE__) && defined(__linux__)
#include <cpuid.h>
#include <cstdint>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace debx
{
namespace amx
{

enum class Feature
{
    kInt8,
    kBf16,
};

//! True when CPUID reports AMX tiles with `feature` and Linux grants this process the tile data state (the
//! permission is per process; asking twice is harmless).
inline bool detect(Feature feature)
{
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
    {
        return false;
    }
    bool const tile = (d >> 24) & 1U;
    bool const unit = feature == Feature::kInt8 ? ((d >> 25) & 1U) : ((d >> 22) & 1U);
    if (!tile || !unit)
    {
        return false;
    }
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

//! Palette 1, tiles 0-7 all 16 rows x 64 bytes. Per thread, before the first tile instruction of a task.
inline void loadTileConfig()
{
    struct alignas(64) Config
    {
        uint8_t paletteId;
        uint8_t startRow;
        uint8_t reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg{};
    cfg.paletteId = 1;
    for (int t = 0; t < 8; ++t)
    {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}

} // namespace amx
} // namespace debx
#endif
