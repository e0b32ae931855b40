#include "proxy/http/syntax.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/support/plain_syntax.h"

namespace sluice::http {
namespace {

using Region = MessageSyntax::Region;

const Region kRegions[] = {Region::kHead, Region::kChunkLine, Region::kChunkDataEnd,
                           Region::kTrailers};

// Scans `input` as a run of `region`s (the region begun again after each one ends) in pieces cut
// at random, with the fast scanner and the plain one, and fails at the first step where their
// answers differ.
void compareScans(Region region, const std::string& input, std::mt19937& rng) {
  MessageSyntax fast;
  reference::PlainMessageSyntax plain;
  fast.begin(region);
  plain.begin(region);
  size_t pos = 0;
  while (pos < input.size()) {
    size_t n = 1 + rng() % (input.size() - pos);
    if (rng() % 3 == 0) {
      n = input.size() - pos;
    }
    MessageSyntax::Scan a = fast.scan(input.data() + pos, n);
    MessageSyntax::Scan b = plain.scan(input.data() + pos, n);
    ASSERT_EQ(a.used, b.used) << ::testing::PrintToString(input) << " at " << pos;
    ASSERT_EQ(a.done, b.done) << ::testing::PrintToString(input) << " at " << pos;
    ASSERT_STREQ(a.error != nullptr ? a.error : "", b.error != nullptr ? b.error : "")
        << ::testing::PrintToString(input) << " at " << pos;
    if (a.error != nullptr) {
      return;
    }
    if (a.done) {
      ASSERT_EQ(fast.chunkSize(), plain.chunkSize()) << ::testing::PrintToString(input);
      if (rng() % 4 != 0) {  // else the next scan reports data after the end
        fast.begin(region);
        plain.begin(region);
      }
    }
    pos += a.used;
    if (a.used == 0 && !a.done) {
      return;  // nothing left to learn from an empty scan
    }
  }
}

TEST(MessageSyntaxFast, AgreesWithThePlainScannerOnMutatedMessages) {
  const std::vector<std::string> seeds = {
      "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
      "\r\n\r\nGET /a?b=c HTTP/1.0\r\nHost: x\r\nX-Empty:\r\nUser-Agent: Mozilla/5.0 (X11; "
      "Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n\r\n",
      "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
      "5\r\n",
      "1a;name=value;q=\"a \\\" b\"\r\n",
      "ff ; a = b ;c\r\n",
      "0\r\n",
      "\r\n",
      "T: v\r\nTrailer-Two:  x \t\r\n\r\n",
  };
  // Bytes that move the scanners between states, and some that break them.
  const std::string alphabet = std::string("\r\n \t:;=\"\\/.?HTP10aZf9-!~\x7f\x80\xff", 27) +
                               std::string(1, '\0') + "\x01\x0b";
  std::mt19937 rng(20);
  for (int round = 0; round < 60000; ++round) {
    std::string input = seeds[rng() % seeds.size()];
    if (rng() % 2 == 0) {
      input += seeds[rng() % seeds.size()];
    }
    int edits = static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      size_t at = rng() % input.size();
      char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          input[at] = c;
          break;
        case 1:
          input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          input.erase(at, 1);
          break;
      }
    }
    for (Region region : kRegions) {
      compareScans(region, input, rng);
      if (HasFatalFailure()) {
        return;
      }
    }
  }
}

TEST(MessageSyntaxFast, AgreesOnEveryByteAtEveryPosition) {
  const std::string head =
      "GET /x HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
  const std::string chunk = "1f;e=\"q\"\r\n";
  std::mt19937 rng(1);
  for (const std::string& base : {head, chunk}) {
    for (size_t at = 0; at < base.size(); ++at) {
      for (int c = 0; c < 256; ++c) {
        std::string input = base;
        input[at] = static_cast<char>(c);
        for (Region region : kRegions) {
          compareScans(region, input, rng);
          if (HasFatalFailure()) {
            return;
          }
        }
      }
    }
  }
}

TEST(MessageSyntaxFast, LongChunkLinesAreCountedTheSame) {
  std::mt19937 rng(3);
  std::string line = "5;a=" + std::string(MessageSyntax::kMaxChunkLineBytes, 'x') + "\r\n";
  compareScans(Region::kChunkLine, line, rng);
}

}  // namespace
}  // namespace sluice::http
