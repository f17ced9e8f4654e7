// SideThread: a task runs on another thread while the caller works, join waits for it and
// rethrows what it threw, and a second run before the join is refused.
#include "engine/side_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

namespace tandem {
namespace {

TEST(SideThread, RunsOnAnotherThreadAndJoins) {
  SideThread side;
  std::thread::id first;
  for (int round = 0; round < 3; ++round) {
    std::thread::id ran_on;
    int value = 0;
    side.run([&] {
      ran_on = std::this_thread::get_id();
      value = round + 1;
    });
    side.join();  // after join the task's writes are visible
    EXPECT_NE(ran_on, std::this_thread::get_id());
    EXPECT_EQ(value, round + 1);
    if (round == 0) first = ran_on;
    EXPECT_EQ(ran_on, first) << "one persistent thread serves every task";
  }
}

TEST(SideThread, JoinRethrowsTheTasksException) {
  SideThread side;
  side.run([] { throw std::runtime_error("device queue failed"); });
  try {
    side.join();
    FAIL() << "the task's exception was lost";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "device queue failed");
  }
  // The thread survives and the next task runs normally.
  int value = 0;
  side.run([&] { value = 42; });
  side.join();
  EXPECT_EQ(value, 42);
}

TEST(SideThread, JoinQuietlyDropsTheException) {
  SideThread side;
  side.run([] { throw std::runtime_error("dropped"); });
  side.join_quietly();
  side.run([] {});
  EXPECT_NO_THROW(side.join());
}

TEST(SideThread, SecondRunBeforeJoinIsRefused) {
  SideThread side;
  std::atomic<bool> release{false};
  side.run([&] {
    while (!release.load()) std::this_thread::yield();
  });
  EXPECT_THROW(side.run([] {}), std::logic_error);
  release = true;
  side.join();
}

TEST(SideThread, DestroyedWithoutEverRunningOrWithATaskPending) {
  { SideThread unused; }
  std::atomic<int> ran{0};
  {
    SideThread side;
    side.run([&] { ++ran; });
  }  // the destructor waits for the task
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace tandem
