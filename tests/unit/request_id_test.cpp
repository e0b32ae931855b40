#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <random>
#include <string>

#include "proxy/worker.h"

namespace sluice {
namespace {

// The plain version: what the id looked like when snprintf made it.
std::string plainRequestId(uint64_t high, uint64_t low) {
  char buf[Worker::kRequestIdLength + 1];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, high, low);
  return buf;
}

std::string fastRequestId(uint64_t high, uint64_t low) {
  std::string out(Worker::kRequestIdLength, '?');
  Worker::formatRequestId(high, low, out.data());
  return out;
}

TEST(RequestIdTest, EdgeValues) {
  EXPECT_EQ(fastRequestId(0, 0), std::string(32, '0'));
  EXPECT_EQ(fastRequestId(UINT64_MAX, UINT64_MAX), std::string(32, 'f'));
  EXPECT_EQ(fastRequestId(0x0123456789abcdefULL, 0xfedcba9876543210ULL),
            "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(fastRequestId(1, 0x10), "00000000000000010000000000000010");
}

TEST(RequestIdTest, MatchesThePlainFormatting) {
  std::mt19937_64 rng(20);
  for (int i = 0; i < 100000; ++i) {
    uint64_t high = rng();
    uint64_t low = rng();
    // Some inputs with few bits set, so that leading zeros are exercised too.
    if (i % 4 == 1) {
      high >>= (i % 64);
    } else if (i % 4 == 2) {
      low &= (uint64_t{0xff} << (8 * (i % 8)));
    }
    ASSERT_EQ(fastRequestId(high, low), plainRequestId(high, low)) << i;
  }
}

}  // namespace
}  // namespace sluice
