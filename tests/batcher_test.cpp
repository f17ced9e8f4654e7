#include "engine/batcher.h"

#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tests/server_test_support.h"

namespace tandem {
namespace {

using namespace std::chrono_literals;

struct Result {
  std::string text;
  int32_t n_chunks_tokens = 0;
  GenerationStream::Chunk last;
};

Result collect(GenerationStream& stream) {
  Result r;
  GenerationStream::Chunk c;
  while (true) {
    if (!stream.read(c, 30s)) {
      ADD_FAILURE() << "stream stalled";
      return r;
    }
    r.text += c.text;
    r.n_chunks_tokens += c.n_tokens;
    if (c.done) {
      r.last = c;
      return r;
    }
  }
}

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_REQUIRE_TINY_MODEL();
    model_ = Model::load(test::tiny_model_path());
  }

  std::unique_ptr<Batcher> make(int32_t max_parallel, int32_t queue_limit, int32_t n_ctx = 256) {
    EngineOptions eo;
    eo.n_ctx = n_ctx;
    eo.n_seq_max = max_parallel;
    eo.n_threads = 2;
    engine_ = std::make_unique<Engine>(*model_, eo);
    BatcherOptions bo;
    bo.max_parallel = max_parallel;
    bo.queue_limit = queue_limit;
    bo.prefill_chunk = 16;  // small, so prompts span several mixed steps
    return std::make_unique<Batcher>(*engine_, model_->tokenizer(), bo);
  }

  GenerationRequest greedy(const std::string& prompt, int32_t max_tokens) const {
    GenerationRequest r;
    r.prompt = model_->tokenizer().encode(prompt, true, false);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    return r;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Engine> engine_;
};

const char* kPrompts[8] = {"Once upon a time",
                           "The capital of France is",
                           "In a hole in the ground there lived",
                           "1 2 3 4 5",
                           "It was the best of times, it was the worst of times",
                           "Call me Ishmael.",
                           "To be or not to be",
                           "A"};

TEST_F(BatcherTest, ConcurrentGreedyStreamsEqualSoloRuns) {
  auto batcher = make(8, 8);
  std::vector<std::string> solo;
  for (const char* p : kPrompts) {
    auto s = batcher->submit(greedy(p, 12));
    const Result r = collect(*s);
    EXPECT_EQ(r.last.finish, FinishReason::Length);
    EXPECT_EQ(r.last.stats.n_generated, 12);
    EXPECT_EQ(r.n_chunks_tokens, 12);
    solo.push_back(r.text);
  }
  std::vector<std::shared_ptr<GenerationStream>> streams;
  for (const char* p : kPrompts) streams.push_back(batcher->submit(greedy(p, 12)));
  for (size_t i = 0; i < streams.size(); ++i)
    EXPECT_EQ(collect(*streams[i]).text, solo[i]) << kPrompts[i];
  const BatcherMetrics m = batcher->metrics();
  EXPECT_EQ(m.n_requests_finished, 16u);
  EXPECT_EQ(m.n_generated_tokens, 16u * 12u);
  EXPECT_EQ(m.n_decode_tokens, 16u * 11u);  // the first token of each comes from its prompt step
  EXPECT_EQ(m.n_active, 0);
}

TEST_F(BatcherTest, StopStringEndsGenerationBeforeIt) {
  auto batcher = make(2, 2);
  const std::string full = collect(*batcher->submit(greedy("Once upon a time", 24))).text;
  ASSERT_GE(full.size(), 8u) << full;
  const std::string stop = full.substr(full.size() / 2, 3);
  GenerationRequest r = greedy("Once upon a time", 24);
  r.stop = {"\x01never", stop};
  const Result got = collect(*batcher->submit(r));
  EXPECT_EQ(got.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(got.last.finish, FinishReason::Stop);
}

TEST_F(BatcherTest, SameSeedSameSampledText) {
  auto batcher = make(2, 2);
  auto sampled = [&](uint64_t seed) {
    GenerationRequest r = greedy("The capital of France is", 16);
    r.sampling = SamplingParams{};
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    return collect(*batcher->submit(r)).text;
  };
  EXPECT_EQ(sampled(42), sampled(42));
}

TEST_F(BatcherTest, CancelFreesTheSlot) {
  auto batcher = make(1, 4);
  auto long_run = batcher->submit(greedy("Once upon a time", 200));
  GenerationStream::Chunk c;
  ASSERT_TRUE(long_run->read(c, 30s));  // it is running
  long_run->cancel();
  const Result r = collect(*long_run);
  EXPECT_EQ(r.last.finish, FinishReason::Cancelled);
  EXPECT_LT(r.last.stats.n_generated, 200);
  // The only slot is free again: a new request completes.
  EXPECT_EQ(collect(*batcher->submit(greedy("A", 4))).last.finish, FinishReason::Length);
  EXPECT_EQ(batcher->metrics().n_requests_cancelled, 1u);
}

TEST_F(BatcherTest, FullQueueRejectsAndLimitsApply) {
  auto batcher = make(1, 1, 64);
  auto a = batcher->submit(greedy("Once upon a time", 40));
  auto b = batcher->submit(greedy("Once upon a time", 4));
  EXPECT_THROW(batcher->submit(greedy("A", 4)), QueueFullError);
  collect(*a);
  collect(*b);
  // Too long and empty prompts are refused; max_tokens is clamped to the context.
  GenerationRequest too_long = greedy("", 4);
  too_long.prompt.assign(64, 5);
  EXPECT_THROW(batcher->submit(too_long), std::invalid_argument);
  GenerationRequest empty;
  EXPECT_THROW(batcher->submit(empty), std::invalid_argument);
  GenerationRequest nearly_full = greedy("", 1000);
  nearly_full.prompt.assign(60, 5);
  const Result r = collect(*batcher->submit(nearly_full));
  EXPECT_EQ(r.last.stats.n_generated, 4);
  EXPECT_EQ(r.last.finish, FinishReason::Length);
}

TEST_F(BatcherTest, ShutdownCancelsQueuedWorkAndRefusesNew) {
  auto batcher = make(1, 4);
  auto running = batcher->submit(greedy("Once upon a time", 200));
  auto queued = batcher->submit(greedy("A", 4));
  batcher->shutdown(0ms);
  EXPECT_EQ(collect(*queued).last.finish, FinishReason::Cancelled);
  const FinishReason f = collect(*running).last.finish;
  EXPECT_TRUE(f == FinishReason::Cancelled || f == FinishReason::Length);
  EXPECT_THROW(batcher->submit(greedy("A", 4)), BatcherStoppedError);
}

}  // namespace
}  // namespace tandem
