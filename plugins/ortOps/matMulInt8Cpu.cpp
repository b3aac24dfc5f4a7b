/*
 * debx: INT8 matrix product on Intel AMX tiles (see matMulInt8Cpu.h for the math, layout and schedule).
 */
#include "matMulInt8Cpu.h"

#include <algorithm>
#include <cstring>

#if defined(__AMX_INT8__) && defined(__AMX_TILE__) && defined(__AVX512F__) && defined(__linux__)
#define DEBX_HAVE_AMX 1
#include "../common/amxTiles.h"
#include "../common/cpuVecMath.h"
#include <immintrin.h>
#else
#define DEBX_HAVE_AMX 0
#endif

namespace debx
{
namespace int8
{
namespace
{
constexpr int64_t kTileBytes = 1024;        // 16 rows x 64 bytes
constexpr int64_t kPanelStep = 2 * kTileBytes; // one K step of a 32-column panel
constexpr int64_t kGroupBytes = 1 << 20;     // rows of A a task walks: about 1 MB, so they stay in L2

int64_t roundUp(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}

#if DEBX_HAVE_AMX
using amx::loadTileConfig;

//! The epilogue of one finished 32 x 32 block, done in slices of its 64 row-halves (16 columns each).
struct PendingBlock
{
    alignas(64) int32_t acc[32 * 32];
    int64_t m0 = 0;
    int next = 64; // next row-half to write; 64 = nothing pending
};

//! What the epilogue needs per column of a panel, loaded once per task instead of once per row.
struct PanelConstants
{
    __m512i offset[2]; // a_zp * colSum
    __m512 scale[2];
    __m512 bias[2];
    __mmask16 mask[2]; // columns inside N
    int64_t n0;        // first column of the panel
    __m512 invYScale;  // kGeluQuantize
    __m512 yZeroPoint;
};

PanelConstants panelConstants(MatMulArgs const& args, int64_t panel)
{
    PackedWeights const& W = *args.B;
    PanelConstants c{};
    c.n0 = panel * 32;
    for (int half = 0; half < 2; ++half)
    {
        int64_t const n0 = c.n0 + half * 16;
        int64_t const cols = std::max<int64_t>(0, std::min<int64_t>(16, W.N - n0));
        __mmask16 const k = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1U << cols) - 1U);
        c.mask[half] = k;
        c.offset[half] = _mm512_mullo_epi32(
            _mm512_set1_epi32(args.aZeroPoint), _mm512_maskz_loadu_epi32(k, W.colSum.data() + n0));
        c.scale[half] = _mm512_maskz_loadu_ps(k, args.scale + n0);
        c.bias[half] = args.bias != nullptr ? _mm512_maskz_loadu_ps(k, args.bias + n0) : _mm512_setzero_ps();
    }
    c.invYScale = _mm512_set1_ps(args.epilogue == Epilogue::kGeluQuantize ? 1.0F / args.yScale : 0.0F);
    c.yZeroPoint = _mm512_set1_ps(static_cast<float>(args.yZeroPoint));
    return c;
}

template <Epilogue E>
void epilogueSlice(MatMulArgs const& args, PanelConstants const& c, PendingBlock& p, int count)
{
    int64_t const N = args.B->N;
    int const end = std::min(64, p.next + count);
    for (; p.next < end; ++p.next)
    {
        int const r = p.next >> 1;
        int const half = p.next & 1;
        int64_t const m = p.m0 + r;
        __mmask16 const k = c.mask[half];
        if (m >= args.M || k == 0)
        {
            continue;
        }
        __m512i const v = _mm512_sub_epi32(_mm512_load_si512(p.acc + r * 32 + half * 16), c.offset[half]);
        __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), c.scale[half], c.bias[half]);
        int64_t const at = m * N + c.n0 + half * 16;
        if constexpr (E == Epilogue::kFloat)
        {
            _mm512_mask_storeu_ps(static_cast<float*>(args.Y) + at, k, y);
        }
        else if constexpr (E == Epilogue::kResidual)
        {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, args.residual + at));
            _mm512_mask_storeu_ps(static_cast<float*>(args.Y) + at, k, y);
        }
        else
        {
            // QuantizeLinear: x / scale (as x * (1 / scale)), round half to even, + zero point, saturate to [0, 255]
            __m512 q = _mm512_mul_ps(vec::gelu(y), c.invYScale);
            q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_max_ps(_mm512_add_ps(q, c.yZeroPoint), _mm512_setzero_ps());
            q = _mm512_min_ps(q, _mm512_set1_ps(255.0F));
            _mm_mask_storeu_epi8(static_cast<uint8_t*>(args.Y) + at, k, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
        }
    }
}

//! Ask for the output lines (and residual lines) of block rows [m0, m0 + 32) of this panel, one row per call, so the
//! epilogue's stores and loads find them in L1 a block later.
template <Epilogue E>
void prefetchOutputRow(MatMulArgs const& args, PanelConstants const& c, int64_t m)
{
    if (m >= args.M)
    {
        return;
    }
    int64_t const at = m * args.B->N + c.n0;
    if constexpr (E == Epilogue::kGeluQuantize)
    {
        _m_prefetchw(static_cast<uint8_t*>(args.Y) + at);
    }
    else
    {
        _m_prefetchw(static_cast<float*>(args.Y) + at);
        _m_prefetchw(static_cast<float*>(args.Y) + at + 16);
        if constexpr (E == Epilogue::kResidual)
        {
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<char const*>(args.residual + at + 16), _MM_HINT_T0);
        }
    }
}
#endif
} // namespace

bool amxAvailable()
{
#if DEBX_HAVE_AMX
    static bool const available = amx::detect(amx::Feature::kInt8);
    return available;
#else
    return false;
#endif
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

bool needsPadding(int64_t M, PackedWeights const& W)
{
    return M % 32 != 0 || W.K % 64 != 0;
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

namespace
{
int64_t groupBlocks(MatMulArgs const& args)
{
    int64_t const mBlocks = (args.M + 31) / 32;
    return std::max<int64_t>(1, std::min<int64_t>(mBlocks, kGroupBytes / (32 * args.lda)));
}
} // namespace

int64_t taskCount(MatMulArgs const& args)
{
    int64_t const mBlocks = (args.M + 31) / 32;
    int64_t const per = groupBlocks(args);
    return (mBlocks + per - 1) / per * args.B->panels;
}

#if DEBX_HAVE_AMX
namespace
{
template <Epilogue E>
void runTaskAs(MatMulArgs const& args, int64_t task)
{
    PackedWeights const& W = *args.B;
    int64_t const kBlocks = W.kBlocks;
    int64_t const panel = task % W.panels;
    int64_t const group = task / W.panels;
    int64_t const per = groupBlocks(args);
    int64_t const mBlocks = (args.M + 31) / 32;
    int64_t const first = group * per;
    int64_t const last = std::min(mBlocks, first + per);
    int8_t const* const b = W.tiles + panel * kBlocks * kPanelStep;
    // the next panel (the one this thread most likely runs next) into L2, spread over this task's K steps
    int64_t const panelLines = kBlocks * kPanelStep / 64;
    int8_t const* prefetch = W.tiles + ((panel + 1) % W.panels) * kBlocks * kPanelStep;
    int8_t const* const prefetchEnd = W.panels > 1 ? prefetch + panelLines * 64 : prefetch;
    int const linesPerStep = static_cast<int>((panelLines + (last - first) * kBlocks - 1) / ((last - first) * kBlocks));
    int const slice = static_cast<int>((64 + kBlocks - 1) / kBlocks); // epilogue row-halves per K step

    PanelConstants const constants = panelConstants(args, panel);
    int const rowsPerStep = static_cast<int>((32 + kBlocks - 1) / kBlocks); // output rows to prefetch per K step
    PendingBlock pending[2];
    int current = 0;
    loadTileConfig();
    for (int64_t mb = first; mb < last; ++mb)
    {
        PendingBlock& previous = pending[current ^ 1];
        uint8_t const* a0 = args.A + mb * 32 * args.lda;
        uint8_t const* a1 = a0 + 16 * args.lda;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < kBlocks; ++kb)
        {
            if (prefetch < prefetchEnd)
            {
                for (int l = 0; l < linesPerStep; ++l)
                {
                    _mm_prefetch(reinterpret_cast<char const*>(prefetch + l * 64), _MM_HINT_T1);
                }
                prefetch += linesPerStep * 64;
            }
            int8_t const* bk = b + kb * kPanelStep;
            _tile_loadd(4, a0 + kb * 64, args.lda);
            _tile_loadd(6, bk, 64);
            _tile_dpbusd(0, 4, 6);
            _tile_loadd(7, bk + kTileBytes, 64);
            _tile_dpbusd(1, 4, 7);
            _tile_loadd(5, a1 + kb * 64, args.lda);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
            if (previous.next < 64) // the previous block's epilogue, overlapping these tile products
            {
                epilogueSlice<E>(args, constants, previous, slice);
            }
            int const rowEnd = std::min(32, static_cast<int>(kb + 1) * rowsPerStep);
            for (int r = static_cast<int>(kb) * rowsPerStep; r < rowEnd; ++r)
            {
                prefetchOutputRow<E>(args, constants, mb * 32 + r); // this block's outputs, written a block later
            }
        }
        epilogueSlice<E>(args, constants, previous, 64);
        PendingBlock& done = pending[current];
        _tile_stored(0, done.acc, 128);
        _tile_stored(1, done.acc + 16, 128);
        _tile_stored(2, done.acc + 16 * 32, 128);
        _tile_stored(3, done.acc + 16 * 32 + 16, 128);
        done.m0 = mb * 32;
        done.next = 0;
        current ^= 1;
    }
    epilogueSlice<E>(args, constants, pending[current ^ 1], 64);
}
} // namespace
#endif

void runTask(MatMulArgs const& args, int64_t task)
{
#if DEBX_HAVE_AMX
    switch (args.epilogue)
    {
    case Epilogue::kFloat: runTaskAs<Epilogue::kFloat>(args, task); break;
    case Epilogue::kResidual: runTaskAs<Epilogue::kResidual>(args, task); break;
    case Epilogue::kGeluQuantize: runTaskAs<Epilogue::kGeluQuantize>(args, task); break;
    }
#else
    (void) args;
    (void) task;
#endif
}

} // namespace int8
} // namespace debx
