// Loop nest shared by the SIMD kernel files: rows are walked in small blocks that stay in
// L1/L2 while every tile of up to 4 tokens passes over them, so for prefill the weights stream
// from DRAM once per call, and each weight block is decoded once per 4 tokens.
// Included only from cpu/avx512/*.cpp and cpu/avx2/*.cpp. Everything here is in an unnamed
// namespace on purpose: each including file is compiled for a different instruction set, and
// shared (weak) instantiations would let the linker pick one file's code for all of them.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/kernels.h"

namespace tandem {
namespace {

constexpr int kTokenTile = 4;
constexpr int64_t kRowBlock = 16;
// Decode reads each weight row once, straight from DRAM, and one core keeps too few misses in
// flight on its own (the hardware prefetcher also stops at every 4 KiB page). So every row kernel
// asks, for each cache line it consumes, for the line kStreamAheadBytes further on: a steady
// trickle of requests that keeps DRAM busy. On the bench model (Q8_0, 2 threads, before Q8_0
// decode moved to rows<NR>) decode went from 11.4 tokens/s without it to ~16 (a burst of whole
// rows 4 rows ahead gave 14.8); 2-8 KiB ahead all measured alike then. Once the x16 kernels
// made Q4_K decode bandwidth-bound, 3 KiB had measured best on the Q4_K bench model, whose
// only row-kernel products are its f32 routers. On the Q6_K bench model, whose every product
// runs on a row kernel, 6-10 KiB measured 3-10% faster than 3 KiB and 2 KiB 5% slower
// (distances cycled round by round in one process, 10 rounds of 32 decode steps), and the
// Q4_K bench model did not notice the change (within 0.7%).
constexpr int64_t kStreamAheadBytes = 8192;
// Rows a decode pass (one token) walks together when the row kernel offers `rows<NR>`.
constexpr int kDecodeRows = 4;

// Starts a forward stream over [begin, end): asks for its first kStreamAheadBytes at once. A
// chunk of rows usually starts where nothing was prefetched (another expert, another thread's
// rows), and waiting for those lines one demand miss at a time, until the stream-ahead requests
// cover them, cost 8-15% of decode on small chunks (768-row Q4_K experts in 192-row chunks, 2
// threads, with the stream-ahead requests kept inside the chunk).
inline void prefetch_stream_start(const void* begin, const void* end) {
  const char* p = static_cast<const char*>(begin);
  const char* stop = std::min(static_cast<const char*>(end), p + kStreamAheadBytes);
  for (; p < stop; p += 64) __builtin_prefetch(p, 0, 3);
}

// Requests the kLines cache lines from kStreamAheadBytes past p. Prefetches never fault, so
// running past the end of a matrix is harmless.
template <int kLines>
inline void prefetch_ahead(const void* p) {
  const char* ahead = static_cast<const char*>(p) + kStreamAheadBytes;
  for (int l = 0; l < kLines; ++l) __builtin_prefetch(ahead + 64 * l, 0, 3);
}

// RowKernel<NT>::run(row_bytes, act, t0, n_cols, out) writes out[0..NT) = dot of one weight
// row with tokens t0..t0+NT-1. Each token's arithmetic is the same for every NT, so results
// do not depend on how tokens or rows are split.
template <template <int> class RowKernel>
void run_tiles(const MatrixRef& w, const ActPack& a, int64_t r_lo, int64_t r_hi, int64_t t_lo,
               int64_t t_hi, float* y, int64_t y_stride) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  if (t_hi - t_lo <= kStreamingTokens)
    prefetch_stream_start(base + r_lo * w.row_stride, base + r_hi * w.row_stride);
  if constexpr (requires { &RowKernel<1>::template rows<kDecodeRows>; }) {
    if (t_hi - t_lo == 1) {  // decode: one token, kDecodeRows rows per pass
      int64_t r = r_lo;
      for (; r + kDecodeRows <= r_hi; r += kDecodeRows) {
        float out[kDecodeRows];
        RowKernel<1>::template rows<kDecodeRows>(base + r * w.row_stride, w.row_stride, a, t_lo,
                                                 w.n_cols, out);
        for (int i = 0; i < kDecodeRows; ++i) y[t_lo * y_stride + r + i] = out[i];
      }
      for (; r < r_hi; ++r) {
        float out[1];
        RowKernel<1>::template rows<1>(base + r * w.row_stride, w.row_stride, a, t_lo, w.n_cols,
                                       out);
        y[t_lo * y_stride + r] = out[0];
      }
      return;
    }
  }
  for (int64_t rb = r_lo; rb < r_hi; rb += kRowBlock) {
    const int64_t re = std::min(rb + kRowBlock, r_hi);
    for (int64_t t = t_lo; t < t_hi; t += kTokenTile) {
      const int nt = static_cast<int>(std::min<int64_t>(kTokenTile, t_hi - t));
      for (int64_t r = rb; r < re; ++r) {
        const uint8_t* row = base + r * w.row_stride;
        float out[kTokenTile] = {};
        switch (nt) {
          case 4:
            RowKernel<4>::run(row, a, t, w.n_cols, out);
            break;
          case 3:
            RowKernel<3>::run(row, a, t, w.n_cols, out);
            break;
          case 2:
            RowKernel<2>::run(row, a, t, w.n_cols, out);
            break;
          default:
            RowKernel<1>::run(row, a, t, w.n_cols, out);
            break;
        }
        for (int i = 0; i < nt; ++i) y[(t + i) * y_stride + r] = out[i];
      }
    }
  }
}

}  // namespace
}  // namespace tandem
