#include "filters/http_head.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace sluice::filters {
namespace {

// The plain byte-at-a-time comparison that iequalsBytes's word-at-a-time one must agree with.
bool plainIequals(const char* a, const char* b, size_t n) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
  for (size_t i = 0; i < n; ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

TEST(HttpHeadIequals, EveryBytePairAtEveryPosition) {
  // Each pair of byte values, at each position of names of 1 to 20 bytes (the short path, the
  // 4-byte path, whole words and the overlapping last word).
  for (size_t n = 1; n <= 20; ++n) {
    for (size_t pos = 0; pos < n; ++pos) {
      std::string a(n, 'k');
      std::string b(n, 'K');
      for (int x = 0; x < 256; ++x) {
        for (int y = 0; y < 256; ++y) {
          a[pos] = static_cast<char>(x);
          b[pos] = static_cast<char>(y);
          ASSERT_EQ(iequalsBytes(a.data(), b.data(), n), plainIequals(a.data(), b.data(), n))
              << "n " << n << " pos " << pos << " bytes " << x << " " << y;
        }
      }
    }
  }
}

TEST(HttpHeadIequals, RandomNamesAgreeWithThePlainLoop) {
  std::mt19937 rng(7);
  const std::string alphabet = "azAZ@[`{-_09\x80\xc1\xe1\xff";
  size_t equal = 0;
  for (int round = 0; round < 200000; ++round) {
    size_t n = rng() % 40;
    std::string a;
    for (size_t i = 0; i < n; ++i) {
      a.push_back(alphabet[rng() % alphabet.size()]);
    }
    std::string b = a;
    for (char& c : b) {
      if (rng() % 2 == 0 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
        c = static_cast<char>(c ^ 0x20);  // the same letter in the other case
      }
    }
    if (n > 0 && rng() % 2 == 0) {
      b[rng() % n] = alphabet[rng() % alphabet.size()];
    }
    bool want = plainIequals(a.data(), b.data(), n);
    equal += want ? 1 : 0;
    ASSERT_EQ(iequalsBytes(a.data(), b.data(), n), want) << a << " / " << b;
  }
  EXPECT_GT(equal, 50000U);  // both outcomes are exercised
}

TEST(HttpHeadIequals, NamesOfEveryLength) {
  EXPECT_TRUE(iequals("", ""));
  EXPECT_TRUE(iequals("Host", "host"));
  EXPECT_FALSE(iequals("Host", "hosT1"));
  EXPECT_TRUE(iequals("Sec-WebSocket-Key", "sec-websocket-key"));
  EXPECT_FALSE(iequals("Sec-WebSocket-Key", "sec-websocket-kez"));
  EXPECT_FALSE(iequals("Sec-WebSocket-Key", "tec-websocket-key"));
  // '@' and '`', '[' and '{' differ only in the 0x20 bit, as letters do, but are not letters.
  EXPECT_FALSE(iequals("x-@", "x-`"));
  EXPECT_FALSE(iequals("abcdefgh[", "abcdefgh{"));
  EXPECT_FALSE(iequals("\xc1\xc1\xc1\xc1\xc1\xc1\xc1\xc1", "\xe1\xe1\xe1\xe1\xe1\xe1\xe1\xe1"));
}

}  // namespace
}  // namespace sluice::filters
