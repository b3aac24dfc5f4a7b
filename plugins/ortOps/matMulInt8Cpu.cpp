/*
 * debx: INT8 matrix product, the ISA-independent part (see matMulInt8Cpu.h): weight packing, activation padding,
 * the task split and the choice of kernel family by CPUID. Baseline x86-64; the kernels live in matMulInt8Amx.cpp,
 * matMulInt8Vnni.cpp, matMulInt8AvxVnni.cpp and matMulInt8Avx2.cpp, each compiled for its own instructions.
 */
#include "matMulInt8Cpu.h"

#include <algorithm>
#include <cstring>

#include "isaTwins.h"
#include "matMulInt8Kernels.h"

namespace debx
{
namespace int8
{
namespace
{
constexpr int64_t kTileBytes = 1024;           // 16 rows x 64 bytes
constexpr int64_t kPanelStep = 2 * kTileBytes; // one K step of a 32-column panel
constexpr int64_t kGroupBytes = 1 << 20;       // rows of A a task walks: about 1 MB, so they stay in L2

int64_t roundUp(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}
} // namespace

char const* familyName(Family family)
{
    switch (family)
    {
    case Family::kAmx: return "amx";
    case Family::kAvx512Vnni: return "avx512-vnni";
    case Family::kAvx2: return "avx2";
    case Family::kAvxVnni: return "avx-vnni";
    case Family::kNone: break;
    }
    return "ort";
}

char const* familyNeeds(Family family)
{
    switch (family)
    {
    case Family::kAmx: return "AMX-INT8 tiles";
    case Family::kAvx512Vnni: return "AVX-512 F/BW/VL/DQ + AVX512_VNNI";
    case Family::kAvx2: return "AVX2 + FMA";
    case Family::kAvxVnni: return "AVX2 + FMA + AVX_VNNI";
    case Family::kNone: break;
    }
    return "nothing";
}

bool familyByName(char const* name, Family* out)
{
    for (Family f : {Family::kNone, Family::kAvx512Vnni, Family::kAmx, Family::kAvx2, Family::kAvxVnni})
    {
        if (std::strcmp(name, familyName(f)) == 0)
        {
            *out = f;
            return true;
        }
    }
    return false;
}

bool amxAvailable()
{
    static bool const available = amxDetect();
    return available;
}

bool avx512VnniAvailable()
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    // __builtin_cpu_supports also checks that the OS saves the ZMM state (XGETBV)
    static bool const available = vnniCompiled() && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    return available;
#else
    return false;
#endif
}

bool avx2Available()
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    // __builtin_cpu_supports also checks that the OS saves the YMM state (XGETBV)
    static bool const available = avx2Compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return available;
#else
    return false;
#endif
}

bool avxVnniAvailable()
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static bool const available = avxVnniCompiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("avxvnni");
    return available;
#else
    return false;
#endif
}

bool familyAvailable(Family family)
{
    if (family != Family::kNone && isa::baselineOnly())
    {
        return false;
    }
    switch (family)
    {
    case Family::kAmx: return amxAvailable();
    case Family::kAvx512Vnni: return avx512VnniAvailable();
    case Family::kAvx2: return avx2Available();
    case Family::kAvxVnni: return avxVnniAvailable();
    case Family::kNone: break;
    }
    return true;
}

Family bestFamily()
{
    if (isa::baselineOnly())
    {
        return Family::kNone;
    }
    for (Family f : {Family::kAmx, Family::kAvx512Vnni, Family::kAvxVnni, Family::kAvx2})
    {
        if (familyAvailable(f))
        {
            return f;
        }
    }
    return Family::kNone;
}

void packWeights(int8_t const* B, int64_t K, int64_t N, PackedWeights* out)
{
    out->K = K;
    out->N = N;
    out->kBlocks = (K + 63) / 64;
    out->panels = (N + 31) / 32;
    size_t const bytes = static_cast<size_t>(out->panels * out->kBlocks * kPanelStep);
    out->storage.assign(bytes + 64, 0);
    auto const base = reinterpret_cast<uintptr_t>(out->storage.data());
    out->tiles = out->storage.data() + ((64 - base % 64) % 64);
    out->colSum.assign(static_cast<size_t>(N), 0);
    for (int64_t k = 0; k < K; ++k)
    {
        int64_t const kb = k / 64;
        int64_t const row = (k % 64) / 4;
        int64_t const lane = k % 4;
        for (int64_t n = 0; n < N; ++n)
        {
            int8_t const w = B[k * N + n];
            int64_t const tile = (n / 32) * out->kBlocks * 2 + kb * 2 + (n % 32) / 16;
            out->tiles[tile * kTileBytes + row * 64 + (n % 16) * 4 + lane] = w;
            out->colSum[static_cast<size_t>(n)] += w;
        }
    }
}

bool needsPadding(int64_t M, PackedWeights const& W, Family family)
{
    return family == Family::kAmx ? (M % 32 != 0 || W.K % 64 != 0) : W.K % 4 != 0;
}

size_t paddedSize(int64_t M, PackedWeights const& W)
{
    return static_cast<size_t>(roundUp(M, 32) * W.kBlocks * 64);
}

void padActivations(uint8_t const* A, int64_t M, PackedWeights const& W, uint8_t* out)
{
    int64_t const stride = W.kBlocks * 64;
    std::memset(out, 0, paddedSize(M, W));
    for (int64_t m = 0; m < M; ++m)
    {
        std::memcpy(out + m * stride, A + m * W.K, static_cast<size_t>(W.K));
    }
}

int64_t groupBlocks(MatMulArgs const& args)
{
    int64_t const mBlocks = (args.M + 31) / 32;
    return std::max<int64_t>(1, std::min<int64_t>(mBlocks, kGroupBytes / (32 * args.lda)));
}

int64_t taskCount(MatMulArgs const& args)
{
    int64_t const mBlocks = (args.M + 31) / 32;
    int64_t const per = groupBlocks(args);
    return (mBlocks + per - 1) / per * args.B->panels;
}

void runTask(MatMulArgs const& args, int64_t task)
{
    if (args.family == Family::kAmx)
    {
        runTaskAmx(args, task);
    }
    else if (args.family == Family::kAvx512Vnni)
    {
        runTaskVnni(args, task);
    }
    else if (args.family == Family::kAvxVnni)
    {
        runTaskAvxVnni(args, task);
    }
    else if (args.family == Family::kAvx2)
    {
        runTaskAvx2(args, task);
    }
}

} // namespace int8
} // namespace debx
