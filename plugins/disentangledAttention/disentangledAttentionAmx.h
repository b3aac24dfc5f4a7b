/*
 * debx: AMX-BF16 matrix products for the CPU attention kernel's mixed-precision mode (disentangledAttentionCpu.cpp,
 * CpuTensors::bf16; the families are in disentangledAttentionBf16.h). Operands are rounded to bfloat16 (round to
 * nearest even), products accumulate in float32 on AMX tiles (TDPBF16PS). Used for QK^T, the c2p / p2c band
 * products against the relative-position tables and P . V; scores, masking and softmax stay float32. No ONNX Runtime
 * or TensorRT types.
 *
 * Tile layout ("B tiles", shared by every bf16 family: a tile row is also one VDPBF16PS operand): C = A . X^T for a
 * matrix X whose rows are C's columns is computed from tiles of 16 X rows x 32 contraction entries: tile row r holds,
 * for the 16 X rows c, the pair X[c][2r], X[c][2r + 1] (zero padded). Tiles are stored [column block][contraction
 * step], 512 bf16 (1 KB) each. The conversions and the packing of Q, K, P and V into this layout are the AVX-512 ones
 * of disentangledAttentionBf16.cpp.
 */
#pragma once

#include <cstdint>

namespace debx
{
namespace attention
{
namespace amx
{

//! True when the CPU has AMX-BF16 and the OS granted this process the tile data state.
bool available();

constexpr int64_t kTileElems = 512; //!< bf16 values per tile (16 rows x 64 bytes)

//! Tiles per head of a packed (P, H * D) table: ceil(P / 16) column blocks x ceil(D / 32) contraction steps.
int64_t tableTilesPerHead(int32_t rows, int32_t headSize);

//! Pack a (P, H * D) float table into B tiles per head: out holds H * tableTilesPerHead * kTileElems bf16.
void packTable(float const* table, int32_t rows, int32_t numHeads, int32_t headSize, uint16_t* out);

//! Band products: for row block rb (16 rows of A, bf16 at row stride lda, kSteps * 32 columns), the column blocks
//! [cbFirst[rb], cbEnd[rb]) of tiles (packed [block][step]) go to C[16 rb + r, 16 cb + c - colBase] (float, row
//! stride ldc). Loads this thread's tile configuration.
void bandProducts(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
    int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase);

} // namespace amx
} // namespace attention
} // namespace debx
