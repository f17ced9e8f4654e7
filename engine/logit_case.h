// A parity case: a prompt processed as one batch (logits of every row), then tokens fed one
// at a time, each step's logits recorded. The layout of the reference logit files.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <vector>

namespace tandem {

class Engine;

struct LogitCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> fed;  // tokens fed after the prompt (argmax, or forced)
  std::vector<std::vector<float>> prompt_logits;
  std::vector<std::vector<float>> decode_logits;
};

// Runs one case in sequence `seq` from an empty cache. With `forced`, feeds exactly those
// tokens (teacher forcing); otherwise n_steps greedy tokens.
LogitCase run_logit_case(Engine& engine, int32_t seq, const std::vector<int32_t>& prompt,
                         const std::vector<int32_t>* forced, int32_t n_steps);

nlohmann::json to_json(const LogitCase& c);

}  // namespace tandem
