#include "proxy/net/deadline.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <vector>

namespace sluice::net {
namespace {

// A real libuv loop, a Deadline on it, and the loop times at which it expired.
class DeadlineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    deadline_ = new Deadline(&loop_, this, [](void* self) {
      auto* t = static_cast<DeadlineTest*>(self);
      t->expired_at_.push_back(uv_now(&t->loop_) - t->start_);
    });
    start_ = uv_now(&loop_);
  }

  void TearDown() override {
    deadline_->close([](void* self) { static_cast<DeadlineTest*>(self)->closed_ = true; });
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_TRUE(closed_);
    delete deadline_;
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  // Runs `fn` on the loop `ms` after the start.
  void at(uint64_t ms, std::function<void()> fn) {
    auto* step = new Step{{}, std::move(fn)};
    uv_timer_init(&loop_, &step->timer);
    step->timer.data = step;
    uv_timer_start(
        &step->timer,
        [](uv_timer_t* t) {
          auto* s = static_cast<Step*>(t->data);
          s->fn();
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { delete static_cast<Step*>(h->data); });
        },
        ms, 0);
  }

  struct Step {
    uv_timer_t timer;
    std::function<void()> fn;
  };

  uv_loop_t loop_;
  Deadline* deadline_ = nullptr;
  uint64_t start_ = 0;
  std::vector<uint64_t> expired_at_;
  bool closed_ = false;
};

TEST_F(DeadlineTest, ExpiresOnceAfterArming) {
  deadline_->arm(std::chrono::milliseconds(30));
  EXPECT_TRUE(deadline_->armed());
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(expired_at_.size(), 1u);
  EXPECT_GE(expired_at_[0], 30u);
  EXPECT_FALSE(deadline_->armed());
}

TEST_F(DeadlineTest, MovedLaterExpiresAtTheLaterTime) {
  deadline_->arm(std::chrono::milliseconds(20));
  at(10, [this] { deadline_->arm(std::chrono::milliseconds(60)); });  // due at 70, not 20
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(expired_at_.size(), 1u);
  EXPECT_GE(expired_at_[0], 70u);
}

TEST_F(DeadlineTest, MovedEarlierExpiresAtTheEarlierTime) {
  deadline_->arm(std::chrono::milliseconds(5000));
  deadline_->arm(std::chrono::milliseconds(20));
  uv_run(&loop_, UV_RUN_DEFAULT);  // returns once nothing is pending: not after 5 s
  ASSERT_EQ(expired_at_.size(), 1u);
  EXPECT_GE(expired_at_[0], 20u);
  EXPECT_LT(expired_at_[0], 4000u);
}

TEST_F(DeadlineTest, RearmedRepeatedlyExpiresOnlyAfterTheLastGap) {
  // Activity every 10 ms for 100 ms keeps a 30 ms deadline from passing.
  deadline_->arm(std::chrono::milliseconds(30));
  for (uint64_t t = 10; t <= 100; t += 10) {
    at(t, [this] { deadline_->arm(std::chrono::milliseconds(30)); });
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(expired_at_.size(), 1u);
  EXPECT_GE(expired_at_[0], 130u);
}

TEST_F(DeadlineTest, DisarmedNeverExpires) {
  deadline_->arm(std::chrono::milliseconds(20));
  deadline_->disarm();
  EXPECT_FALSE(deadline_->armed());
  at(40, [] {});  // the loop outlives the original deadline
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_TRUE(expired_at_.empty());
}

TEST_F(DeadlineTest, ArmedAgainAfterExpiryExpiresAgain) {
  deadline_->arm(std::chrono::milliseconds(10));
  at(30, [this] { deadline_->arm(std::chrono::milliseconds(10)); });
  uv_run(&loop_, UV_RUN_DEFAULT);
  ASSERT_EQ(expired_at_.size(), 2u);
  EXPECT_GE(expired_at_[1], 40u);
}

}  // namespace
}  // namespace sluice::net
