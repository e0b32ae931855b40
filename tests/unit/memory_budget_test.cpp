// A worker's memory budget: the largest holders are shed first, only until the total is under
// the cap, and a holder shed (or gone) is no longer counted.

#include "proxy/memory_budget.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

struct H : MemoryBudget::Holder {
  explicit H(MemoryBudget* b) : budget(b) {}
  void shed() override {
    ++sheds;
    budget->update(*this, 0);  // what a shed holder does: give back (even re-entrantly)
  }
  MemoryBudget* budget;
  int sheds = 0;
};

TEST(MemoryBudget, LargestFirstUntilUnderTheCap) {
  MemoryBudget b(1000);
  H small(&b), mid(&b), big(&b);
  b.update(small, 100);
  b.update(mid, 300);
  b.update(big, 500);
  EXPECT_EQ(b.total(), 900u);
  EXPECT_EQ(big.sheds + mid.sheds + small.sheds, 0);
  b.update(small, 250);  // 1050 > 1000: the largest (big) goes, and that is enough
  EXPECT_EQ(big.sheds, 1);
  EXPECT_EQ(mid.sheds, 0);
  EXPECT_EQ(small.sheds, 0);
  EXPECT_EQ(b.total(), 550u);
  EXPECT_EQ(b.shed(), 1u);
  b.update(mid, 900);  // 1150: mid is now the largest, itself
  EXPECT_EQ(mid.sheds, 1);
  EXPECT_EQ(b.total(), 250u);
}

TEST(MemoryBudget, ReleaseAndNoCap) {
  MemoryBudget b(0);
  H a(&b);
  b.update(a, 1u << 30);
  EXPECT_EQ(a.sheds, 0);  // no cap
  b.release(a);
  EXPECT_EQ(b.total(), 0u);
  b.setCap(10);
  H c(&b);
  b.update(c, 5);
  b.update(c, 5);  // unchanged: nothing happens
  EXPECT_EQ(b.total(), 5u);
  b.update(c, 11);
  EXPECT_EQ(c.sheds, 1);
  EXPECT_EQ(b.total(), 0u);
}

TEST(MemoryBudget, AnUnchangedHolderIsShedOnceTheCapIsLowered) {
  // The inline fast path of update() skips only when nothing changed and nothing is over.
  MemoryBudget b(0);
  H a(&b);
  b.update(a, 100);
  b.update(a, 100);
  EXPECT_EQ(a.sheds, 0);
  b.setCap(50);
  b.update(a, 100);
  EXPECT_EQ(a.sheds, 1);
  EXPECT_EQ(b.total(), 0u);
}

}  // namespace
}  // namespace sluice
