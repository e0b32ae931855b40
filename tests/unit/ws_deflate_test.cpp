#include "proxy/ws/deflate.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <string>
#include <vector>

namespace sluice::ws {
namespace {

using Status = Inflater::Status;

std::vector<DeflateParams> offersOf(std::vector<std::string_view> lines) {
  return parseDeflateOffers(std::span<const std::string_view>(lines));
}

std::string answerOf(std::string_view request, const DeflateConfig& config) {
  std::vector<DeflateParams> offers = offersOf({request});
  std::optional<DeflateAnswer> a = answerDeflateOffers(offers, config);
  return a ? formatDeflateParams(a->response) : "(none)";
}

BackendDeflateAnswer backendAnswer(std::string_view answer, std::string_view offer) {
  std::vector<DeflateParams> offers = offersOf({offer});
  std::vector<std::string_view> lines = {answer};
  return checkBackendDeflateAnswer(lines, offers);
}

// ---- parsing offers ----

TEST(WsDeflateOffers, BrowsersOffer) {
  std::vector<DeflateParams> offers =
      offersOf({"permessage-deflate; client_max_window_bits"});  // Chrome, Firefox
  ASSERT_EQ(offers.size(), 1u);
  EXPECT_TRUE(offers[0].client_max_window_bits);
  EXPECT_EQ(offers[0].client_max_window_bits_value, 0);
  EXPECT_EQ(offers[0].server_max_window_bits, 0);
  EXPECT_FALSE(offers[0].server_no_context_takeover);
}

TEST(WsDeflateOffers, SeveralOffersOverSeveralLinesInOrder) {
  std::vector<DeflateParams> offers = offersOf({
      "x-webkit-deflate-frame, PerMessage-Deflate; Server_Max_Window_Bits=10; "
      "client_max_window_bits=\"12\"",
      " , permessage-deflate ;\tserver_no_context_takeover ; client_no_context_takeover,"
      "foo; bar=\"a,b;c\", permessage-deflate",
  });
  ASSERT_EQ(offers.size(), 3u);
  EXPECT_EQ(offers[0].server_max_window_bits, 10);
  EXPECT_EQ(offers[0].client_max_window_bits_value, 12);
  EXPECT_TRUE(offers[1].server_no_context_takeover);
  EXPECT_TRUE(offers[1].client_no_context_takeover);
  EXPECT_EQ(offers[2], DeflateParams{});
}

TEST(WsDeflateOffers, InvalidOffersAreDeclinedAlone) {
  const char* bad[] = {
      "permessage-deflate; server_max_window_bits",        // needs a value
      "permessage-deflate; server_max_window_bits=7",      // below 8
      "permessage-deflate; server_max_window_bits=16",     // above 15
      "permessage-deflate; server_max_window_bits=010",    // leading zero
      "permessage-deflate; client_max_window_bits=1a",     // not a number
      "permessage-deflate; client_max_window_bits=\"\"",   // empty
      "permessage-deflate; server_no_context_takeover=1",  // takes no value
      "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
      "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
      "permessage-deflate; mystery",                       // unknown parameter
      "permessage-deflate; =10",                           // no name
      "permessage-deflate server_no_context_takeover",     // missing ';'
      "permessage-deflate; client_max_window_bits=10 11",  // junk after the value
  };
  for (const char* b : bad) {
    std::string line = std::string(b) + ", permessage-deflate; server_max_window_bits=11";
    std::vector<DeflateParams> offers = offersOf({line});
    ASSERT_EQ(offers.size(), 1u) << b;
    EXPECT_EQ(offers[0].server_max_window_bits, 11) << b;
  }
  EXPECT_TRUE(offersOf({"", "  ", ",,", "\"", "permessage-deflate;"}).empty());
  // An unterminated quoted string swallows the rest of its line (commas included).
  EXPECT_TRUE(
      offersOf({"permessage-deflate; server_max_window_bits=\"10, permessage-deflate"}).empty());
}

TEST(WsDeflateOffers, FromHeaders) {
  std::vector<http::Header> headers = {
      {"Host", "x"},
      {"Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=9"},
      {"sec-websocket-extensions", "permessage-deflate"},
  };
  std::vector<DeflateParams> offers = parseDeflateOffers(headers);
  ASSERT_EQ(offers.size(), 2u);
  EXPECT_EQ(offers[0].server_max_window_bits, 9);
}

TEST(WsDeflateOffers, FormatRoundTrips) {
  DeflateParams p{true, true, 10, true, 0};
  std::string s = formatDeflateParams(p);
  EXPECT_EQ(s,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits");
  std::vector<DeflateParams> back = offersOf({s});
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0], p);
  std::vector<DeflateParams> two = {p, DeflateParams{}};
  EXPECT_EQ(formatDeflateOffers(two), s + ", permessage-deflate");
}

// ---- answering a client ----

TEST(WsDeflateAnswer, Table) {
  DeflateConfig shared;  // the defaults: full windows, no context takeover either way
  DeflateConfig takeover;
  takeover.deflate_no_context_takeover = takeover.inflate_no_context_takeover = false;
  DeflateConfig small = takeover;
  small.deflate_window_bits = 10;
  small.inflate_window_bits = 9;
  DeflateConfig off;
  off.enabled = false;

  struct Case {
    const char* offer;
    const DeflateConfig* config;
    const char* answer;
  } cases[] = {
      {"permessage-deflate; client_max_window_bits", &shared,
       "permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
      {"permessage-deflate; client_max_window_bits", &takeover, "permessage-deflate"},
      {"permessage-deflate", &takeover, "permessage-deflate"},
      // sluice's window is smaller than 15: said even though not asked.
      {"permessage-deflate", &small, "permessage-deflate; server_max_window_bits=10"},
      // A client window is asked only of a client that offered client_max_window_bits.
      {"permessage-deflate; client_max_window_bits", &small,
       "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"},
      {"permessage-deflate; client_max_window_bits=12", &small,
       "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"},
      {"permessage-deflate; client_max_window_bits=12", &takeover, "permessage-deflate"},
      // The client's server_max_window_bits must be answered, with the same or a smaller value.
      {"permessage-deflate; server_max_window_bits=12", &takeover,
       "permessage-deflate; server_max_window_bits=12"},
      {"permessage-deflate; server_max_window_bits=12", &small,
       "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=9", &takeover,
       "permessage-deflate; server_max_window_bits=9"},
      // ... and its server_no_context_takeover repeated.
      {"permessage-deflate; server_no_context_takeover", &takeover,
       "permessage-deflate; server_no_context_takeover"},
      // Window 8 is declined: the next offer is taken.
      {"permessage-deflate; server_max_window_bits=8, permessage-deflate", &takeover,
       "permessage-deflate"},
      {"permessage-deflate; server_max_window_bits=8", &takeover, "(none)"},
      {"permessage-deflate; client_max_window_bits=8", &takeover, "permessage-deflate"},
      {"permessage-deflate", &off, "(none)"},
      {"x-webkit-deflate-frame", &shared, "(none)"},
      {"", &shared, "(none)"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(answerOf(c.offer, *c.config), c.answer) << c.offer;
    // Whatever sluice answers is an answer a strict client accepts, agreeing on the same terms.
    std::vector<DeflateParams> offers = offersOf({c.offer});
    if (std::optional<DeflateAnswer> a = answerDeflateOffers(offers, *c.config)) {
      std::string line = formatDeflateParams(a->response);
      std::vector<std::string_view> lines = {line};
      BackendDeflateAnswer check = checkBackendDeflateAnswer(lines, offers);
      EXPECT_EQ(check.error, nullptr) << c.offer << ": " << check.error;
      EXPECT_EQ(check.offer, a->offer) << c.offer;
      EXPECT_EQ(check.negotiated, a->negotiated) << c.offer;
    }
  }
}

TEST(WsDeflateAnswer, NegotiatedDirections) {
  DeflateConfig small;
  small.deflate_window_bits = 10;
  small.inflate_window_bits = 9;
  small.deflate_no_context_takeover = true;
  small.inflate_no_context_takeover = false;
  std::vector<DeflateParams> offers =
      offersOf({"permessage-deflate; client_max_window_bits; client_no_context_takeover"});
  std::optional<DeflateAnswer> a = answerDeflateOffers(offers, small);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->negotiated.server_to_client, (DeflateDirection{10, true}));
  // The client said it will not take context over; that binds it without an answer.
  EXPECT_EQ(a->negotiated.client_to_server, (DeflateDirection{9, true}));
  EXPECT_TRUE(canDeflate(a->negotiated.server_to_client));

  // A value the client offered binds it even when sluice does not repeat it.
  offers = offersOf({"permessage-deflate; client_max_window_bits=11"});
  DeflateConfig full;
  a = answerDeflateOffers(offers, full);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->negotiated.client_to_server.window_bits, 11);
  EXPECT_EQ(a->negotiated.server_to_client.window_bits, 15);
}

TEST(WsDeflateAnswer, ConfigWindowsAreClamped) {
  DeflateConfig c;
  c.deflate_window_bits = 8;
  c.inflate_window_bits = 3;
  c.deflate_no_context_takeover = c.inflate_no_context_takeover = false;
  EXPECT_EQ(answerOf("permessage-deflate; client_max_window_bits", c),
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9");
}

// ---- the backend leg ----

TEST(WsDeflateBackend, Offer) {
  EXPECT_EQ(formatDeflateParams(backendDeflateOffer(DeflateConfig{})),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits");
  DeflateConfig c;
  c.deflate_window_bits = 11;
  c.inflate_window_bits = 12;
  c.deflate_no_context_takeover = c.inflate_no_context_takeover = false;
  EXPECT_EQ(formatDeflateParams(backendDeflateOffer(c)),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=11");
}

TEST(WsDeflateBackend, ValidAnswers) {
  const char* offer = "permessage-deflate; server_max_window_bits=12; client_max_window_bits";
  BackendDeflateAnswer a = backendAnswer("permessage-deflate; server_max_window_bits=12", offer);
  EXPECT_EQ(a.error, nullptr);
  EXPECT_TRUE(a.accepted);
  EXPECT_EQ(a.negotiated.server_to_client, (DeflateDirection{12, false}));
  EXPECT_EQ(a.negotiated.client_to_server, (DeflateDirection{15, false}));

  a = backendAnswer(
      "permessage-deflate;server_max_window_bits=\"9\";client_max_window_bits=10;"
      "server_no_context_takeover;client_no_context_takeover",
      offer);
  EXPECT_EQ(a.error, nullptr);
  EXPECT_EQ(a.negotiated.server_to_client, (DeflateDirection{9, true}));
  EXPECT_EQ(a.negotiated.client_to_server, (DeflateDirection{10, true}));

  // An 8-bit window for sluice's compressor is the backend's right; sluice then sends plain.
  a = backendAnswer("permessage-deflate; server_max_window_bits=12; client_max_window_bits=8",
                    offer);
  EXPECT_EQ(a.error, nullptr);
  EXPECT_FALSE(canDeflate(a.negotiated.client_to_server));

  // No answer: no compression, no error.
  std::vector<DeflateParams> offers = offersOf({offer});
  a = checkBackendDeflateAnswer(std::vector<http::Header>{{"Upgrade", "websocket"}}, offers);
  EXPECT_EQ(a.error, nullptr);
  EXPECT_FALSE(a.accepted);

  // The answer is matched against each offer in turn (passthrough sends the client's offers).
  std::vector<DeflateParams> two =
      offersOf({"permessage-deflate; server_max_window_bits=10, permessage-deflate"});
  std::vector<std::string_view> lines = {"permessage-deflate"};
  a = checkBackendDeflateAnswer(lines, two);
  EXPECT_EQ(a.error, nullptr);
  EXPECT_EQ(a.offer, 1u);
}

TEST(WsDeflateBackend, InvalidAnswers) {
  const char* offer = "permessage-deflate; server_max_window_bits=12; server_no_context_takeover";
  const char* bad[] = {
      "permessage-deflate; server_no_context_takeover",  // server_max_window_bits not answered
      "permessage-deflate; server_max_window_bits=13; server_no_context_takeover",  // larger
      "permessage-deflate; server_max_window_bits=12",  // server_no_context_takeover dropped
      "permessage-deflate; server_max_window_bits=12; server_no_context_takeover; "
      "client_max_window_bits=10",  // never offered
      "permessage-deflate; server_max_window_bits=12; server_no_context_takeover; foo",
      "permessage-deflate; server_max_window_bits=12; server_max_window_bits=12; "
      "server_no_context_takeover",
      "permessage-deflate; server_max_window_bits=16; server_no_context_takeover",
      "x-webkit-deflate-frame",
      "permessage-deflate; server_max_window_bits=12; server_no_context_takeover, "
      "permessage-deflate; server_max_window_bits=12; server_no_context_takeover",
      "permessage-deflate; server_max_window_bits=12; server_no_context_takeover; \"",
  };
  for (const char* b : bad) {
    BackendDeflateAnswer a = backendAnswer(b, offer);
    EXPECT_NE(a.error, nullptr) << b;
  }
  // client_max_window_bits needs a value in an answer, and no more than offered.
  const char* offer2 = "permessage-deflate; client_max_window_bits=11";
  EXPECT_NE(backendAnswer("permessage-deflate; client_max_window_bits", offer2).error, nullptr);
  EXPECT_NE(backendAnswer("permessage-deflate; client_max_window_bits=12", offer2).error, nullptr);
  EXPECT_EQ(backendAnswer("permessage-deflate; client_max_window_bits=11", offer2).error, nullptr);
  // Nothing offered: any permessage-deflate answer is an error.
  std::vector<std::string_view> lines = {"permessage-deflate"};
  EXPECT_NE(checkBackendDeflateAnswer(lines, {}).error, nullptr);
}

// ---- the codec ----

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) {
    s.push_back(static_cast<char>(c));
  }
  return s;
}

std::string inflateAll(Inflater& inf, const std::string& data, Status* status = nullptr) {
  std::string out;
  Status s = inf.feed(data, &out);
  if (s == Status::kOk) {
    s = inf.finishMessage(&out);
  }
  if (status != nullptr) {
    *status = s;
  } else {
    EXPECT_EQ(s, Status::kOk);
  }
  return out;
}

std::string deflateAll(Deflater& def, std::string_view data) {
  std::string out;
  EXPECT_TRUE(def.compress(data, true, &out));
  return out;
}

// Inflates `data` (a message's payload without the tail) with plain zlib: an independent check.
std::string zlibInflate(std::string data, int window_bits) {
  data.append("\x00\x00\xff\xff", 4);
  z_stream s{};
  EXPECT_EQ(inflateInit2(&s, -window_bits), Z_OK);
  std::string out(1 << 20, '\0');
  s.next_in = reinterpret_cast<Bytef*>(data.data());
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&s, Z_SYNC_FLUSH);
  EXPECT_TRUE(rc == Z_OK || rc == Z_STREAM_END) << rc;
  EXPECT_EQ(s.avail_in, 0u);
  out.resize(out.size() - s.avail_out);
  inflateEnd(&s);
  return out;
}

std::string text(size_t n, uint32_t seed) {
  static const char* kWords[] = {"alpha ", "beta ", "{\"id\":", "gamma, ", "delta\n", "42 "};
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng() % 6];
  }
  s.resize(n);
  return s;
}

std::string noise(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

TEST(WsDeflateCodec, Rfc7692Examples) {
  // 7.2.3.1: "Hello" compressed, then the same again with context takeover.
  Inflater takeover({});
  EXPECT_EQ(inflateAll(takeover, bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00})), "Hello");
  EXPECT_EQ(inflateAll(takeover, bytes({0xf2, 0x00, 0x11, 0x00, 0x00})), "Hello");
  // 7.2.3.3: a stored block. 7.2.3.4: a final block (BFINAL) ends the data.
  Inflater inf({});
  EXPECT_EQ(inflateAll(inf, bytes({0x00, 0x05, 0x00, 0xfa, 0xff, 'H', 'e', 'l', 'l', 'o', 0x00})),
            "Hello");
  EXPECT_EQ(inflateAll(inf, bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00})), "Hello");
  // After a final block, the next message may still refer to the window.
  EXPECT_EQ(inflateAll(inf, bytes({0xf2, 0x00, 0x11, 0x00, 0x00})), "Hello");
  // 7.2.3.6: an empty message.
  EXPECT_EQ(inflateAll(inf, bytes({0x00})), "");

  // sluice's deflater writes the same bytes as the RFC's first example.
  Deflater def({});
  EXPECT_EQ(deflateAll(def, "Hello"), bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}));
  Deflater keep(Deflater::Options{.no_context_takeover = false});
  deflateAll(keep, "Hello");
  EXPECT_EQ(deflateAll(keep, "Hello"), bytes({0xf2, 0x00, 0x11, 0x00, 0x00}));
}

TEST(WsDeflateCodec, PythonZlibVectorsWindow10WithTakeover) {
  // Python's zlib.compressobj(6, DEFLATED, -10, 8), compress + flush(Z_SYNC_FLUSH), the tail cut.
  const std::string m1(
      "\xaa\x56\x2a\xa9\x2c\x48\x55\xb2\x52\x2a\x2d\x48\x49\x2c\x49\x55\xd2\x51\xca\x4c\x51\xb2"
      "\x32\xd4\x51\x2a\x4b\xcc\x29\x05\x89\x67\xa4\xe6\xe4\xe4\x2b\x20\x91\x4a\xb5\x00\x00",
      43);
  const std::string m2("\xaa\xc6\xaa\xc7\x08\xaf\x1e\x00\x00", 9);
  Inflater inf(Inflater::Options{.window_bits = 10});
  EXPECT_EQ(inflateAll(inf, m1), R"({"type":"update","id":1,"value":"hello hello hello"})");
  EXPECT_EQ(inflateAll(inf, m2), R"({"type":"update","id":2,"value":"hello hello hello"})");
}

TEST(WsDeflateCodec, TailIsStrippedAndEmptyMessageIsOneByte) {
  Deflater def({});
  std::string m = text(5000, 1);
  std::string c = deflateAll(def, m);
  ASSERT_GE(c.size(), 4u);
  EXPECT_NE(c.substr(c.size() - 4), std::string("\x00\x00\xff\xff", 4));
  EXPECT_EQ(zlibInflate(c, 15), m);
  EXPECT_EQ(deflateAll(def, ""), std::string(1, '\0'));
  EXPECT_EQ(zlibInflate(std::string(1, '\0'), 15), "");

  // With context takeover too, and an empty last piece after a flushed one.
  Deflater keep(Deflater::Options{.no_context_takeover = false});
  deflateAll(keep, "abc");
  EXPECT_EQ(deflateAll(keep, ""), std::string(1, '\0'));
  std::string pieces;
  ASSERT_TRUE(keep.compress("hello ", false, &pieces));
  ASSERT_TRUE(keep.compress("", true, &pieces));
  Inflater inf({});
  Inflater fresh({});
  std::string out;
  // A fresh inflater that missed "abc" still reads this: no reference reaches back that far.
  EXPECT_EQ(inflateAll(fresh, pieces), "hello ");

  // An empty payload (RSV1 set, no byte) is taken for an empty message.
  EXPECT_EQ(inflateAll(inf, ""), "");
}

TEST(WsDeflateCodec, ContextTakeoverAcrossMessages) {
  std::string m = text(400, 7);
  Deflater keep(Deflater::Options{.no_context_takeover = false, .threshold = 0});
  Deflater fresh({});
  std::string k1 = deflateAll(keep, m);
  std::string k2 = deflateAll(keep, m);
  std::string f1 = deflateAll(fresh, m);
  std::string f2 = deflateAll(fresh, m);
  EXPECT_LT(k2.size(), k1.size() / 4);  // the second refers to the first
  EXPECT_EQ(f1, f2);                    // nothing carried over
  EXPECT_EQ(k1, f1);

  Inflater inf({});
  EXPECT_EQ(inflateAll(inf, k1), m);
  EXPECT_EQ(inflateAll(inf, k2), m);
  // An inflater reset per message cannot read a message that refers to the previous one.
  Inflater forgetful(Inflater::Options{.no_context_takeover = true});
  EXPECT_EQ(inflateAll(forgetful, k1), m);
  Status s;
  inflateAll(forgetful, k2, &s);
  EXPECT_EQ(s, Status::kCorrupt);
}

TEST(WsDeflateCodec, WindowSizes) {
  // Matches 1000 bytes back: fine within window 15, too far for window 9 (512 bytes). zlib
  // checks distances against its window only once the output reaches past one output buffer
  // (16 KiB): within it, the buffer itself serves as history. So the message is long.
  std::string block = noise(1000, 3);
  std::string m;
  for (int i = 0; i < 40; ++i) {
    m += block;
  }
  Deflater d9(Deflater::Options{.window_bits = 9});
  std::string c9 = deflateAll(d9, m);
  EXPECT_EQ(zlibInflate(c9, 9), m);
  Inflater i9(Inflater::Options{.window_bits = 9});
  EXPECT_EQ(inflateAll(i9, c9), m);

  Deflater d15({});
  std::string c15 = deflateAll(d15, m);
  EXPECT_LT(c15.size(), c9.size());
  Status s;
  std::string out = inflateAll(i9, c15, &s);
  EXPECT_EQ(s, Status::kCorrupt);
  EXPECT_LE(out.size(), m.size());
  EXPECT_EQ(i9.memoryBytes(), 0u);                 // the broken stream is gone
  EXPECT_EQ(i9.feed(c9, &out), Status::kCorrupt);  // until reset()
  i9.reset();
  EXPECT_EQ(inflateAll(i9, c9), m);

  // Window 8 is never used to compress (zlib refuses it); the inflater reads with 9.
  Deflater d8(Deflater::Options{.window_bits = 8});
  EXPECT_EQ(d8.options().window_bits, 9);
  Inflater i8(Inflater::Options{.window_bits = 8});
  EXPECT_EQ(inflateAll(i8, deflateAll(d8, m)), m);
}

TEST(WsDeflateCodec, FedAByteAtATime) {
  std::string m1 = text(70000, 11);  // more than one 16 KiB output buffer
  std::string m2 = text(3000, 12);
  Deflater def(Deflater::Options{.no_context_takeover = false});
  // The message compressed in three pieces, as a relay streaming its frames would.
  std::string c1;
  ASSERT_TRUE(def.compress(std::string_view(m1).substr(0, 100), false, &c1));
  ASSERT_TRUE(def.compress(std::string_view(m1).substr(100, 40000), false, &c1));
  ASSERT_TRUE(def.compress(std::string_view(m1).substr(40100), true, &c1));
  std::string c2 = deflateAll(def, m2);

  Inflater inf({});
  for (const auto& [c, m] : {std::pair{c1, m1}, std::pair{c2, m2}}) {
    std::string out;
    for (char b : c) {
      ASSERT_EQ(inf.feed(std::string_view(&b, 1), &out), Status::kOk);
    }
    ASSERT_EQ(inf.finishMessage(&out), Status::kOk);
    EXPECT_EQ(out, m);
  }
}

TEST(WsDeflateCodec, RoundTripsNoiseAndText) {
  for (size_t n : {1u, 100u, 20000u, 300000u}) {
    for (const std::string& m : {noise(n, static_cast<uint32_t>(n)), text(n, 5)}) {
      Deflater def({});
      Inflater inf({});
      EXPECT_EQ(inflateAll(inf, deflateAll(def, m)), m);
    }
  }
}

TEST(WsDeflateCodec, TruncatedOrGarbageIsCorrupt) {
  Deflater def({});
  std::string c = deflateAll(def, text(5000, 9));
  Status s;
  Inflater inf(Inflater::Options{.no_context_takeover = true});
  inflateAll(inf, c.substr(0, c.size() / 2), &s);
  EXPECT_EQ(s, Status::kCorrupt);
  inf.reset();
  inflateAll(inf, bytes({0xff, 0xff, 0xff, 0xff, 0x00}), &s);
  EXPECT_EQ(s, Status::kCorrupt);
}

// 1 MiB of compressed zeros (a deflate stream of sync-flushed pieces can be repeated as is),
// inflating to about 1 GiB.
std::string zeroBomb() {
  Deflater def(Deflater::Options{.level = 9});
  std::string piece;
  EXPECT_TRUE(def.compress(std::string(1 << 20, '\0'), false, &piece));
  std::string bomb;
  while (bomb.size() < (1u << 20)) {
    bomb += piece;
  }
  return bomb;
}

TEST(WsDeflateCodec, BombStopsAtTheBound) {
  const std::string bomb = zeroBomb();
  const uint64_t bound = 1 << 20;
  Inflater inf(Inflater::Options{.max_message_bytes = bound});
  std::string out;
  EXPECT_EQ(inf.feed(bomb, &out), Status::kTooBig);
  EXPECT_EQ(out.size(), bound);
  EXPECT_EQ(inf.messageBytes(), bound);
  EXPECT_LE(out.capacity(), 2 * bound + 64);  // std::string's doubling, nothing more
  EXPECT_EQ(inf.memoryBytes(), 0u);
  EXPECT_EQ(inf.finishMessage(&out), Status::kTooBig);
  EXPECT_EQ(out.size(), bound);

  // Fed in frames: the same.
  Inflater frames(Inflater::Options{.max_message_bytes = bound});
  out.clear();
  Status s = Status::kOk;
  size_t fed = 0;
  for (; fed < bomb.size() && s == Status::kOk; fed += 4096) {
    s = frames.feed(std::string_view(bomb).substr(fed, 4096), &out);
    EXPECT_LE(frames.memoryBytes(), 48u * 1024);
  }
  EXPECT_EQ(s, Status::kTooBig);
  EXPECT_LT(fed, 8u * 1024);  // stopped within the first KiB of input or so
  EXPECT_EQ(out.size(), bound);

  // The ratio limit catches it earlier, whatever the bound.
  Inflater ratio(Inflater::Options{.max_message_bytes = 1ull << 40, .max_ratio = 100});
  out.clear();
  EXPECT_EQ(ratio.feed(bomb, &out), Status::kRatio);
  EXPECT_LT(out.size(), 200u * 1024);
  // ... and lets an ordinary message through.
  Inflater ok(Inflater::Options{.max_ratio = 100});
  Deflater def({});
  std::string m = text(200000, 4);
  EXPECT_EQ(inflateAll(ok, deflateAll(def, m)), m);
}

TEST(WsDeflateCodec, MessageAtTheBoundPasses) {
  std::string m = text(4096, 8);
  Deflater def({});
  std::string c = deflateAll(def, m);
  Inflater exact(Inflater::Options{.max_message_bytes = 4096});
  EXPECT_EQ(inflateAll(exact, c), m);
  Inflater under(Inflater::Options{.max_message_bytes = 4095});
  Status s;
  inflateAll(under, c, &s);
  EXPECT_EQ(s, Status::kTooBig);
}

TEST(WsDeflateCodec, MemoryIsFreedBetweenMessagesWithoutTakeover) {
  std::string m = text(10000, 2);
  Deflater per_connection({});  // no takeover, release after every message
  std::string c = deflateAll(per_connection, m);
  EXPECT_EQ(per_connection.memoryBytes(), 0u);

  Deflater shared(Deflater::Options{.release_after_message = false});
  deflateAll(shared, m);
  // 2^17 (window and chain) + 2^17 (hash and block buffer) + the state, at window 15 / level 8.
  EXPECT_GE(shared.memoryBytes(), 256u * 1024);
  EXPECT_LE(shared.memoryBytes(), 270u * 1024);
  EXPECT_EQ(deflateAll(shared, m), c);  // reset, not carried over
  shared.release();
  EXPECT_EQ(shared.memoryBytes(), 0u);

  Deflater small(Deflater::Options{.window_bits = 9, .mem_level = 1, .no_context_takeover = false});
  deflateAll(small, m);
  EXPECT_LE(small.memoryBytes(), 10u * 1024);

  Inflater fresh(Inflater::Options{.no_context_takeover = true});
  std::string out;
  ASSERT_EQ(fresh.feed(c.substr(0, 100), &out), Status::kOk);
  EXPECT_GT(fresh.memoryBytes(), 7000u);  // the state and a 32 KiB window, while the message lasts
  ASSERT_EQ(fresh.feed(c.substr(100), &out), Status::kOk);
  ASSERT_EQ(fresh.finishMessage(&out), Status::kOk);
  EXPECT_EQ(fresh.memoryBytes(), 0u);

  Inflater keep({});
  inflateAll(keep, c);
  EXPECT_GT(keep.memoryBytes(), 32u * 1024);
}

// Without context takeover a finished stream is reset and kept for the thread's next message:
// deflaters and inflaters of different parameters, interleaved, each get a stream that fits
// and produce what fresh ones produce.
TEST(WsDeflateCodec, StreamsKeptBetweenMessagesFitTheirUser) {
  const std::string m = text(5000, 3);
  std::vector<Deflater::Options> kinds = {
      {}, {.window_bits = 9}, {.mem_level = 1}, {.level = 1}, {.window_bits = 10, .level = 9}};
  std::vector<std::string> expected;
  for (const auto& k : kinds) {
    Deflater fresh(k);
    expected.push_back(deflateAll(fresh, m));
  }
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < kinds.size(); ++i) {
      Deflater d(kinds[i]);
      std::string c = deflateAll(d, m);
      EXPECT_EQ(c, expected[i]) << "kind " << i << " round " << round;
      EXPECT_EQ(d.memoryBytes(), 0u);  // nothing held by the connection between messages
      Inflater in(
          Inflater::Options{.window_bits = kinds[i].window_bits, .no_context_takeover = true});
      EXPECT_EQ(inflateAll(in, c), m);
      EXPECT_EQ(in.memoryBytes(), 0u);
    }
  }
  // A stream that failed mid-message is never kept: the next message inflates cleanly.
  Inflater bad(Inflater::Options{.no_context_takeover = true});
  std::string out;
  std::string garbage = "\xff\xff\xff\xff garbage";
  Status s = bad.feed(garbage, &out);
  if (s == Status::kOk) {
    s = bad.finishMessage(&out);
  }
  EXPECT_NE(s, Status::kOk);
  Inflater good(Inflater::Options{.no_context_takeover = true});
  EXPECT_EQ(inflateAll(good, expected[0]), m);
}

TEST(WsDeflateCodec, Threshold) {
  Deflater def(Deflater::Options{.threshold = 100});
  EXPECT_FALSE(def.shouldCompress(99));
  EXPECT_TRUE(def.shouldCompress(100));
}

}  // namespace
}  // namespace sluice::ws
