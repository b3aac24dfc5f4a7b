/*
 * debx: AMX-BF16 matrix products for the CPU attention kernel's mixed-precision mode (disentangledAttentionCpu.cpp,
 * CpuTensors::bf16). Operands are rounded to bfloat16 (round to nearest even), products accumulate in float32 on
 * AMX tiles (TDPBF16PS). Used for the c2p / p2c band products against the relative-position tables and for P . V;
 * scores, masking and softmax stay float32. No ONNX Runtime or TensorRT types.
 *
 * Tile layout ("B tiles"): C = A . X^T for a matrix X whose rows are C's columns is computed from tiles of 16 X rows x
 * 32 contraction entries: tile row r holds, for the 16 X rows c, the pair X[c][2r], X[c][2r + 1] (zero padded).
 * Tiles are stored [column block][contraction step], 512 bf16 (1 KB) each.
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

//! X (rows, cols) float at row stride ldx -> bf16 (rowsPad, colsPad) at row stride colsPad, zero padded.
void toBf16Rows(float const* X, int64_t ldx, int rows, int cols, int rowsPad, int colsPad, uint16_t* out);

//! bf16 rows X (16 rowBlocks, 32 kSteps) at row stride ldx -> B tiles [row block][step] (so C = A . X^T).
void packRows(uint16_t const* X, int64_t ldx, int rowBlocks, int kSteps, uint16_t* out);

//! V (keys, D) float at row stride ldv -> B tiles [D block of 16][key step of 32] for P . V (keySteps * 32 keys).
void packValues(float const* V, int64_t ldv, int keys, int D, int keySteps, uint16_t* out);

//! Band products: for row block rb (16 rows of A, bf16 at row stride lda, kSteps * 32 columns), the column blocks
//! [cbFirst[rb], cbEnd[rb]) of tiles (packed [block][step]) go to C[16 rb + r, 16 cb + c - colBase] (float, row
//! stride ldc). Loads this thread's tile configuration.
void bandProducts(uint16_t const* A, int64_t lda, int rowBlocks, int kSteps, uint16_t const* tiles,
    int32_t const* cbFirst, int32_t const* cbEnd, float* C, int64_t ldc, int64_t colBase);

} // namespace amx
} // namespace attention
} // namespace debx
