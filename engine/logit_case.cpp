#include "engine/logit_case.h"

#include <nlohmann/json.hpp>
#include <span>

#include "engine/engine.h"
#include "engine/sampler.h"

namespace tandem {

LogitCase run_logit_case(Engine& engine, int32_t seq, const std::vector<int32_t>& prompt,
                         const std::vector<int32_t>* forced, int32_t n_steps) {
  const int32_t n_vocab = engine.n_vocab();
  engine.clear_sequence(seq);
  LogitCase c;
  c.prompt = prompt;
  std::vector<BatchEntry> batch;
  for (size_t i = 0; i < prompt.size(); ++i) batch.push_back({prompt[i], static_cast<int32_t>(i), seq, true});
  std::vector<float> logits;
  engine.forward(batch, logits);
  for (size_t r = 0; r < prompt.size(); ++r) {
    c.prompt_logits.emplace_back(logits.begin() + r * n_vocab, logits.begin() + (r + 1) * n_vocab);
  }
  int32_t next = argmax(c.prompt_logits.back());
  const size_t steps = forced ? forced->size() : static_cast<size_t>(n_steps);
  for (size_t s = 0; s < steps; ++s) {
    const int32_t token = forced ? (*forced)[s] : next;
    c.fed.push_back(token);
    const BatchEntry e{token, static_cast<int32_t>(prompt.size() + s), seq, true};
    engine.forward(std::span(&e, 1), logits);
    c.decode_logits.push_back(logits);
    next = argmax(logits);
  }
  return c;
}

nlohmann::json to_json(const LogitCase& c) {
  return nlohmann::json{{"prompt", c.prompt},
                        {"prompt_logits", c.prompt_logits},
                        {"greedy", c.fed},
                        {"decode_logits", c.decode_logits}};
}

}  // namespace tandem
