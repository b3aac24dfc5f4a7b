// The avx-vnni INT8 matmul family on a CPU without AVX-VNNI (tests/runtimes/test_int8_cpu.py builds and runs this):
// plugins/ortOps/matMulInt8AvxVnni.cpp compiled for AVX2 + FMA with VPDPBUSD (_mm256_dpbusd_avx_epi32) replaced by a
// scalar emulation of its definition, so everything of the family but the one instruction (its panel walk, B vector
// offsets, register blocks, row tails, epilogues) runs here and is checked: its float and residual outputs against
// exact integer sums, and all three epilogues bit for bit against the avx2 family (the same epilogue code).
// The instruction itself: tests/runtimes/test_portable_build.py checks the library holds the VEX VPDPBUSD.
// Build: g++ -std=c++17 -mavx2 -mfma -Iplugins/ortOps THIS plugins/ortOps/matMulInt8Cpu.cpp.
// Prints "ok" and exits 0, or prints the first mismatch and exits 1.
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace
{
//! VPDPBUSD as the SDM defines it: per int32 lane, acc + sum of 4 products uint8(a) x int8(b), wrapping.
inline __m256i emulatedDpbusd(__m256i acc, __m256i a, __m256i b)
{
    alignas(32) uint8_t ua[32];
    alignas(32) int8_t sb[32];
    alignas(32) int32_t c[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(ua), a);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sb), b);
    _mm256_store_si256(reinterpret_cast<__m256i*>(c), acc);
    for (int i = 0; i < 8; ++i)
    {
        int64_t s = c[i];
        for (int j = 0; j < 4; ++j)
        {
            s += int32_t(ua[4 * i + j]) * int32_t(sb[4 * i + j]);
        }
        c[i] = static_cast<int32_t>(static_cast<uint32_t>(s));
    }
    return _mm256_load_si256(reinterpret_cast<__m256i const*>(c));
}
} // namespace

#define __AVXVNNI__ 1
#define _mm256_dpbusd_avx_epi32 emulatedDpbusd
#include "matMulInt8Avx2.cpp"
#include "matMulInt8AvxVnni.cpp"

// the other families and the AVX-512 twins are not part of this program
namespace debx
{
namespace int8
{
bool amxDetect() { return false; }
void runTaskAmx(MatMulArgs const&, int64_t) {}
bool vnniCompiled() { return false; }
void runTaskVnni(MatMulArgs const&, int64_t) {}
} // namespace int8
namespace isa
{
bool baselineOnly() { return false; }
} // namespace isa
} // namespace debx

using namespace debx::int8;

namespace
{
//! Run every task of one family (called directly: the CPU need not have AVX-VNNI) into y.
void run(MatMulArgs args, void (*task)(MatMulArgs const&, int64_t), void* y)
{
    args.Y = y;
    for (int64_t t = 0, n = taskCount(args); t < n; ++t)
    {
        task(args, t);
    }
}

bool check(int64_t M, int64_t K, int64_t N, std::mt19937& rng)
{
    std::vector<int8_t> B(static_cast<size_t>(K * N));
    std::vector<uint8_t> A(static_cast<size_t>(M * K));
    for (auto& b : B)
    {
        b = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
    }
    for (auto& a : A)
    {
        a = static_cast<uint8_t>(rng() % 256);
    }
    PackedWeights W;
    packWeights(B.data(), K, N, &W);
    std::vector<float> scale(static_cast<size_t>(N)), bias(static_cast<size_t>(N));
    std::vector<float> residual(static_cast<size_t>(M * N));
    for (int64_t n = 0; n < N; ++n)
    {
        scale[n] = 1.0F / static_cast<float>(1 << (6 + rng() % 4)); // powers of two: exact floats below
        bias[n] = static_cast<float>(static_cast<int>(rng() % 512) - 256) / 64.0F;
    }
    for (auto& r : residual)
    {
        r = static_cast<float>(static_cast<int>(rng() % 4096) - 2048) / 64.0F;
    }
    int32_t const zp = 131;
    uint8_t const* a = A.data();
    int64_t lda = K;
    std::vector<uint8_t> padded;
    if (needsPadding(M, W, Family::kAvxVnni))
    {
        padded.resize(paddedSize(M, W));
        padActivations(A.data(), M, W, padded.data());
        a = padded.data();
        lda = W.kBlocks * 64;
    }
    MatMulArgs args{Family::kAvxVnni, a, lda, M, &W, scale.data(), zp, bias.data(), Epilogue::kFloat, residual.data(),
        0.013F, 9, nullptr};
    for (Epilogue e : {Epilogue::kFloat, Epilogue::kResidual, Epilogue::kGeluQuantize})
    {
        args.epilogue = e;
        std::vector<float> vnni(static_cast<size_t>(M * N), -1.0F), avx2(static_cast<size_t>(M * N), -2.0F);
        run(args, runTaskAvxVnni, vnni.data());
        run(args, runTaskAvx2, avx2.data());
        size_t const bytes = static_cast<size_t>(M * N) * (e == Epilogue::kGeluQuantize ? 1 : 4);
        if (std::memcmp(vnni.data(), avx2.data(), bytes) != 0)
        {
            std::printf("M=%ld K=%ld N=%ld epilogue %d: avx-vnni and avx2 differ\n", long(M), long(K), long(N), int(e));
            return false;
        }
        if (e == Epilogue::kGeluQuantize)
        {
            continue;
        }
        for (int64_t m = 0; m < M; ++m)
        {
            for (int64_t n = 0; n < N; ++n)
            {
                int64_t s = 0;
                for (int64_t k = 0; k < K; ++k)
                {
                    s += (int64_t(A[m * K + k]) - zp) * B[k * N + n];
                }
                double want = double(s) * scale[n] + bias[n];
                if (e == Epilogue::kResidual)
                {
                    want += residual[m * N + n];
                }
                if (vnni[m * N + n] != static_cast<float>(want))
                {
                    std::printf("M=%ld K=%ld N=%ld epilogue %d at (%ld, %ld): %.9g, want %.9g\n", long(M), long(K),
                        long(N), int(e), long(m), long(n), double(vnni[m * N + n]), want);
                    return false;
                }
            }
        }
    }
    return true;
}
} // namespace

int main()
{
    if (!avx2Available())
    {
        std::printf("skip: this CPU lacks AVX2 + FMA\n");
        return 2;
    }
    std::mt19937 rng(7);
    int64_t const shapes[][3] = {{1, 5, 1}, {1, 3, 17}, {1, 768, 96}, {3, 30, 33}, {7, 66, 40}, {2, 100, 50},
        {13, 192, 96}, {33, 130, 65}, {37, 64, 8}, {64, 768, 48}, {700, 3072, 24}};
    for (auto const& s : shapes)
    {
        if (!check(s[0], s[1], s[2], rng))
        {
            return 1;
        }
    }
    std::printf("ok\n");
    return 0;
}
