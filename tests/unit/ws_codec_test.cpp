#include "proxy/ws/codec.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <cstring>
#include <random>
#include <vector>

namespace sluice::ws {
namespace {

struct Frame {
  FrameHeader header;
  std::string payload;  // unmasked
};

// Collects frames, unmasking payloads as they arrive in slices.
class Collector : public FrameParser::Handler {
 public:
  bool onFrameHeader(const FrameHeader& h, const uint8_t* raw) override {
    frames.push_back({h, {}});
    raw_headers.emplace_back(reinterpret_cast<const char*>(raw), h.header_size);
    return true;
  }
  bool onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                      uint64_t offset) override {
    std::string chunk(reinterpret_cast<const char*>(data), len);
    if (h.masked) {
      applyMask(reinterpret_cast<uint8_t*>(chunk.data()), len, h.mask, offset);
    }
    frames.back().payload += chunk;
    return true;
  }
  bool onFrameEnd(const FrameHeader&) override {
    ++ended;
    return true;
  }
  std::vector<Frame> frames;
  std::vector<std::string> raw_headers;
  int ended = 0;
};

std::string frame(bool fin, uint8_t opcode, std::string payload, bool masked, uint8_t rsv = 0) {
  static const uint8_t kMask[4] = {0x37, 0xfa, 0x21, 0x3d};
  std::string out;
  writeFrameHeader(&out, fin, opcode, payload.size(), masked ? kMask : nullptr, rsv);
  if (masked) {
    applyMask(reinterpret_cast<uint8_t*>(payload.data()), payload.size(), kMask, 0);
  }
  return out + payload;
}

const uint8_t* u8(const std::string& s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

TEST(WsParser, EverySplitOfASequenceOfFrames) {
  std::string big(70000, 'x');
  std::string mid(300, 'y');
  std::string stream = frame(true, kText, "Hello", true) + frame(false, kBinary, mid, true) +
                       frame(true, kPing, "p", true) + frame(true, kContinuation, big, true) +
                       frame(true, kClose, std::string("\x03\xe8", 2) + "bye", true);
  for (size_t split = 0; split <= stream.size(); split += (split < 400 ? 1 : 997)) {
    FrameParser parser(true);
    Collector c;
    ASSERT_EQ(parser.feed(u8(stream), split, c), split);
    ASSERT_EQ(parser.feed(u8(stream) + split, stream.size() - split, c), stream.size() - split);
    ASSERT_EQ(parser.error(), FrameError::kNone) << split;
    ASSERT_EQ(c.frames.size(), 5u) << split;
    EXPECT_EQ(c.ended, 5);
    EXPECT_EQ(c.frames[0].payload, "Hello");
    EXPECT_EQ(c.frames[1].payload, mid);
    EXPECT_EQ(c.frames[1].header.length, 300u);
    EXPECT_EQ(c.frames[2].header.opcode, kPing);
    EXPECT_EQ(c.frames[3].payload, big);
    EXPECT_EQ(c.frames[3].header.header_size, 2 + 8 + 4);
    EXPECT_EQ(c.frames[4].payload.substr(2), "bye");
    // The raw header handed out is the wire header, even when it was split across feeds.
    EXPECT_EQ(c.raw_headers[3], stream.substr(5 + 2 + 4 + 300 + 4 + 4 + 2 + 4 + 1, 14));
  }
}

TEST(WsParser, ByteAtATime) {
  std::string stream =
      frame(true, kBinary, std::string(200, 'b'), false) + frame(true, kText, "", false);
  FrameParser parser(false);
  Collector c;
  for (size_t i = 0; i < stream.size(); ++i) {
    ASSERT_EQ(parser.feed(u8(stream) + i, 1, c), 1u);
  }
  ASSERT_EQ(c.frames.size(), 2u);
  EXPECT_EQ(c.frames[0].payload, std::string(200, 'b'));
  EXPECT_EQ(c.frames[1].payload, "");
  EXPECT_EQ(c.ended, 2);
}

TEST(WsParser, SixtyFourBitLength) {
  std::string h;
  writeFrameHeader(&h, true, kBinary, 5ull << 32, nullptr);
  FrameParser parser(false);
  Collector c;
  parser.feed(u8(h), h.size(), c);
  ASSERT_EQ(c.frames.size(), 1u);
  EXPECT_EQ(c.frames[0].header.length, 5ull << 32);
  std::string bad = h;
  bad[2] = static_cast<char>(0x80);  // top bit of a 64-bit length
  FrameParser p2(false);
  Collector c2;
  p2.feed(u8(bad), bad.size(), c2);
  EXPECT_EQ(p2.error(), FrameError::kLengthTooLarge);
}

struct Violation {
  const char* name;
  std::string bytes;
  bool from_client;
  FrameError error;
};

TEST(WsParser, ProtocolViolations) {
  std::vector<Violation> cases = {
      {"unmasked client frame", frame(true, kText, "a", false), true, FrameError::kMaskRequired},
      {"masked server frame", frame(true, kText, "a", true), false, FrameError::kMaskForbidden},
      {"rsv1 without extension", frame(true, kText, "a", true, 4), true, FrameError::kReservedBits},
      {"rsv2", frame(true, kBinary, "a", true, 2), true, FrameError::kReservedBits},
      {"rsv3", frame(true, kBinary, "a", true, 1), true, FrameError::kReservedBits},
      {"opcode 3", frame(true, 3, "a", true), true, FrameError::kUnknownOpcode},
      {"opcode 0xB", frame(true, 0xB, "", true), true, FrameError::kUnknownOpcode},
      {"ping 126 bytes", frame(true, kPing, std::string(126, 'p'), true), true,
       FrameError::kControlTooLong},
      {"fragmented ping", frame(false, kPing, "p", true), true, FrameError::kControlFragmented},
      {"fragmented close", frame(false, kClose, "", true), true, FrameError::kControlFragmented},
      {"lone continuation", frame(true, kContinuation, "a", true), true,
       FrameError::kUnexpectedContinuation},
      {"text inside fragmented message",
       frame(false, kText, "a", true) + frame(true, kText, "b", true), true,
       FrameError::kExpectedContinuation},
      {"continuation after a finished message",
       frame(false, kText, "a", true) + frame(true, kContinuation, "b", true) +
           frame(true, kContinuation, "c", true),
       true, FrameError::kUnexpectedContinuation},
  };
  for (const Violation& v : cases) {
    FrameParser parser(v.from_client);
    Collector c;
    parser.feed(u8(v.bytes), v.bytes.size(), c);
    EXPECT_EQ(parser.error(), v.error) << v.name;
  }
}

TEST(WsParser, ControlFramesInterleaveWithFragments) {
  std::string stream = frame(false, kText, "a", true) + frame(true, kPing, "x", true) +
                       frame(false, kContinuation, "b", true) + frame(true, kPong, "", true) +
                       frame(true, kContinuation, "c", true);
  FrameParser parser(true);
  Collector c;
  parser.feed(u8(stream), stream.size(), c);
  EXPECT_EQ(parser.error(), FrameError::kNone);
  EXPECT_EQ(c.frames.size(), 5u);
  EXPECT_FALSE(parser.inFragmentedMessage());
  EXPECT_EQ(parser.messageOpcode(), kText);
}

TEST(WsParser, Rsv1AllowedWithExtensionOnFirstFrameOnly) {
  FrameParser parser(true, true);
  Collector c;
  std::string ok = frame(false, kText, "a", true, 4) + frame(true, kContinuation, "b", true);
  parser.feed(u8(ok), ok.size(), c);
  EXPECT_EQ(parser.error(), FrameError::kNone);
  FrameParser p2(true, true);
  std::string bad = frame(false, kText, "a", true, 4) + frame(true, kContinuation, "b", true, 4);
  p2.feed(u8(bad), bad.size(), c);
  EXPECT_EQ(p2.error(), FrameError::kReservedBits);
}

// Fed whole, a common frame's header takes the parser's fast path (parseCommonHeader); fed a
// byte at a time, every header goes through the spill and the general parseHeader + validate.
// Both must see the same frames and stop at the same error, for random (often invalid) headers.
TEST(WsParser, CommonHeaderFastPathMatchesTheGeneralPath) {
  std::mt19937 rng(20);
  const uint8_t first_bytes[] = {0x81, 0x82, 0x01, 0x02, 0x80, 0x88, 0x89, 0x8A, 0x91,
                                 0xA1, 0xC1, 0xC2, 0x83, 0x8B, 0x00, 0x09, 0xF1};
  for (int round = 0; round < 3000; ++round) {
    bool from_client = (round & 1) != 0;
    bool rsv1 = (round & 2) != 0;
    std::string stream;
    int frames = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < frames; ++i) {
      uint8_t b0 = first_bytes[rng() % sizeof first_bytes];
      // Mostly masked as the direction wants, sometimes not; lengths around 126.
      bool masked = (rng() % 8 == 0) ? !from_client : from_client;
      size_t len = rng() % 4 == 0 ? 120 + rng() % 12 : rng() % 20;
      std::string payload(len, 'a');
      std::string f = frame(true, b0 & 0x0F, payload, masked);
      f[0] = static_cast<char>(b0);
      stream += f;
    }
    FrameParser whole(from_client, rsv1);
    FrameParser bytes(from_client, rsv1);
    Collector a;
    Collector b;
    size_t used_whole = whole.feed(u8(stream), stream.size(), a);
    size_t used_bytes = 0;
    for (size_t i = 0; i < stream.size(); ++i) {
      size_t n = bytes.feed(u8(stream) + i, 1, b);
      used_bytes += n;
      if (n == 0) {
        break;
      }
    }
    ASSERT_EQ(whole.error(), bytes.error()) << "round " << round;
    if (whole.error() == FrameError::kNone) {
      ASSERT_EQ(used_whole, stream.size());
    }
    ASSERT_EQ(a.frames.size(), b.frames.size()) << "round " << round;
    ASSERT_EQ(a.ended, b.ended);
    ASSERT_EQ(a.raw_headers, b.raw_headers);
    for (size_t i = 0; i < a.frames.size(); ++i) {
      const FrameHeader& x = a.frames[i].header;
      const FrameHeader& y = b.frames[i].header;
      ASSERT_EQ(x.fin, y.fin);
      ASSERT_EQ(x.rsv, y.rsv);
      ASSERT_EQ(x.opcode, y.opcode);
      ASSERT_EQ(x.masked, y.masked);
      ASSERT_EQ(0, memcmp(x.mask, y.mask, 4));
      ASSERT_EQ(x.length, y.length);
      ASSERT_EQ(x.header_size, y.header_size);
      ASSERT_EQ(a.frames[i].payload, b.frames[i].payload);
    }
    ASSERT_EQ(whole.inFragmentedMessage(), bytes.inFragmentedMessage());
    ASSERT_EQ(whole.messageOpcode(), bytes.messageOpcode());
    (void)used_bytes;
  }
}

// A handler that takes whole frames in one call sees the same frames, in the same order, as one
// that takes every frame in three, wherever the input is split (a frame cut by a split goes the
// three-call way); kStop stops right after the frame.
TEST(WsParser, WholeFramesMatchTheThreeCalls) {
  struct Whole : Collector {
    FrameParser::Handler::Whole onWholeFrame(const FrameHeader& h, const uint8_t* raw) override {
      if (h.opcode == kPing) {
        return FrameParser::Handler::Whole::kDecline;  // some are declined
      }
      frames.push_back({h, std::string(reinterpret_cast<const char*>(raw) + h.header_size,
                                       static_cast<size_t>(h.length))});
      if (h.masked) {
        applyMask(reinterpret_cast<uint8_t*>(frames.back().payload.data()), h.length, h.mask, 0);
      }
      raw_headers.emplace_back(reinterpret_cast<const char*>(raw), h.header_size);
      ++ended;
      ++whole;
      return stop ? FrameParser::Handler::Whole::kStop : FrameParser::Handler::Whole::kHandled;
    }
    int whole = 0;
    bool stop = false;
  };
  std::string stream = frame(true, kText, "Hello", true) + frame(true, kPing, "p", true) +
                       frame(true, kBinary, std::string(300, 'y'), true) +
                       frame(false, kText, "a", true) + frame(true, kContinuation, "b", true) +
                       frame(true, kText, "", true);
  FrameParser plain_parser(true);
  Collector expected;
  plain_parser.feed(u8(stream), stream.size(), expected);
  for (size_t split = 0; split <= stream.size(); ++split) {
    FrameParser p(true);
    Whole got;
    ASSERT_EQ(p.feed(u8(stream), split, got), split);
    ASSERT_EQ(p.feed(u8(stream) + split, stream.size() - split, got), stream.size() - split);
    ASSERT_EQ(got.frames.size(), expected.frames.size()) << "split " << split;
    for (size_t i = 0; i < got.frames.size(); ++i) {
      EXPECT_EQ(got.frames[i].payload, expected.frames[i].payload) << "split " << split;
      EXPECT_EQ(got.frames[i].header.opcode, expected.frames[i].header.opcode);
    }
    EXPECT_EQ(got.raw_headers, expected.raw_headers);
    EXPECT_EQ(got.ended, expected.ended);
    if (split == 0) {
      EXPECT_EQ(got.whole, 5);  // all but the ping
    }
  }
  FrameParser p(true);
  Whole stopper;
  stopper.stop = true;
  size_t first = frame(true, kText, "Hello", true).size();
  EXPECT_EQ(p.feed(u8(stream), stream.size(), stopper), first);
  EXPECT_EQ(stopper.frames.size(), 1u);
  EXPECT_EQ(p.error(), FrameError::kNone);
}

TEST(Utf8, ValidAndInvalid) {
  EXPECT_TRUE(validUtf8(""));
  EXPECT_TRUE(validUtf8("plain ascii that is longer than eight bytes"));
  EXPECT_TRUE(validUtf8("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));  // κόσμε
  EXPECT_TRUE(validUtf8("\xf4\x8f\xbf\xbf"));                              // U+10FFFF
  EXPECT_TRUE(validUtf8("\xed\x9f\xbf"));                                  // U+D7FF
  EXPECT_TRUE(validUtf8("\xee\x80\x80"));                                  // U+E000
  EXPECT_FALSE(validUtf8("\xc0\xaf"));                                     // overlong '/'
  EXPECT_FALSE(validUtf8("\xe0\x80\xaf"));                                 // overlong, 3 bytes
  EXPECT_FALSE(validUtf8("\xf0\x80\x80\xaf"));                             // overlong, 4 bytes
  EXPECT_FALSE(validUtf8("\xed\xa0\x80"));                                 // U+D800 surrogate
  EXPECT_FALSE(validUtf8("\xed\xbf\xbf"));                                 // U+DFFF surrogate
  EXPECT_FALSE(validUtf8("\xf4\x90\x80\x80"));                             // above U+10FFFF
  EXPECT_FALSE(validUtf8("\xf5\x80\x80\x80"));
  EXPECT_FALSE(validUtf8("\xff"));
  EXPECT_FALSE(validUtf8("\x80"));                 // lone continuation
  EXPECT_FALSE(validUtf8("\xce"));                 // truncated
  EXPECT_FALSE(validUtf8("abc\xce\xba\xe1\xbd"));  // truncated at the end
}

TEST(Utf8, CodePointsSplitAcrossFeeds) {
  std::string s = "a\xf0\x9f\x98\x80 b \xe2\x82\xac \xce\xba end";
  for (size_t split = 0; split <= s.size(); ++split) {
    Utf8Validator v;
    EXPECT_TRUE(v.feed(u8(s), split)) << split;
    EXPECT_TRUE(v.feed(u8(s) + split, s.size() - split)) << split;
    EXPECT_TRUE(v.complete()) << split;
  }
  Utf8Validator v;
  EXPECT_TRUE(v.feed(u8(std::string("\xf0\x9f")), 2));
  EXPECT_FALSE(v.complete());
  EXPECT_FALSE(v.feed(u8(std::string("A")), 1));  // the sequence is cut short
  EXPECT_TRUE(v.failed());
}

TEST(Masking, MatchesBytewiseAtEveryOffsetAndLength) {
  const uint8_t mask[4] = {0xde, 0xad, 0xbe, 0xef};
  std::mt19937 rng(7);
  for (size_t len = 0; len < 40; ++len) {
    for (size_t off = 0; off < 4; ++off) {
      std::vector<uint8_t> data(len), expect(len);
      for (size_t i = 0; i < len; ++i) {
        data[i] = expect[i] = static_cast<uint8_t>(rng());
        expect[i] ^= mask[(off + i) & 3];
      }
      size_t next = applyMask(data.data(), len, mask, off);
      EXPECT_EQ(data, expect);
      EXPECT_EQ(next, (off + len) & 3);
    }
  }
}

TEST(Handshake, AcceptKeyFromRfc) {
  EXPECT_EQ(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_TRUE(validClientKey("dGhlIHNhbXBsZSBub25jZQ=="));
  EXPECT_FALSE(validClientKey("dGhlIHNhbXBsZSBub25jZQ"));
  EXPECT_FALSE(validClientKey("dGhlIHNhbXBsZSBub25jZSE="));  // 17 bytes
  EXPECT_FALSE(validClientKey("dGhlIHNhbXBsZSBub25j*Q=="));
  EXPECT_FALSE(validClientKey(""));
}

// acceptKey's hand-written base64 against OpenSSL's one-shot SHA-1 and EVP_EncodeBlock.
TEST(Handshake, AcceptKeyAgreesWithOpenSsl) {
  std::mt19937 rng(6455);
  for (int round = 0; round < 2000; ++round) {
    std::string key(rng() % 40, '\0');
    for (char& c : key) {
      c = static_cast<char>(rng());
    }
    std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
    unsigned char b64[32];
    int n = EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
    ASSERT_EQ(acceptKey(key), std::string(reinterpret_cast<char*>(b64), static_cast<size_t>(n)));
  }
}

// validClientKey's table against the plain ranges, for every byte at every position.
TEST(Handshake, ClientKeyEveryByteAtEveryPosition) {
  auto plain = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
  };
  for (size_t pos = 0; pos < 24; ++pos) {
    for (int b = 0; b < 256; ++b) {
      std::string key = "dGhlIHNhbXBsZSBub25jZQ==";
      key[pos] = static_cast<char>(b);
      bool want = pos < 22 ? plain(key[pos]) : b == '=';
      EXPECT_EQ(validClientKey(key), want) << pos << " " << b;
    }
  }
}

TEST(CloseCodes, Validity) {
  for (uint16_t ok :
       {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999}) {
    EXPECT_TRUE(validCloseCode(ok)) << ok;
  }
  for (uint16_t bad : {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}) {
    EXPECT_FALSE(validCloseCode(bad)) << bad;
  }
}

TEST(Writers, CloseFrameTruncatesReasonOnCodePointBoundary) {
  std::string reason;
  for (int i = 0; i < 70; ++i) {
    reason += "\xce\xba";  // 140 bytes
  }
  std::string out;
  writeCloseFrame(&out, 1001, reason, nullptr);
  ASSERT_LE(out.size(), 2u + 125u);
  EXPECT_TRUE(validUtf8(out.substr(4)));
  EXPECT_EQ(static_cast<uint8_t>(out[2]), 0x03);
  EXPECT_EQ(static_cast<uint8_t>(out[3]), 0xe9);
}

}  // namespace
}  // namespace sluice::ws
