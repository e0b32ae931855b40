// The vectorized UTF-8 validator and masking (proxy/ws/codec.cpp) against the byte-at-a-time
// code they replaced: the same verdicts on every split of a few hundred sequences (valid ones,
// overlong forms, surrogates, code points above U+10FFFF, truncated ones) placed across the 8, 16
// and 32 byte steps, masked and unmasked, and the same bytes out of applyMask for every length,
// mask phase and alignment.

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "proxy/ws/codec.h"

namespace sluice::ws {
namespace {

// The validator as it was before the SIMD paths: one byte at a time, the same state machine.
class ScalarUtf8 {
 public:
  bool feed(const uint8_t* data, size_t len) {
    if (state_ == kReject) {
      return false;
    }
    for (size_t i = 0; i < len; ++i) {
      uint8_t b = data[i];
      if (state_ == 0) {
        if (b < 0x80) {
          continue;
        }
        if (b >= 0xC2 && b <= 0xDF) {
          state_ = pack(1, 0x80, 0xBF);
        } else if (b == 0xE0) {
          state_ = pack(2, 0xA0, 0xBF);
        } else if (b == 0xED) {
          state_ = pack(2, 0x80, 0x9F);
        } else if (b >= 0xE1 && b <= 0xEF) {
          state_ = pack(2, 0x80, 0xBF);
        } else if (b == 0xF0) {
          state_ = pack(3, 0x90, 0xBF);
        } else if (b >= 0xF1 && b <= 0xF3) {
          state_ = pack(3, 0x80, 0xBF);
        } else if (b == 0xF4) {
          state_ = pack(3, 0x80, 0x8F);
        } else {
          state_ = kReject;
          return false;
        }
      } else {
        if (b < ((state_ >> 8) & 0xFF) || b > ((state_ >> 16) & 0xFF)) {
          state_ = kReject;
          return false;
        }
        uint32_t need = (state_ & 3) - 1;
        state_ = need == 0 ? 0 : pack(need, 0x80, 0xBF);
      }
    }
    return true;
  }
  bool complete() const { return state_ == 0; }
  bool failed() const { return state_ == kReject; }

 private:
  static constexpr uint32_t pack(uint32_t need, uint32_t lo, uint32_t hi) {
    return need | lo << 8 | hi << 16;
  }
  static constexpr uint32_t kReject = 12;
  uint32_t state_ = 0;
};

const uint8_t kMask[4] = {0x37, 0xFA, 0x21, 0x3D};

// Pieces that go in the middle of ASCII runs: valid sequences of each length and every kind of
// invalid one, including sequences cut short.
const std::vector<std::string>& pieces() {
  static const std::vector<std::string> p = {
      "",
      "\x7F",
      "\xC2\x80",                                      // U+0080
      "\xDF\xBF",                                      // U+07FF
      "\xE0\xA0\x80",                                  // U+0800
      "\xE2\x82\xAC",                                  // €
      "\xED\x9F\xBF",                                  // U+D7FF
      "\xEE\x80\x80",                                  // U+E000
      "\xEF\xBF\xBF",                                  // U+FFFF
      "\xF0\x90\x80\x80",                              // U+10000
      "\xF0\x9F\x98\x80",                              // 😀
      "\xF4\x8F\xBF\xBF",                              // U+10FFFF
      "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",  // κόσμε
      "\xC0\xAF",                                      // overlong '/'
      "\xC1\xBF",                                      // overlong
      "\xE0\x80\xAF",                                  // overlong, 3 bytes
      "\xE0\x9F\xBF",                                  // overlong, 3 bytes
      "\xF0\x80\x80\xAF",                              // overlong, 4 bytes
      "\xF0\x8F\xBF\xBF",                              // overlong, 4 bytes
      "\xED\xA0\x80",                                  // U+D800
      "\xED\xBF\xBF",                                  // U+DFFF
      "\xF4\x90\x80\x80",                              // above U+10FFFF
      "\xF5\x80\x80\x80",                              // lead byte above F4
      "\xF8\x88\x80\x80\x80",                          // 5-byte form
      "\xFE",
      "\xFF",
      "\x80",              // lone continuation
      "\xBF\x80",          // two continuations
      "\xC2",              // truncated
      "\xE2\x82",          // truncated
      "\xF0\x9F\x98",      // truncated
      "\xC2\x41",          // continuation missing
      "\xE2\x28\xA1",      // bad second byte
      "\xF0\x9F\x28\x80",  // bad third byte
  };
  return p;
}

// A few hundred texts: each piece after 0..40 bytes of ASCII (so that it falls on every position
// of the 8, 16 and 32 byte steps), followed by ASCII or by a second piece.
std::vector<std::string> texts() {
  std::vector<std::string> out;
  const std::string ascii = "The quick brown fox jumps over the lazy dog, 0123456789 {}[]~";
  for (const std::string& p : pieces()) {
    for (size_t pre = 0; pre <= 40; pre += (pre < 34 ? 1 : 3)) {
      out.push_back(ascii.substr(0, pre) + p);
      out.push_back(ascii.substr(0, pre) + p + ascii.substr(0, 37));
    }
    for (const std::string& q : pieces()) {
      std::string t = p;
      t.append(ascii, 0, 17).append(q).append(ascii, 0, 5);
      out.push_back(std::move(t));
    }
  }
  return out;
}

const uint8_t* bytes(const std::string& s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

std::string masked(const std::string& s, size_t offset) {
  std::string m = s;
  for (size_t i = 0; i < m.size(); ++i) {
    m[i] = static_cast<char>(m[i] ^ kMask[(offset + i) & 3]);
  }
  return m;
}

// Feeds `s` in two pieces split at `at` to both validators (the new one through feed() or, on
// the masked copy, feedMasked()) and compares every answer.
void expectSameOnSplit(const std::string& s, size_t at, bool use_masked, size_t offset) {
  SCOPED_TRACE(testing::Message() << "text of " << s.size() << " bytes split at " << at
                                  << (use_masked ? " masked from " : "") << offset);
  ScalarUtf8 ref;
  Utf8Validator v;
  // An exact-size copy, so that the sanitizers see a read past the end.
  std::string in = use_masked ? masked(s, offset) : s;
  std::vector<uint8_t> a(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(at));
  std::vector<uint8_t> b(in.begin() + static_cast<std::ptrdiff_t>(at), in.end());
  bool r1 = ref.feed(bytes(s), at);
  bool v1 =
      use_masked ? v.feedMasked(a.data(), a.size(), kMask, offset) : v.feed(a.data(), a.size());
  ASSERT_EQ(r1, v1);
  ASSERT_EQ(ref.failed(), v.failed());
  ASSERT_EQ(ref.complete(), v.complete());
  bool r2 = ref.feed(bytes(s) + at, s.size() - at);
  bool v2 = use_masked ? v.feedMasked(b.data(), b.size(), kMask, offset + at)
                       : v.feed(b.data(), b.size());
  ASSERT_EQ(r2, v2);
  ASSERT_EQ(ref.failed(), v.failed());
  ASSERT_EQ(ref.complete(), v.complete());
  // The input was not touched.
  ASSERT_EQ(std::string(a.begin(), a.end()) + std::string(b.begin(), b.end()), in);
}

TEST(WsUtf8Simd, EverySplitAgreesWithScalar) {
  std::vector<std::string> all = texts();
  ASSERT_GT(all.size(), 300u);
  size_t valid = 0;
  for (const std::string& s : all) {
    ScalarUtf8 ref;
    valid += ref.feed(bytes(s), s.size()) && ref.complete() ? 1 : 0;
    EXPECT_EQ(validUtf8(s), ref.complete() && !ref.failed()) << s.size();
    for (size_t at = 0; at <= s.size(); ++at) {
      expectSameOnSplit(s, at, false, 0);
    }
  }
  // Both kinds are well represented.
  EXPECT_GT(valid, all.size() / 5);
  EXPECT_LT(valid, all.size() * 4 / 5);
}

TEST(WsUtf8Simd, MaskedEverySplitAgreesWithScalar) {
  for (const std::string& s : texts()) {
    for (size_t at = 0; at <= s.size(); ++at) {
      expectSameOnSplit(s, at, true, at % 4);
    }
  }
}

TEST(WsUtf8Simd, LongTextsInManySlices) {
  // Long texts (past the 2048-byte copy of feedMasked) with a non-ASCII piece here and there,
  // fed in random slices.
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string s;
    while (s.size() < 5000) {
      if (rng() % 8 == 0) {
        s += pieces()[rng() % pieces().size()];
      } else {
        s.append(rng() % 300, static_cast<char>('a' + rng() % 26));
      }
    }
    size_t offset = rng() % 4;
    std::string m = masked(s, offset);
    ScalarUtf8 ref;
    Utf8Validator plain;
    Utf8Validator mask;
    for (size_t pos = 0; pos < s.size();) {
      size_t n = std::min<size_t>(s.size() - pos, 1 + rng() % 3000);
      bool r = ref.feed(bytes(s) + pos, n);
      ASSERT_EQ(r, plain.feed(bytes(s) + pos, n));
      ASSERT_EQ(r, mask.feedMasked(bytes(m) + pos, n, kMask, offset + pos));
      ASSERT_EQ(ref.complete(), plain.complete());
      ASSERT_EQ(ref.complete(), mask.complete());
      pos += n;
    }
  }
}

TEST(WsMaskSimd, EveryLengthPhaseAndAlignment) {
  std::mt19937 rng(11);
  for (size_t align = 0; align < 4; ++align) {
    for (size_t len = 0; len <= 140; ++len) {
      for (size_t offset = 0; offset < 8; ++offset) {
        std::vector<uint8_t> buf(align + len);
        for (uint8_t& b : buf) {
          b = static_cast<uint8_t>(rng());
        }
        std::vector<uint8_t> want(buf.begin() + static_cast<std::ptrdiff_t>(align), buf.end());
        for (size_t i = 0; i < len; ++i) {
          want[i] ^= kMask[(offset + i) & 3];
        }
        size_t next = applyMask(buf.data() + align, len, kMask, offset);
        EXPECT_EQ(next, (offset + len) & 3);
        ASSERT_EQ(std::vector<uint8_t>(buf.begin() + static_cast<std::ptrdiff_t>(align), buf.end()),
                  want)
            << "align " << align << " len " << len << " offset " << offset;
      }
    }
  }
}

TEST(WsMaskSimd, SlicesResumeThePhase) {
  // A payload unmasked in slices of every size equals one unmasked whole.
  std::string payload(300, '\0');
  for (size_t i = 0; i < payload.size(); ++i) {
    payload[i] = static_cast<char>(i * 7);
  }
  std::string whole = payload;
  applyMask(reinterpret_cast<uint8_t*>(whole.data()), whole.size(), kMask, 0);
  for (size_t slice = 1; slice <= 70; ++slice) {
    std::string s = payload;
    size_t offset = 0;
    for (size_t pos = 0; pos < s.size(); pos += slice) {
      size_t n = std::min(slice, s.size() - pos);
      offset = applyMask(reinterpret_cast<uint8_t*>(s.data() + pos), n, kMask, offset);
    }
    ASSERT_EQ(s, whole) << slice;
  }
}

}  // namespace
}  // namespace sluice::ws
