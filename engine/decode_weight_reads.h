// The weights a decode step reads, read plainly: the bandwidth a decode step's memory traffic
// gets when nothing is computed on it, a second roofline next to the one-buffer streaming read.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "cpu/memory_bandwidth.h"

namespace tandem {

class CpuArena;
class Model;

// One decode step's weight reads, grouped as decode's parallel calls make them: per layer the
// q/k/v projections, the output projection, the router, the gate and up matrices of
// n_expert_used distinct experts drawn from `rng`, their down matrices and the shared expert;
// then the output head. The token's embedding row comes first. Matrices read by all threads
// are cut into pieces; an expert's matrix is one piece, as decode gives one to a thread. The
// regions' bytes add up to Model::bytes_per_token().
std::vector<std::vector<ByteRegion>> decode_step_reads(const Model& model, std::mt19937& rng);

// GB/s (1e9 bytes/s) of `steps` such steps read with read_regions, one parallel call per group,
// the best of `reps` runs.
double measure_decode_weight_reads(const Model& model, CpuArena* arena, int steps = 16,
                                   int reps = 3);

}  // namespace tandem
