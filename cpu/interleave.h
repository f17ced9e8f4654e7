// Row interleaving: a CPU-only layout of quantized matrices, made once at load.
// A decode step reads each weight once, and the row kernels spend more core time per byte
// unpacking one row's block (scales, nibbles) than DRAM spends delivering it. In the
// interleaved layout, each group of kInterleaveRows rows stores block i of its rows together,
// 4 bytes of each row in turn: 4-byte word k of row r's block i sits at word
// (i * words_per_block + k) * kInterleaveRows + r of the group. One 64-byte vector then holds
// the same word of 16 rows, so a kernel decodes scales for 16 rows at once and applies each
// activation value to 16 rows with one instruction. The group is exactly as large as its 16
// rows were: memory stays one copy of the weights, and expert e still starts at
// e * n_rows * row_stride.
#pragma once

#include <cstdint>
#include <optional>

#include "cpu/matmul.h"
#include "cpu/quant_types.h"

namespace tandem {

inline constexpr int64_t kInterleaveRows = 16;

// The interleaved layout of `type` (Q4_K -> Q4_K_X16), or nullopt when it has none.
std::optional<GgmlType> interleaved_type(GgmlType type);
// The file type an interleaved layout holds (Q4_K_X16 -> Q4_K); other types unchanged.
GgmlType file_type_of(GgmlType type);
bool is_interleaved(GgmlType type);

// Whether a matrix of `type` with n_rows rows can be interleaved and this CPU has a kernel for
// the result: the type has an interleaved layout and n_rows is a multiple of kInterleaveRows.
bool worth_interleaving(GgmlType type, int64_t n_rows);

// Rearranges n_rows rows of `type` (a multiple of kInterleaveRows) in place, and back.
void interleave_rows(GgmlType type, uint8_t* data, int64_t n_rows, int64_t n_cols);
void deinterleave_rows(GgmlType interleaved, uint8_t* data, int64_t n_rows, int64_t n_cols);

// Copies rows [r_lo, r_hi) of an interleaved matrix (r_lo a multiple of kInterleaveRows) into
// dst in the file layout, row after row.
void copy_rows_deinterleaved(const MatrixRef& w, int64_t r_lo, int64_t r_hi, uint8_t* dst);

}  // namespace tandem
