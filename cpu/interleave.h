// Row interleaving: a CPU-only layout of quantized matrices, made once at load.
// A decode step reads each weight once, and the row kernels spend more core time per byte
// unpacking one row's block (scales, nibbles) than DRAM spends delivering it. In the
// interleaved layouts, each group of kInterleaveRows rows stores block i of its rows together,
// 4 bytes of each row in turn, so one 64-byte vector holds the same word of 16 rows: a kernel
// decodes scales for 16 rows at once and applies each activation value to 16 rows with one
// instruction, reading the group as one forward stream.
//  - Q4_K_X16: 4-byte word k of row r's block i sits at word (i * 36 + k) * 16 + r of the group
//    (scales and quants of a super-block stay together).
//  - Q8_0_X16: blocks go in pairs (rows hold an even number of blocks); pair p takes 1088 bytes
//    (17 cache lines) at p * 1088: the 16 rows' quants of block 2p (word k of row r at word
//    k * 16 + r), then those of block 2p + 1, then the 16 f16 scales of each block. Every vector
//    load is then line-aligned where the group is.
// A group is exactly as large as its 16 rows were: memory stays one copy of the weights, and
// expert e still starts at e * n_rows * row_stride.
#pragma once

#include <cstdint>
#include <optional>

#include "cpu/matmul.h"
#include "cpu/quant_types.h"

namespace tandem {

inline constexpr int64_t kInterleaveRows = 16;

// The interleaved layout of `type` (Q4_K -> Q4_K_X16, Q8_0 -> Q8_0_X16), or nullopt.
std::optional<GgmlType> interleaved_type(GgmlType type);
// The file type an interleaved layout holds (Q4_K_X16 -> Q4_K); other types unchanged.
GgmlType file_type_of(GgmlType type);
bool is_interleaved(GgmlType type);

// What a row length of `type` (a file type or its interleaved layout) must be a multiple of for
// the interleaved layout: the block, or for Q8_0, which pairs its blocks, two blocks.
int64_t interleaved_row_multiple(GgmlType type);

// Whether an n_rows x n_cols matrix of `type` can be interleaved and this CPU has a kernel for
// the result: the type has an interleaved layout, n_rows is a multiple of kInterleaveRows and,
// for Q8_0, a row holds an even number of blocks.
bool worth_interleaving(GgmlType type, int64_t n_rows, int64_t n_cols);

// Rearranges n_rows rows of `type` (whole groups, rows as worth_interleaving asks) in place,
// and back.
void interleave_rows(GgmlType type, uint8_t* data, int64_t n_rows, int64_t n_cols);
void deinterleave_rows(GgmlType interleaved, uint8_t* data, int64_t n_rows, int64_t n_cols);

// Copies rows [r_lo, r_hi) of an interleaved matrix (r_lo a multiple of kInterleaveRows) into
// dst in the file layout, row after row.
void copy_rows_deinterleaved(const MatrixRef& w, int64_t r_lo, int64_t r_hi, uint8_t* dst);

}  // namespace tandem
