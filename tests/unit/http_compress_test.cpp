#include "proxy/http/compress.h"

#include <brotli/decode.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <string>
#include <vector>

namespace sluice::http {
namespace {

const Coding kBoth[] = {Coding::kBrotli, Coding::kGzip};
const Coding kGzipFirst[] = {Coding::kGzip, Coding::kBrotli};
const Coding kGzipOnly[] = {Coding::kGzip};

Coding choose(std::vector<std::string> lines, std::span<const Coding> allowed = kBoth) {
  std::vector<Header> headers = {{"Host", "example.com"}};
  for (std::string& l : lines) {
    headers.push_back({"Accept-Encoding", std::move(l)});
  }
  return chooseCoding(headers, allowed);
}

TEST(HttpCompressAccept, Choices) {
  struct Case {
    std::vector<std::string> lines;
    std::span<const Coding> allowed;
    Coding want;
  } cases[] = {
      {{"gzip, deflate, br, zstd"}, kBoth, Coding::kBrotli},  // a browser
      {{"gzip, deflate, br"}, kGzipFirst, Coding::kGzip},     // the route's order on a tie
      {{"gzip, deflate, br"}, kGzipOnly, Coding::kGzip},
      {{"br"}, kGzipOnly, Coding::kIdentity},
      {{"gzip;q=1.0, br;q=0.5"}, kBoth, Coding::kGzip},  // the client's weights first
      {{"gzip;q=0.8, br;q=0.801"}, kGzipFirst, Coding::kBrotli},
      {{"GZIP;Q=0.5"}, kBoth, Coding::kGzip},  // case-insensitive
      {{"x-gzip"}, kBoth, Coding::kGzip},
      {{"*"}, kBoth, Coding::kBrotli},
      {{"*;q=0.5, br;q=0"}, kBoth, Coding::kGzip},  // an explicit 0 beats the star
      {{"*;q=0"}, kBoth, Coding::kIdentity},
      {{"identity;q=0"}, kBoth, Coding::kIdentity},  // refusing identity forces nothing
      {{"identity"}, kBoth, Coding::kIdentity},
      {{"gzip;q=0, br;q=0"}, kBoth, Coding::kIdentity},
      {{"deflate"}, kBoth, Coding::kIdentity},
      {{""}, kBoth, Coding::kIdentity},
      {{}, kBoth, Coding::kIdentity},                                   // no Accept-Encoding at all
      {{"deflate", "br;q=0.2", "gzip;q=0.1"}, kBoth, Coding::kBrotli},  // several lines
      {{"gzip;q=2, br;q=1.5"}, kBoth, Coding::kIdentity},  // malformed weights are ignored
      {{"gzip;q=0.5555, br;q=.5, gzip"}, kBoth, Coding::kGzip},
      {{"gzip;q=0.2", "gzip;q=0.9, br;q=0.5"}, kBoth, Coding::kBrotli},  // the first mention
      {{" ,, gzip ; level=3 ; q=0.3 ,"}, kBoth, Coding::kGzip},
      {{"gzip"}, {}, Coding::kIdentity},
  };
  for (const Case& c : cases) {
    std::string what = c.lines.empty() ? "(none)" : c.lines[0];
    EXPECT_EQ(choose(c.lines, c.allowed), c.want) << what;
  }
}

ResponseHead response(uint16_t status, std::vector<Header> headers) {
  ResponseHead r;
  r.status = status;
  r.reason = "OK";
  r.headers = std::move(headers);
  return r;
}

RequestHead request(std::string method, std::vector<Header> headers = {}) {
  RequestHead r;
  r.method = std::move(method);
  r.url = "/";
  r.headers = std::move(headers);
  return r;
}

TEST(HttpCompressEligibility, Table) {
  CompressPolicy policy;
  RequestHead get = request("GET");
  struct Case {
    uint16_t status;
    std::vector<Header> headers;
    Skip want;
  } cases[] = {
      {200, {{"Content-Type", "text/html; charset=utf-8"}}, Skip::kNone},
      {200, {{"content-type", "Application/JSON"}, {"Content-Length", "5000"}}, Skip::kNone},
      {404, {{"Content-Type", "application/problem+json"}}, Skip::kNone},
      {200, {{"Content-Type", "image/svg+xml"}}, Skip::kNone},
      {200, {{"Content-Type", "image/png"}}, Skip::kType},
      {200, {{"Content-Type", "application/octet-stream"}}, Skip::kType},
      {200, {{"Content-Type", "text/event-stream"}}, Skip::kType},
      {200, {{"Content-Type", "text"}}, Skip::kType},
      {200, {}, Skip::kType},
      {200, {{"Content-Type", "text/plain"}, {"Content-Length", "100"}}, Skip::kSmall},
      {200, {{"Content-Type", "text/plain"}, {"Content-Length", "0"}}, Skip::kSmall},
      {200, {{"Content-Type", "text/plain"}, {"Content-Length", "256"}}, Skip::kNone},
      {200, {{"Content-Type", "text/plain"}, {"Content-Encoding", "gzip"}}, Skip::kEncoded},
      {200, {{"Content-Type", "text/plain"}, {"Content-Encoding", "identity"}}, Skip::kNone},
      {200,
       {{"Content-Type", "text/plain"}, {"Cache-Control", "public, No-Transform"}},
       Skip::kNoTransform},
      {206, {{"Content-Type", "text/plain"}, {"Content-Range", "bytes 0-9/100"}}, Skip::kStatus},
      {200, {{"Content-Type", "text/plain"}, {"Content-Range", "bytes 0-9/100"}}, Skip::kRange},
      {204, {{"Content-Type", "text/plain"}}, Skip::kStatus},
      {304, {{"Content-Type", "text/plain"}}, Skip::kStatus},
      {101, {{"Content-Type", "text/plain"}}, Skip::kStatus},
  };
  for (const Case& c : cases) {
    ResponseHead r = response(c.status, c.headers);
    EXPECT_EQ(compressionSkip(get, r, policy), c.want)
        << c.status << " " << (c.headers.empty() ? "" : c.headers.back().value);
  }
  ResponseHead html = response(200, {{"Content-Type", "text/html"}});
  EXPECT_EQ(compressionSkip(request("HEAD"), html, policy), Skip::kMethod);
  EXPECT_EQ(compressionSkip(request("GET", {{"Cache-Control", "no-transform"}}), html, policy),
            Skip::kNoTransform);

  CompressPolicy custom;
  custom.types = {"application/x-custom"};
  custom.min_length = 0;
  EXPECT_EQ(compressionSkip(get, html, custom), Skip::kType);
  ResponseHead x =
      response(200, {{"Content-Type", "application/x-custom"}, {"Content-Length", "1"}});
  EXPECT_EQ(compressionSkip(get, x, custom), Skip::kNone);
  EXPECT_STREQ(skipName(Skip::kNoTransform), "no_transform");
}

std::string valueOf(const ResponseHead& r, std::string_view name) {
  std::string all;
  for (const Header& h : r.headers) {
    if (iequals(h.name, name)) {
      all += (all.empty() ? "" : "|") + h.value;
    }
  }
  return all;
}

TEST(HttpCompressHeaders, Edits) {
  ResponseHead r = response(200, {{"Content-Type", "text/html"},
                                  {"Content-Length", "5000"},
                                  {"ETag", "\"abc\""},
                                  {"Accept-Ranges", "bytes"},
                                  {"Vary", "Origin"},
                                  {"Vary", "Cookie"}});
  encodeResponseHead(&r, Coding::kBrotli);
  EXPECT_EQ(valueOf(r, "content-encoding"), "br");
  EXPECT_EQ(valueOf(r, "content-length"), "");
  EXPECT_EQ(valueOf(r, "accept-ranges"), "");
  EXPECT_EQ(valueOf(r, "etag"), "W/\"abc\"");
  EXPECT_EQ(valueOf(r, "vary"), "Origin, Accept-Encoding|Cookie");
  EXPECT_EQ(valueOf(r, "content-type"), "text/html");

  ResponseHead weak = response(200, {{"ETag", "W/\"x\""}, {"Vary", "accept-encoding"}});
  encodeResponseHead(&weak, Coding::kGzip);
  EXPECT_EQ(valueOf(weak, "etag"), "W/\"x\"");
  EXPECT_EQ(valueOf(weak, "vary"), "accept-encoding");
  EXPECT_EQ(valueOf(weak, "content-encoding"), "gzip");

  ResponseHead star = response(200, {{"Vary", "*"}});
  addVaryAcceptEncoding(&star);
  EXPECT_EQ(valueOf(star, "vary"), "*");
  ResponseHead none = response(200, {});
  addVaryAcceptEncoding(&none);
  EXPECT_EQ(valueOf(none, "vary"), "Accept-Encoding");
}

std::string sample(size_t n) {
  static const char* kWords[] = {"<div class=\"row\">", "hello", " world ", "</div>\n", "42"};
  std::mt19937 rng(17);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng() % 5];
  }
  s.resize(n);
  return s;
}

std::string gunzip(const std::string& data) {
  z_stream s{};
  EXPECT_EQ(inflateInit2(&s, 16 + 15), Z_OK);
  std::string out(8 << 20, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(inflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(out.size() - s.avail_out);
  inflateEnd(&s);
  return out;
}

std::string unbrotli(const std::string& data) {
  std::string out(8 << 20, '\0');
  size_t n = out.size();
  EXPECT_EQ(BrotliDecoderDecompress(data.size(), reinterpret_cast<const uint8_t*>(data.data()), &n,
                                    reinterpret_cast<uint8_t*>(out.data())),
            BROTLI_DECODER_RESULT_SUCCESS);
  out.resize(n);
  return out;
}

// Writes `body` in pieces of `piece` bytes, flushing after every third, then finishes.
std::string encode(Encoder& e, const std::string& body, size_t piece) {
  std::string out;
  size_t i = 0;
  for (size_t at = 0; at < body.size(); at += piece, ++i) {
    EXPECT_TRUE(e.write(std::string_view(body).substr(at, piece), &out));
    if (i % 3 == 2) {
      EXPECT_TRUE(e.flush(&out));
    }
  }
  EXPECT_TRUE(e.finish(&out));
  return out;
}

TEST(HttpCompressEncoder, GzipRoundTrip) {
  for (size_t n : {0u, 1u, 5000u, 1u << 20}) {
    std::string body = sample(n);
    std::unique_ptr<Encoder> e = makeEncoder(Coding::kGzip, {});
    ASSERT_TRUE(e);
    EXPECT_EQ(e->coding(), Coding::kGzip);
    std::string out = encode(*e, body, 7000);
    ASSERT_GE(out.size(), 10u);
    EXPECT_EQ(static_cast<uint8_t>(out[0]), 0x1f);  // the gzip magic
    EXPECT_EQ(static_cast<uint8_t>(out[1]), 0x8b);
    EXPECT_EQ(gunzip(out), body);
    if (n == 1u << 20) {
      EXPECT_LT(out.size(), n / 3);
    }
    // Nothing may follow the end.
    EXPECT_FALSE(e->write("x", &out));
    EXPECT_FALSE(e->finish(&out));
  }
}

TEST(HttpCompressEncoder, BrotliRoundTrip) {
  for (size_t n : {0u, 1u, 5000u, 1u << 20}) {
    std::string body = sample(n);
    std::unique_ptr<Encoder> e = makeEncoder(Coding::kBrotli, {});
    ASSERT_TRUE(e);
    EXPECT_EQ(e->coding(), Coding::kBrotli);
    std::string out = encode(*e, body, 7000);
    EXPECT_EQ(unbrotli(out), body);
    if (n == 1u << 20) {
      EXPECT_LT(out.size(), n / 3);
    }
    EXPECT_FALSE(e->write("x", &out));
  }
}

TEST(HttpCompressEncoder, FlushMakesEverythingSoFarReadable) {
  std::string body = sample(3000);
  for (Coding c : {Coding::kGzip, Coding::kBrotli}) {
    std::unique_ptr<Encoder> e = makeEncoder(c, {});
    std::string out;
    ASSERT_TRUE(e->write(body, &out));
    ASSERT_TRUE(e->flush(&out));
    // A streaming decoder given only what went out so far has all of `body`.
    std::string got;
    if (c == Coding::kGzip) {
      z_stream s{};
      ASSERT_EQ(inflateInit2(&s, 16 + 15), Z_OK);
      got.resize(body.size() + 100);
      s.next_in = reinterpret_cast<Bytef*>(out.data());
      s.avail_in = static_cast<uInt>(out.size());
      s.next_out = reinterpret_cast<Bytef*>(got.data());
      s.avail_out = static_cast<uInt>(got.size());
      EXPECT_EQ(inflate(&s, Z_SYNC_FLUSH), Z_OK);
      got.resize(got.size() - s.avail_out);
      inflateEnd(&s);
    } else {
      BrotliDecoderState* d = BrotliDecoderCreateInstance(nullptr, nullptr, nullptr);
      size_t avail_in = out.size();
      const auto* next_in = reinterpret_cast<const uint8_t*>(out.data());
      got.resize(body.size() + 100);
      size_t avail_out = got.size();
      auto* next_out = reinterpret_cast<uint8_t*>(got.data());
      EXPECT_EQ(
          BrotliDecoderDecompressStream(d, &avail_in, &next_in, &avail_out, &next_out, nullptr),
          BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT);
      got.resize(got.size() - avail_out);
      BrotliDecoderDestroyInstance(d);
    }
    EXPECT_EQ(got, body) << codingToken(c);
  }
}

TEST(HttpCompressEncoder, MemoryAndOptions) {
  std::string body = sample(100000);
  std::unique_ptr<Encoder> gz = makeEncoder(Coding::kGzip, {});
  std::string out;
  ASSERT_TRUE(gz->write(body, &out));
  EXPECT_GE(gz->memoryBytes(), 256u * 1024);
  EXPECT_LE(gz->memoryBytes(), 270u * 1024);

  EncoderOptions small;
  small.gzip_window_bits = 12;
  small.gzip_mem_level = 6;
  small.brotli_quality = 1;
  std::unique_ptr<Encoder> gz_small = makeEncoder(Coding::kGzip, small);
  out.clear();
  ASSERT_TRUE(gz_small->write(body, &out));
  EXPECT_LE(gz_small->memoryBytes(), 60u * 1024);
  ASSERT_TRUE(gz_small->finish(&out));
  EXPECT_EQ(gunzip(out), body);

  std::unique_ptr<Encoder> br = makeEncoder(Coding::kBrotli, {});
  out.clear();
  ASSERT_TRUE(br->write(body, &out));
  EXPECT_GT(br->memoryBytes(), 0u);
  EXPECT_LE(br->memoryBytes(), 2u << 20);
  std::unique_ptr<Encoder> br_small = makeEncoder(Coding::kBrotli, small);
  out.clear();
  ASSERT_TRUE(br_small->write(body, &out));
  EXPECT_LE(br_small->memoryBytes(), 200u * 1024);
  ASSERT_TRUE(br_small->finish(&out));
  EXPECT_EQ(unbrotli(out), body);

  EXPECT_EQ(makeEncoder(Coding::kIdentity, {}), nullptr);
  EXPECT_STREQ(codingToken(Coding::kBrotli), "br");
  EXPECT_STREQ(codingToken(Coding::kIdentity), "identity");
}

}  // namespace
}  // namespace sluice::http
