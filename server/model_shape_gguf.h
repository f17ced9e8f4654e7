// The scheduler's view of a GGUF model (tandem sim -m / tandem plan): hyperparameters from the
// metadata and byte sizes from the tensor table, without loading weights or the tokenizer.
#pragma once

#include <string>

#include "scheduler/model_shape.h"

namespace tandem {

// Throws GgufError for an unreadable file and sched::ShapeError for a model without experts.
sched::ModelShape shape_from_gguf(const std::string& path);

}  // namespace tandem
