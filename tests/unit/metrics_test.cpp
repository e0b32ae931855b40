// Metrics: the integer form of a size histogram's observe() must count exactly as the plain one.

#include "proxy/metrics.h"

#include <gtest/gtest.h>

#include <vector>

namespace sluice::metrics {
namespace {

TEST(Metrics, SizeHistogramObserveWholeMatchesObserve) {
  SizeHistogram plain(&kSizeBounds);
  SizeHistogram whole(&kSizeBounds);
  std::vector<uint64_t> values = {0,   1,   63,       64,       65,       255,
                                  256, 257, 16777215, 16777216, 16777217, uint64_t{1} << 33};
  for (uint64_t b : kSizeBoundsWhole) {
    values.push_back(b - 1);
    values.push_back(b);
    values.push_back(b + 1);
  }
  uint64_t x = 12345;
  for (int i = 0; i < 10000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    values.push_back((x >> 33) % (uint64_t{1} << (i % 34)));
  }
  for (uint64_t v : values) {
    plain.observe(static_cast<double>(v));
    whole.observeWhole(v, kSizeBoundsWhole);
    for (size_t i = 0; i <= kSizeBounds.size(); ++i) {
      ASSERT_EQ(plain.bucket(i), whole.bucket(i)) << "value " << v << " bucket " << i;
    }
    ASSERT_EQ(plain.sum(), whole.sum()) << "value " << v;
  }
}

}  // namespace
}  // namespace sluice::metrics
