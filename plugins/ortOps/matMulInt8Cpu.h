/*
 * debx: INT8 matrix product on Intel AMX tiles, with the math of ONNX Runtime's com.microsoft MatMulIntegerToFloat
 * for the layout `debx calibrate --target ort` writes (uint8 activations with a scalar zero point, int8 per-column
 * weights with zero points of 0, float scales, optional float bias) and two fused epilogues:
 *
 *   acc[m, n] = sum_k (A[m, k] - a_zp) * B[k, n]                                 exact, int32
 *   y[m, n]   = float(acc[m, n]) * (a_scale * b_scale[n]) + bias[n]              kFloat
 *   y[m, n]  += R[m, n]                                                          kResidual (the Sum after it)
 *   q[m, n]   = saturate_u8(round_half_even(gelu(y[m, n]) / y_scale) + y_zp)     kGeluQuantize (Gelu, QuantizeLinear)
 *
 * No ONNX Runtime types: plugins/ortOps/matMulInt8Op.cpp wraps it as the debx::DebxMatMulInt8* ops.
 *
 * Where AVX-512 is absent, the 256-bit kernel (matMulInt8Avx2Kernel.h) reads the same panels: VEX VPDPBUSD where
 * the CPU has AVX-VNNI (matMulInt8AvxVnni.cpp), else AVX2 with both operands widened to int16 and VPMADDWD, exact
 * (matMulInt8Avx2.cpp).
 *
 * The same packed panels serve AVX-512 VNNI: a B tile row is exactly one VPDPBUSD operand (16 columns x 4 values of
 * k), so matMulInt8Vnni.cpp walks the panel 4 values of k at a time, 8 rows x 32 columns of int32 accumulators in
 * 16 ZMM registers (A's 4 bytes broadcast), with the same next-panel prefetch and the same epilogues
 * (matMulInt8Epilogue.h) applied straight from the registers.
 *
 * Layout. B (K, N) is packed once into panels of 32 columns: for each panel and each 64-wide step of K, two AMX B
 * tiles (columns 0-15 and 16-31), each 16 rows of 64 bytes, row r holding B[4r .. 4r+3, n] for its 16 columns (zero
 * padded past K and N). A is read in place (rows at stride lda) when M is a multiple of 32 and K of 64; otherwise
 * the caller copies it into a zero-padded buffer (padActivations).
 *
 * Schedule. A task is (group of rows, panel). It walks the 32-row blocks of its group: four int32 accumulator tiles
 * (32 x 32), two A tiles and two B tiles per K step (TDPBUSD: uint8 x int8). The panel's B tiles stay in L1 across
 * the blocks; the next panel is prefetched into L2 while this one computes (weights come from memory at batch 1);
 * and each block's epilogue runs in slices inside the next block's K loop, so the AVX-512 epilogue overlaps the tile
 * products instead of following them, with its per-column constants loaded once per task and its output (and
 * residual) lines prefetched a block ahead.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace debx
{
namespace int8
{

//! The instruction families the matmul runs on. Each lives in its own translation unit compiled for its ISA
//! (matMulInt8Amx.cpp, matMulInt8Vnni.cpp, matMulInt8AvxVnni.cpp, matMulInt8Avx2.cpp); the rest of the library is
//! baseline x86-64, and the family is chosen at run time by CPUID (amx > avx512-vnni > avx-vnni > avx2 > none), so
//! one build runs on any x86-64 CPU. The values are the ops' `family` attribute (never renumbered).
enum class Family
{
    kNone = 0,       //!< no native matmul here: ONNX Runtime's MatMulIntegerToFloat runs the graph as written
    kAvx512Vnni = 1, //!< AVX-512 VNNI (VPDPBUSD): Ice Lake / Cascade Lake Xeons, AMD Zen 4 and later
    kAmx = 2,        //!< AMX-INT8 tiles (TDPBUSD): Sapphire Rapids and later
    kAvx2 = 3,       //!< AVX2 + FMA without VNNI (int16 VPMADDWD): Haswell and later, AMD Zen 1-3
    kAvxVnni = 4,    //!< AVX-VNNI (VEX VPDPBUSD, 256-bit) without AVX-512: Alder Lake and later client CPUs
};
constexpr int kFamilyCount = 5;

//! "ort", "avx512-vnni", "amx", "avx2", "avx-vnni": the names debx's rewrite and reports use.
char const* familyName(Family family);
//! The family named `name`; false when the name is unknown.
bool familyByName(char const* name, Family* out);
//! True when this CPU (and OS) can run `family`; kNone always can.
bool familyAvailable(Family family);
//! The best family this CPU can run (amx > avx512-vnni > avx-vnni > avx2 > none).
Family bestFamily();
//! The CPUID features `family` needs, for error messages ("AVX2 + FMA", ...).
char const* familyNeeds(Family family);

//! True when this CPU has AMX-INT8 and the OS granted this process the tile data state (asked once).
bool amxAvailable();
//! True when this CPU has AVX-512 F/BW/VL/DQ with VNNI and the OS saves the ZMM state.
bool avx512VnniAvailable();
//! True when this CPU has AVX2 and FMA and the OS saves the YMM state.
bool avx2Available();
//! True when this CPU has AVX2, FMA and AVX-VNNI and the OS saves the YMM state.
bool avxVnniAvailable();

struct PackedWeights
{
    int64_t K = 0;
    int64_t N = 0;
    int64_t kBlocks = 0;          //!< ceil(K / 64)
    int64_t panels = 0;           //!< ceil(N / 32)
    std::vector<int8_t> storage;  //!< panels * kBlocks * 2 tiles of 1024 bytes, plus alignment slack
    int8_t* tiles = nullptr;      //!< 64-byte aligned start inside storage
    std::vector<int32_t> colSum;  //!< sum_k B[k, n], N entries (for the activation zero point)
};

//! Pack B (K, N), row-major int8.
void packWeights(int8_t const* B, int64_t K, int64_t N, PackedWeights* out);

//! True when A (M, K) must be copied into a padded buffer for `family`: AMX tiles read 32 rows x 64 bytes at a
//! time (M a multiple of 32 and K of 64); the other kernels read 4 bytes of a row at a time (K a multiple of 4).
bool needsPadding(int64_t M, PackedWeights const& W, Family family);
//! Bytes of the padded copy: ceil(M / 32) * 32 rows of kBlocks * 64 bytes.
size_t paddedSize(int64_t M, PackedWeights const& W);
//! Copy A (M, K) into `out` (paddedSize bytes), rows at stride kBlocks * 64, zeros in the padding.
void padActivations(uint8_t const* A, int64_t M, PackedWeights const& W, uint8_t* out);

enum class Epilogue
{
    kFloat,
    kResidual,
    kGeluQuantize,
};

struct MatMulArgs
{
    Family family;     //!< a family other than kNone, available here (the caller checks)
    uint8_t const* A;  //!< (M, K) at row stride lda, readable for ceil(M / 32) * 32 rows of kBlocks * 64 bytes
    int64_t lda;
    int64_t M;
    PackedWeights const* B;
    float const* scale;  //!< N entries: a_scale * b_scale[n]
    int32_t aZeroPoint;
    float const* bias;   //!< N entries or null
    Epilogue epilogue;
    float const* residual; //!< (M, N) for kResidual
    float yScale;          //!< kGeluQuantize
    int32_t yZeroPoint;    //!< kGeluQuantize
    void* Y;               //!< float (M, N), or uint8 (M, N) for kGeluQuantize
};

//! Tasks are (row group, 32-column panel), group-major; run every task in [0, taskCount) (any order, any thread).
int64_t taskCount(MatMulArgs const& args);
//! The 32-row blocks of A one task walks: about 1 MB of rows, so they stay in L2.
int64_t groupBlocks(MatMulArgs const& args);
void runTask(MatMulArgs const& args, int64_t task);

} // namespace int8
} // namespace debx
