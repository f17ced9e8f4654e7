#include "cpu/matmul.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/arena.h"
#include "cpu/cpu_features.h"
#include "cpu/interleave.h"
#include "cpu/kernels.h"
#include "cpu/quant.h"

namespace tandem {
namespace {

void check_matrix(const MatrixRef& w) {
  const TypeTraits& t = traits(w.type);
  if (w.n_cols % t.block_elems != 0) {
    throw std::invalid_argument("matmul: row length " + std::to_string(w.n_cols) +
                                " is not a multiple of the " + std::string(t.name) +
                                " block size " + std::to_string(t.block_elems));
  }
  if (w.row_stride < row_bytes(w.type, w.n_cols)) {
    throw std::invalid_argument("matmul: row stride " + std::to_string(w.row_stride) +
                                " is smaller than a row of " + std::to_string(w.n_cols) + " " +
                                std::string(t.name) + " elements");
  }
  if (is_interleaved(w.type) &&
      (w.n_rows % kInterleaveRows != 0 || w.row_stride != row_bytes(w.type, w.n_cols) ||
       w.n_cols % interleaved_row_multiple(w.type) != 0)) {
    throw std::invalid_argument("matmul: an interleaved " + std::string(t.name) +
                                " matrix needs whole groups of packed rows (q8_0_x16: rows of "
                                "an even number of blocks), got " +
                                std::to_string(w.n_rows) + " rows of " + std::to_string(w.n_cols) +
                                " elements, stride " + std::to_string(w.row_stride));
  }
}

// The file layout of an interleaved matrix, in memory owned by the caller (reference paths).
MatrixRef deinterleaved(const MatrixRef& w, std::vector<uint8_t>& bytes) {
  bytes.resize(static_cast<size_t>(w.n_rows * w.row_stride));
  copy_rows_deinterleaved(w, 0, w.n_rows, bytes.data());
  return MatrixRef{file_type_of(w.type), bytes.data(), w.n_rows, w.n_cols, w.row_stride};
}

// Scratch per calling thread and nesting depth, grown to the largest request and then reused:
// no steady-state allocation. The depth matters because a thread waiting inside parallel_for
// may steal another task that calls matmul again before the outer call is done with its buffer.
thread_local int tls_depth = 0;

struct DepthGuard {
  DepthGuard() { ++tls_depth; }
  ~DepthGuard() { --tls_depth; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

uint8_t* scratch(int64_t bytes) {
  thread_local std::vector<std::vector<uint8_t>> buffers;
  if (buffers.size() < static_cast<size_t>(tls_depth) + 1) buffers.resize(tls_depth + 1);
  std::vector<uint8_t>& buffer = buffers[tls_depth];
  const size_t need = static_cast<size_t>(bytes) + 64;
  if (buffer.size() < need) buffer.resize(need);
  const auto addr = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - addr % 64) % 64);
}

// Activations of all tokens converted to the weight's vec_dot type, one row per token.
const uint8_t* quantize_activations(const MatrixRef& w, const float* x, int64_t n_tokens,
                                    int64_t* act_stride) {
  const GgmlType at = vec_dot_type(w.type);
  *act_stride = row_bytes(at, w.n_cols);
  uint8_t* act = scratch(*act_stride * n_tokens);
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_row(at, x + t * w.n_cols, act + t * *act_stride, w.n_cols);
  }
  return act;
}

void dot_rows_ref(const MatrixRef& w, const uint8_t* act, int64_t act_stride, int64_t n_tokens,
                  float* y, int64_t row_lo, int64_t row_hi) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_lo; r < row_hi; ++r) {
    for (int64_t t = 0; t < n_tokens; ++t) {
      y[t * w.n_rows + r] =
          vec_dot_ref(w.type, w.n_cols, base + r * w.row_stride, act + t * act_stride);
    }
  }
}

// Parallel chunks per thread. Threads seldom stream at the same speed (a shared or virtual
// machine), and a thread that runs out of chunks waits at the join; small chunks keep that wait
// short. But every chunk is a stream of its own that starts from DRAM's latency, and few tokens
// (decode) are bound by the stream, not by arithmetic: there a quarter as many chunks measured
// faster (Q4_K bench decode, steps alternating in one process: attention projections 3-7%,
// experts 1-2%, 1-3.5% in all).
int64_t chunks_per_thread(int64_t n_tokens) {
  return n_tokens <= kStreamingTokens ? 4 : 16;
}

// Rows per parallel chunk, in whole 16-row blocks once chunks are that large (the kernels' row
// block).
int64_t row_grain(int64_t n_rows, int n_threads, int64_t n_tokens) {
  const int64_t chunks = chunks_per_thread(n_tokens) * static_cast<int64_t>(n_threads);
  const int64_t grain = (n_rows + chunks - 1) / chunks;
  return grain < 16 ? std::max<int64_t>(grain, 1) : (grain + 15) / 16 * 16;
}

// Rows [lo, hi) of job `job` of a parallel product.
struct RowChunk {
  size_t job;
  int64_t lo, hi;
};

struct ChunkPlan {
  std::vector<RowChunk> chunks;
  std::vector<int64_t> share_first;  // worker w's chunks: [share_first[w], share_first[w + 1])
};

// Splits the jobs' rows, in whole 16-row blocks (the largest kernel row block), into one share
// per worker, equal in blocks, and each share into chunks of about 1 / per_share of it, except
// that the share's last chunk's worth is cut into a half, a quarter, ... down to one block. The
// worker that finishes its share first takes the other's small chunks from its end, so the workers
// finish within a block or two of each other instead of up to a whole chunk apart: a decode step's
// products (qkv, wo, router, gate/up, down per layer) waited 1.0-1.4 ms per step with uniform
// chunks and 0.3-0.6 ms with these (Q4_K bench model, 2 threads, summed over both threads).
// The plan is the calling thread's, per nesting depth like scratch(); lambdas run by other
// threads must reach it through the returned reference.
const ChunkPlan& plan_chunks(std::span<const int64_t> job_rows, int n_workers, int64_t per_share) {
  thread_local std::vector<ChunkPlan> plans;
  if (plans.size() < static_cast<size_t>(tls_depth) + 1) plans.resize(tls_depth + 1);
  ChunkPlan& plan = plans[tls_depth];
  constexpr int64_t kBlock = 16;
  const auto blocks = [&](size_t job) { return (job_rows[job] + kBlock - 1) / kBlock; };
  int64_t n_blocks = 0;
  for (size_t job = 0; job < job_rows.size(); ++job) n_blocks += blocks(job);
  plan.chunks.clear();
  plan.share_first.assign(1, 0);
  size_t j = 0;
  int64_t job_first = 0;  // first block of job j
  for (int w = 0; w < n_workers; ++w) {
    int64_t b = n_blocks * w / n_workers;
    const int64_t end = n_blocks * (w + 1) / n_workers;
    const int64_t grain = std::max<int64_t>(1, (end - b + per_share - 1) / per_share);
    while (b < end) {
      while (job_first + blocks(j) <= b) job_first += blocks(j++);
      const int64_t job_end = job_first + blocks(j);
      const int64_t left = end - b;
      const int64_t size = std::min(left > 2 * grain ? grain : (left + 1) / 2, job_end - b);
      const int64_t local = b - job_first;
      plan.chunks.push_back({j, local * kBlock, std::min((local + size) * kBlock, job_rows[j])});
      b += size;
    }
    plan.share_first.push_back(static_cast<int64_t>(plan.chunks.size()));
  }
  return plan;
}

void matmul_fast(const FastKernel& k, const MatrixRef& w, const float* x, int64_t n_tokens,
                 float* y, CpuArena* arena) {
  uint8_t* buf = scratch(act_pack_bytes(k.layout, w.n_cols, n_tokens));
  ActPack act;
  const int n_threads = arena ? arena->n_threads() : 1;
  if (n_threads > 1 && n_tokens > 1) {
    arena->parallel_for(0, n_tokens, (n_tokens + 2 * n_threads - 1) / (2 * n_threads),
                        [&](int64_t lo, int64_t hi) {
                          ActPack part;
                          pack_activations(k.layout, x, w.n_cols, n_tokens, lo, hi, buf, &part);
                        });
    pack_activations(k.layout, x, w.n_cols, n_tokens, 0, 0, buf, &act);  // pointers only
  } else {
    pack_activations(k.layout, x, w.n_cols, n_tokens, 0, n_tokens, buf, &act);
  }
  auto run = [&](int64_t lo, int64_t hi) { k.run(w, act, lo, hi, 0, n_tokens, y, w.n_rows); };
  if (n_threads == 1) return run(0, w.n_rows);
  const int64_t rows[] = {w.n_rows};
  const ChunkPlan& plan = plan_chunks(rows, n_threads, chunks_per_thread(n_tokens));
  arena->parallel_chunks(plan.share_first,
                         [&](int64_t c) { run(plan.chunks[c].lo, plan.chunks[c].hi); });
}

}  // namespace

void matmul_ref(const MatrixRef& w, const float* x, int64_t n_tokens, float* y) {
  check_matrix(w);
  if (is_interleaved(w.type)) {
    std::vector<uint8_t> bytes;
    return matmul_ref(deinterleaved(w, bytes), x, n_tokens, y);
  }
  const DepthGuard depth;
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  dot_rows_ref(w, act, act_stride, n_tokens, y, 0, w.n_rows);
}

void matmul(const MatrixRef& w, const float* x, int64_t n_tokens, float* y, CpuArena* arena) {
  check_matrix(w);
  if (n_tokens <= 0 || w.n_rows <= 0) return;
  const DepthGuard depth;
  if (const FastKernel* k = find_fast_kernel(w.type, cpu_features())) {
    return matmul_fast(*k, w, x, n_tokens, y, arena);
  }
  if (is_interleaved(w.type)) {  // no kernel for the layout here: compute from the file layout
    std::vector<uint8_t> bytes;
    return matmul(deinterleaved(w, bytes), x, n_tokens, y, arena);
  }
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  auto run = [&](int64_t lo, int64_t hi) { dot_rows_ref(w, act, act_stride, n_tokens, y, lo, hi); };
  if (!arena || arena->n_threads() == 1) return run(0, w.n_rows);
  arena->parallel_for(0, w.n_rows, row_grain(w.n_rows, arena->n_threads(), n_tokens), run);
}

namespace {

// Packs in pieces of at most kPackTokens tokens, so a long prompt's shared pack (q/k/v) is
// spread over the threads too.
constexpr int64_t kPackTokens = 32;

struct PackPiece {
  size_t job;
  int64_t t_lo, t_hi;
};

// matmul_many's per-call bookkeeping, kept per thread and nesting depth like scratch(): a
// decode step makes ~100 calls, and six fresh vectors each were ~0.3% of its samples.
struct ManyWork {
  std::vector<const FastKernel*> kernels;
  std::vector<int64_t> pack_offset;
  std::vector<char> owns_pack;
  std::vector<ActPack> packs;
  std::vector<PackPiece> pieces;
  std::vector<int64_t> job_rows;
};

ManyWork& many_work() {
  thread_local std::vector<ManyWork> works;
  if (works.size() < static_cast<size_t>(tls_depth) + 1) works.resize(tls_depth + 1);
  return works[tls_depth];
}

}  // namespace

void matmul_many(std::span<const MatmulJob> jobs, CpuArena* arena) {
  const CpuFeatures& features = cpu_features();
  const DepthGuard depth;
  ManyWork& work = many_work();
  std::vector<const FastKernel*>& kernels = work.kernels;
  kernels.assign(jobs.size(), nullptr);
  for (size_t j = 0; j < jobs.size(); ++j) {
    check_matrix(jobs[j].w);
    kernels[j] = find_fast_kernel(jobs[j].w.type, features);
    if (!kernels[j]) {  // a type without a SIMD kernel: the plain path, job by job
      for (const MatmulJob& job : jobs) matmul(job.w, job.x, job.n_tokens, job.y, arena);
      return;
    }
  }
  // Pack offsets: a job reuses the previous job's pack when it reads the same activations in
  // the same layout (an expert's gate and up products).
  std::vector<int64_t>& pack_offset = work.pack_offset;
  std::vector<char>& owns_pack = work.owns_pack;
  pack_offset.assign(jobs.size(), 0);
  owns_pack.assign(jobs.size(), 0);
  int64_t pack_bytes = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MatmulJob& job = jobs[j];
    owns_pack[j] = j == 0 || job.x != jobs[j - 1].x || job.n_tokens != jobs[j - 1].n_tokens ||
                   job.w.n_cols != jobs[j - 1].w.n_cols ||
                   kernels[j]->layout != kernels[j - 1]->layout;
    if (!owns_pack[j]) {
      pack_offset[j] = pack_offset[j - 1];
      continue;
    }
    pack_offset[j] = pack_bytes;
    pack_bytes += (act_pack_bytes(kernels[j]->layout, job.w.n_cols, job.n_tokens) + 63) / 64 * 64;
  }
  uint8_t* buf = scratch(pack_bytes);
  std::vector<ActPack>& packs = work.packs;
  packs.assign(jobs.size(), ActPack{});
  // The first call per job only sets the pointers.
  std::vector<PackPiece>& pieces = work.pieces;
  pieces.clear();
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (!owns_pack[j]) continue;
    const MatmulJob& job = jobs[j];
    pack_activations(kernels[j]->layout, job.x, job.w.n_cols, job.n_tokens, 0, 0,
                     buf + pack_offset[j], &packs[j]);
    for (int64_t t = 0; t < job.n_tokens; t += kPackTokens) {
      pieces.push_back({j, t, std::min(job.n_tokens, t + kPackTokens)});
    }
  }
  auto pack = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const PackPiece& piece = pieces[i];
      const MatmulJob& job = jobs[piece.job];
      ActPack unused;
      pack_activations(kernels[piece.job]->layout, job.x, job.w.n_cols, job.n_tokens, piece.t_lo,
                       piece.t_hi, buf + pack_offset[piece.job], &unused);
    }
  };
  const int n_threads = arena ? arena->n_threads() : 1;
  // Rows of all jobs in chunks: twice chunks_per_thread per worker share over the whole batch
  // (chunks end at a job's last row too).
  int64_t max_tokens = 0;
  std::vector<int64_t>& job_rows = work.job_rows;
  job_rows.clear();
  for (const MatmulJob& job : jobs) {
    job_rows.push_back(job.n_tokens > 0 ? job.w.n_rows : 0);
    max_tokens = std::max(max_tokens, job.n_tokens);
  }
  const ChunkPlan& plan = plan_chunks(job_rows, n_threads, 2 * chunks_per_thread(max_tokens));
  const std::vector<RowChunk>& chunks = plan.chunks;
  auto run = [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const MatmulJob& job = jobs[chunks[c].job];
      kernels[chunks[c].job]->run(job.w, packs[chunks[c].job], chunks[c].lo, chunks[c].hi, 0,
                                  job.n_tokens, job.y, job.w.n_rows);
    }
  };
  // Packing a few token rows costs less than a fork/join: decode packs on the calling thread.
  int64_t pack_elems = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    if (owns_pack[j]) pack_elems += jobs[j].n_tokens * jobs[j].w.n_cols;
  }
  if (n_threads == 1 || pack_elems <= 64 * 1024) {
    pack(0, static_cast<int64_t>(pieces.size()));
  } else {
    arena->parallel_for(0, static_cast<int64_t>(pieces.size()), 1, pack);
  }
  // Shared packs: the pointers of the job that packed them.
  for (size_t j = 1; j < jobs.size(); ++j)
    if (!owns_pack[j]) packs[j] = packs[j - 1];
  if (n_threads == 1) return run(0, static_cast<int64_t>(chunks.size()));
  arena->parallel_chunks(plan.share_first, [&](int64_t c) { run(c, c + 1); });
}

std::string_view matmul_kernel_name(GgmlType type) {
  const FastKernel* k = find_fast_kernel(type, cpu_features());
  return k ? k->name : "reference";
}

}  // namespace tandem
