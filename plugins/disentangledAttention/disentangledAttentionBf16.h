/*
 * debx: the CPU attention kernel's mixed-precision mode (disentangledAttentionCpu.cpp, CpuTensors::bf16) and the
 * instruction families that run it. Operands are rounded to bfloat16 (round to nearest even), products accumulate in
 * float32; scores, masking and softmax stay float32. No ONNX Runtime or TensorRT types.
 *
 * Every family reads the same "B tiles" (disentangledAttentionAmx.h: 16 X rows x 32 contraction entries, tile row r
 * holding the pairs X[c][2r], X[c][2r + 1] of the 16 rows c), so the constant tables are packed once at load
 * (amx::packTable) whichever family runs:
 *
 *   amx-bf16              AMX-BF16 tiles, TDPBF16PS (disentangledAttentionAmx.cpp; Sapphire Rapids and later)
 *   avx512-bf16           AVX-512 BF16, VDPBF16PS (disentangledAttentionBf16.cpp; AMD Zen 4 and later, Cooper Lake,
 *                         Sapphire Rapids): a tile row is one VDPBF16PS operand, A's bf16 pair broadcast to its lanes
 *   avx512-bf16-emulated  the same source compiled for AVX-512 F/BW/VL/DQ only, its two bf16 instructions
 *                         (VDPBF16PS, VCVTNE2PS2BF16) replaced by bit-exact software equivalents: never chosen
 *                         automatically; it lets tests run avx512-bf16's code on CPUs without AVX-512 BF16
 */
#pragma once

#include <cstdint>

namespace debx
{
namespace attention
{

//! The op's optional `bf16` attribute: 0 float32; 1 the best bf16 family this CPU runs (amx-bf16, else avx512-bf16;
//! float32 on CPUs with neither); 2-4 that family (refused at load where it cannot run).
enum class Bf16Family
{
    kFloat32 = 0,
    kBest = 1,
    kAmx = 2,
    kAvx512Bf16 = 3,
    kAvx512Bf16Emulated = 4,
};

constexpr int kBf16Families = 5;

//! "float32", "best", "amx-bf16", "avx512-bf16", "avx512-bf16-emulated" (nullptr past the enum).
inline char const* bf16FamilyName(int family)
{
    static char const* const names[kBf16Families]
        = {"float32", "best", "amx-bf16", "avx512-bf16", "avx512-bf16-emulated"};
    return family >= 0 && family < kBf16Families ? names[family] : nullptr;
}

//! The bf16 products of one family. The per-ISA translation units fill one each (plugins/ortOps/isaTwins.h); the
//! signatures hold only builtin types, so every namespace twin reads the same table.
struct Bf16Kernels
{
    //! X (rows, cols) float at row stride ldx -> bf16 (rowsPad, colsPad) at row stride colsPad, zero padded.
    void (*toBf16Rows)(float const* X, int64_t ldx, int rows, int cols, int rowsPad, int colsPad, uint16_t* out);
    //! bf16 rows X (16 rowBlocks, 32 kSteps) at row stride ldx -> B tiles [row block][step] (so C = A . X^T).
    void (*packRows)(uint16_t const* X, int64_t ldx, int rowBlocks, int kSteps, uint16_t* out);
    //! V (keys, D) float at row stride ldv -> B tiles [D block of 16][key step of 32] for P . V.
    void (*packValues)(float const* V, int64_t ldv, int keys, int D, int keySteps, uint16_t* out);
    //! For row block rb (16 rows of A, bf16 at row stride lda, kSteps * 32 columns), the column blocks
    //! [cbFirst[rb], cbEnd[rb]) of tiles (packed [block][step]) go to C[16 rb + r, 16 cb + c - colBase] (float, row
    //! stride ldc; whole 16 x 16 blocks are written).
    void (*bandProducts)(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
        int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase);
    //! The family's VDPBF16PS and VCVTNE2PS2BF16 (real or emulated), for tests: bf16::dotLanes, bf16::convertLanes.
    void (*dotLanes)(float* acc, uint16_t const* a, uint16_t const* b, int64_t n);
    void (*convertLanes)(float const* x, uint16_t* out, int64_t n);
};

namespace bf16
{

//! The AVX-512 (BF16 or emulated) implementations, in disentangledAttentionBf16.cpp; stubs where the compiler could
//! not target the instructions (compiled() is then false).
bool compiled();
void toBf16Rows(float const* X, int64_t ldx, int rows, int cols, int rowsPad, int colsPad, uint16_t* out);
void packRows(uint16_t const* X, int64_t ldx, int rowBlocks, int kSteps, uint16_t* out);
void packValues(float const* V, int64_t ldv, int keys, int D, int keySteps, uint16_t* out);
void bandProducts(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
    int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase);

//! The two instructions themselves, for tests: acc[i] (16 lanes at a time, n % 16 == 0) = VDPBF16PS(acc, a, b) with
//! a, b holding 2 n bf16; out (n % 32 == 0 bf16) = VCVTNE2PS2BF16 of x (n floats): out[i] = bf16(x[i]).
void dotLanes(float* acc, uint16_t const* a, uint16_t const* b, int64_t n);
void convertLanes(float const* x, uint16_t* out, int64_t n);

} // namespace bf16
} // namespace attention
} // namespace debx
