// The WebSocket relay as a unit: in-memory transports and a hand-driven clock. Every close path,
// heartbeats, a filter pausing a direction and resuming, a filter rewriting a message, a message
// waiting for an asynchronous verdict while more input arrives, and backpressure overlapping a
// filter's pause.

#include "proxy/ws/relay.h"

#include <gtest/gtest.h>

#include "tests/unit/support/fakes.h"

namespace sluice::ws {
namespace {

using filters::Direction;
using filters::Status;

class FakeTransport : public net::Transport {
 public:
  void write(const uv_buf_t* bufs, unsigned count) override {
    for (unsigned i = 0; i < count; ++i) {
      out.append(bufs[i].base, bufs[i].len);
    }
  }
  void cork() override {}
  void uncork() override {}
  void readStart() override { reading = true; }
  void readStop() override { reading = false; }
  bool aboveHighWatermark() const override { return full; }
  void shutdown() override { shut = true; }
  void closeAfterFlush() override { closed = true; }
  void close() override { closed = true; }

  std::string out;
  bool reading = true;
  bool full = false;
  bool shut = false;
  bool closed = false;
};

struct Decoded {
  uint8_t opcode;
  std::string payload;  // unmasked
  bool masked;
};

// Frames written to a transport, decoded.
std::vector<Decoded> decode(const std::string& bytes, bool masked) {
  struct H : FrameParser::Handler {
    std::vector<Decoded> frames;
    bool onFrameHeader(const FrameHeader& h, const uint8_t*) override {
      frames.push_back({h.opcode, {}, h.masked});
      return true;
    }
    bool onFramePayload(const FrameHeader& h, const uint8_t* d, size_t n, uint64_t off) override {
      std::string piece(reinterpret_cast<const char*>(d), n);
      if (h.masked) {
        applyMask(reinterpret_cast<uint8_t*>(piece.data()), n, h.mask, off & 3);
      }
      frames.back().payload += piece;
      return true;
    }
    bool onFrameEnd(const FrameHeader&) override { return true; }
  } h;
  FrameParser p(masked);
  p.feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), h);
  EXPECT_EQ(p.error(), FrameError::kNone);
  return h.frames;
}

std::string frame(uint8_t opcode, std::string_view payload, bool masked, bool fin = true) {
  std::string out;
  const uint8_t mask[4] = {1, 2, 3, 4};
  writeFrameHeader(&out, fin, opcode, payload.size(), masked ? mask : nullptr);
  size_t start = out.size();
  out.append(payload);
  if (masked) {
    applyMask(reinterpret_cast<uint8_t*>(out.data() + start), payload.size(), mask, 0);
  }
  return out;
}

std::string closeFrame(uint16_t code, bool masked) {
  std::string body = {static_cast<char>(code >> 8), static_cast<char>(code & 0xff)};
  return frame(kClose, body, masked);
}

uint16_t closeCode(const Decoded& d) {
  return static_cast<uint16_t>(static_cast<uint8_t>(d.payload[0]) << 8 |
                               static_cast<uint8_t>(d.payload[1]));
}

// A filter that judges messages the way a test tells it to.
struct Judge {
  Status status = Status::kContinue;
  bool upper = false;
  bool pause_reads = false;
  filters::StreamCallbacks* cb = nullptr;
  int messages = 0;
};

class JudgeStream : public filters::StreamFilter {
 public:
  explicit JudgeStream(Judge* j) : j_(j) {}
  Status onMessage(filters::Message& m) override {
    j_->cb = &callbacks();
    ++j_->messages;
    if (j_->upper) {
      for (char& c : m.mutablePayload()) {
        c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
      }
    }
    if (j_->pause_reads) {
      callbacks().readDisable(m.direction(), true);
    }
    return j_->status;
  }

 private:
  Judge* j_;
};

class JudgeFilter : public filters::Filter {
 public:
  explicit JudgeFilter(Judge* j) : Filter("judge"), j_(j) {}
  uint8_t phases() const override { return kMessage; }
  std::unique_ptr<filters::StreamFilter> create() const override {
    return std::make_unique<JudgeStream>(j_);
  }

 private:
  Judge* j_;
};

class Fixture : public Relay::Owner {
 public:
  explicit Fixture(Judge* judge = nullptr, Relay::Compression compression = {}) {
    config.ping_interval = std::chrono::seconds(30);
    config.pong_timeout = std::chrono::seconds(10);
    std::unique_ptr<FilterManager> fm;
    if (judge != nullptr) {
      fm = std::make_unique<FilterManager>(
          dummy_owner, dispatcher,
          std::vector<filters::ConstFilterPtr>{std::make_shared<JudgeFilter>(judge)},
          std::vector<metrics::FilterSlot*>{}, std::vector<std::shared_ptr<filters::WorkerState>>{},
          1 << 20);
    }
    relay = std::make_unique<Relay>(dispatcher, client, backend, config, std::move(fm), nullptr,
                                    this, compression);
  }
  void relayFinished() override { finished = true; }
  void lingerExpired() override { lingered = true; }

  void fromClient(const std::string& bytes) { relay->onClientData(bytes.data(), bytes.size()); }
  void fromBackend(const std::string& bytes) { relay->onBackendData(bytes.data(), bytes.size()); }
  std::vector<Decoded> toBackend() { return decode(backend.out, true); }
  std::vector<Decoded> toClient() { return decode(client.out, false); }

  class NoOwner : public FilterOwner {
    void filterLocalReply(uint16_t, std::string_view, std::string_view, bool) override {}
    void filterCloseWebSocket(Direction, uint16_t, std::string_view) override {}
    void filterReadDisable(Direction, bool) override {}
    void onPhaseResumed(Phase) override {}
    void onMessageVerdict(Direction, const filters::MessageVerdict&) override {}
  } dummy_owner;
  testing::FakeDispatcher dispatcher;
  conf::WebSocketConfig config;
  FakeTransport client, backend;
  std::unique_ptr<Relay> relay;
  bool finished = false;
  bool lingered = false;
};

TEST(Relay, RelaysBothWaysUnchanged) {
  Fixture f;
  std::string in = frame(kText, "hello", true);
  f.fromClient(in);
  EXPECT_EQ(f.backend.out, in);  // the client's own frame and mask
  std::string back = frame(kBinary, std::string("\x00\x01", 2), false);
  f.fromBackend(back);
  EXPECT_EQ(f.client.out, back);
  EXPECT_EQ(f.relay->stats().messages[0], 1u);
  EXPECT_EQ(f.relay->stats().messages[1], 1u);
}

TEST(Relay, CloseHandshakeRelayed) {
  Fixture f;
  f.fromClient(closeFrame(1000, true));
  ASSERT_EQ(f.toBackend().size(), 1u);
  EXPECT_FALSE(f.finished);  // waiting for the backend's answer
  f.fromBackend(closeFrame(1000, false));
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(f.relay->stats().closed_by, Relay::ClosedBy::kDownstream);
  EXPECT_EQ(f.relay->stats().close_code, 1000);
}

TEST(Relay, CloseHandshakeTimesOut) {
  Fixture f;
  f.fromClient(closeFrame(1000, true));
  f.dispatcher.advance(4900);
  EXPECT_FALSE(f.finished);
  f.dispatcher.advance(200);
  EXPECT_TRUE(f.finished);
}

TEST(Relay, ProtocolErrorClosesBothSides) {
  Fixture f;
  f.fromClient(frame(kText, "unmasked", false));  // a client frame must be masked
  EXPECT_TRUE(f.finished);
  auto c = f.toClient();
  auto b = f.toBackend();
  ASSERT_EQ(c.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(closeCode(c[0]), 1002);
  EXPECT_EQ(closeCode(b[0]), 1001);
  EXPECT_EQ(f.relay->stats().closed_by, Relay::ClosedBy::kSluice);
}

TEST(Relay, InvalidUtf8AndTooBig) {
  {
    Fixture f;
    f.fromClient(frame(kText, "\xff\xfe", true));
    ASSERT_FALSE(f.toClient().empty());
    EXPECT_EQ(closeCode(f.toClient()[0]), 1007);
    EXPECT_TRUE(f.backend.out.find("\xff\xfe") == std::string::npos);
  }
  {
    Fixture f;
    f.config.max_message_bytes = 4;
    f.fromBackend(frame(kBinary, "12345", false));
    EXPECT_EQ(closeCode(f.toBackend()[0]), 1009);  // toward the sender
    EXPECT_EQ(closeCode(f.toClient()[0]), 1014);   // the client's backend failed
  }
}

TEST(Relay, PeerGoneWithoutClose) {
  Fixture f;
  f.relay->onBackendEof();
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toClient()[0]), 1014);
  EXPECT_EQ(f.relay->stats().close_code, 1006);
  Fixture g;
  g.relay->onClientEof();
  EXPECT_EQ(closeCode(g.toBackend()[0]), 1001);
}

TEST(Relay, GoAwayAndLinger) {
  Fixture f;
  f.relay->goAway(1012, "drain");
  EXPECT_EQ(closeCode(f.toClient()[0]), 1012);
  EXPECT_EQ(closeCode(f.toBackend()[0]), 1012);
  f.relay->lingerFor(std::chrono::milliseconds(2000));
  f.dispatcher.advance(1999);
  EXPECT_FALSE(f.lingered);
  f.dispatcher.advance(2);
  EXPECT_TRUE(f.lingered);
}

TEST(Relay, NoFrameFollowsACloseSluiceSent) {
  // Frames the client sent before it saw sluice's close: the backend has a close from sluice
  // already, and nothing may follow it, whether the frame is streamed (binary), validated in
  // place (text) or the rest of a fragmented message.
  {
    Fixture f;
    f.relay->goAway(1012, "drain");
    std::string before = f.backend.out;
    f.fromClient(frame(kBinary, "late", true));
    f.fromClient(frame(kText, "late", true));
    EXPECT_EQ(f.backend.out, before);
    EXPECT_EQ(closeCode(f.toBackend().back()), 1012);
  }
  {
    Fixture f;
    f.fromClient(frame(kBinary, "first", true, false));  // a message's first fragment
    f.relay->goAway(1012, "drain");
    std::string before = f.backend.out;
    f.fromClient(frame(kContinuation, "more", true, false));
    f.fromClient(frame(kContinuation, "last", true));
    EXPECT_EQ(f.backend.out, before);
    EXPECT_EQ(closeCode(f.toBackend().back()), 1012);
  }
}

TEST(Relay, HeartbeatsAndPongTimeout) {
  Fixture f;
  f.dispatcher.advance(30000);
  auto pings = f.toClient();
  auto backend_pings = f.toBackend();
  ASSERT_EQ(pings.size(), 1u);
  ASSERT_EQ(backend_pings.size(), 1u);  // a heartbeat toward each side
  EXPECT_EQ(pings[0].opcode, kPing);
  EXPECT_EQ(backend_pings[0].opcode, kPing);
  EXPECT_TRUE(backend_pings[0].masked);
  // Each answers its own: nothing is relayed either way.
  f.client.out.clear();
  f.backend.out.clear();
  f.fromClient(frame(kPong, pings[0].payload, true));
  f.fromBackend(frame(kPong, backend_pings[0].payload, false));
  EXPECT_TRUE(f.backend.out.empty());
  EXPECT_TRUE(f.client.out.empty());
  f.dispatcher.advance(30000);
  ASSERT_EQ(f.toClient().size(), 1u);  // the next ping; this one goes unanswered
  ASSERT_EQ(f.toBackend().size(), 1u);
  f.fromBackend(frame(kPong, f.toBackend()[0].payload, false));
  f.dispatcher.advance(10001);
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toBackend().back()), 1001);
}

TEST(Relay, BackendThatStopsAnsweringPingsIsGone) {
  Fixture f;
  f.dispatcher.advance(30000);
  f.fromClient(frame(kPong, f.toClient()[0].payload, true));
  f.dispatcher.advance(10001);
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toClient().back()), 1014);
  EXPECT_EQ(closeCode(f.toBackend().back()), 1001);
}

TEST(Relay, ControlFramesArePerLeg) {
  Fixture f;
  f.fromClient(frame(kPing, "c1", true));
  auto c = f.toClient();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].opcode, kPong);  // answered by sluice at once
  EXPECT_EQ(c[0].payload, "c1");
  EXPECT_TRUE(f.backend.out.empty());  // never forwarded
  f.fromBackend(frame(kPing, "b1", false));
  auto b = f.toBackend();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].opcode, kPong);
  EXPECT_TRUE(b[0].masked);
  EXPECT_EQ(b[0].payload, "b1");
  // Unsolicited pongs go nowhere.
  f.client.out.clear();
  f.backend.out.clear();
  f.fromClient(frame(kPong, "stray", true));
  f.fromBackend(frame(kPong, "stray", false));
  EXPECT_TRUE(f.client.out.empty());
  EXPECT_TRUE(f.backend.out.empty());
}

TEST(Relay, PingRelayRelaysControlFramesEndToEnd) {
  Fixture f;
  f.config.ping_relay = true;
  std::string ping = frame(kPing, "c1", true);
  f.fromClient(ping);
  EXPECT_EQ(f.backend.out, ping);
  EXPECT_TRUE(f.client.out.empty());
  std::string pong = frame(kPong, "c1", false);
  f.fromBackend(pong);
  EXPECT_EQ(f.client.out, pong);
}

TEST(Relay, PongWaitsForAHalfWrittenFrame) {
  Fixture f;
  // A 100-byte backend frame of which only the header and 10 bytes have come: it is half
  // written toward the client, so the pong for the client's ping must wait for its end.
  std::string big = frame(kBinary, std::string(100, 'x'), false);
  f.fromBackend(big.substr(0, 12));
  f.fromClient(frame(kPing, "p", true));
  EXPECT_EQ(f.client.out, big.substr(0, 12));
  f.fromBackend(big.substr(12));
  auto c = f.toClient();
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].opcode, kPong);
}

TEST(Relay, IdleTimeout) {
  Fixture f;
  f.config.idle_timeout = std::chrono::seconds(5);
  f.config.ping_interval = std::chrono::milliseconds(0);
  f.relay.reset();
  f.relay = std::make_unique<Relay>(f.dispatcher, f.client, f.backend, f.config, nullptr, nullptr,
                                    &f, Relay::Compression{});
  f.dispatcher.advance(4000);
  f.fromBackend(frame(kText, "keep", false));
  f.dispatcher.advance(4000);
  EXPECT_FALSE(f.finished);
  f.dispatcher.advance(1001);
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(f.relay->stats().close_code, 1001);
}

TEST(Relay, FilterRewritesAMessage) {
  Judge j;
  j.upper = true;
  Fixture f(&j);
  f.fromClient(frame(kText, "hello", true));
  auto b = f.toBackend();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].payload, "HELLO");
  EXPECT_TRUE(b[0].masked);  // toward a backend sluice masks what it frames itself
  f.fromBackend(frame(kText, "back", false));
  auto c = f.toClient();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].payload, "BACK");
  EXPECT_FALSE(c[0].masked);
}

TEST(Relay, MessageWaitsForAnAsyncVerdictAndKeepsOrder) {
  Judge j;
  j.status = Status::kStop;
  Fixture f(&j);
  // Two messages in one read: the second waits behind the first's verdict, unparsed.
  f.fromClient(frame(kText, "one", true) + frame(kText, "two", true));
  EXPECT_EQ(j.messages, 1);
  EXPECT_TRUE(f.backend.out.empty());
  EXPECT_FALSE(f.client.reading);  // that leg stops reading meanwhile
  EXPECT_TRUE(f.backend.reading);  // the other one goes on
  f.fromBackend(frame(kText, "other way", false));
  EXPECT_EQ(j.messages, 2);
  j.cb->resumeMessage(Direction::kDownstreamToUpstream, filters::MessageVerdict::forward());
  // "one" went on; "two" was parsed from the backlog and waits now.
  auto b = f.toBackend();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].payload, "one");
  EXPECT_EQ(j.messages, 3);
  j.cb->resumeMessage(Direction::kDownstreamToUpstream, filters::MessageVerdict::drop("no"));
  EXPECT_EQ(f.toBackend().size(), 1u);  // "two" was dropped
  EXPECT_TRUE(f.client.reading);
  j.cb->resumeMessage(Direction::kUpstreamToDownstream, filters::MessageVerdict::forward());
  ASSERT_EQ(f.toClient().size(), 1u);
  EXPECT_EQ(f.toClient()[0].payload, "other way");
}

// heldBytes() is recounted only after a buffer may have changed: it must still follow a text
// frame held across reads, its release, a message out with a filter, and the backlog behind it.
TEST(Relay, HeldBytesFollowsTheBuffers) {
  {
    Fixture f;
    EXPECT_LT(f.relay->heldBytes(), 1024u);
    std::string big = frame(kText, std::string(20000, 'a'), true);
    f.fromClient(big.substr(0, 10000));  // not whole in this read: held for validation
    EXPECT_GE(f.relay->heldBytes(), 10000u);
    f.fromClient(big.substr(10000));
    EXPECT_EQ(f.backend.out, big);
    EXPECT_LT(f.relay->heldBytes(), 1024u);     // released once forwarded
    f.fromClient(frame(kText, "small", true));  // validated in place
    EXPECT_LT(f.relay->heldBytes(), 1024u);
  }
  {
    Judge j;
    j.status = Status::kStop;
    Fixture f(&j);
    f.fromClient(frame(kText, std::string(8000, 'x'), true) +
                 frame(kText, std::string(9000, 'y'), true));
    EXPECT_GE(f.relay->heldBytes(), 17000u);  // the first message and the second one's bytes
    j.status = Status::kContinue;
    j.cb->resumeMessage(Direction::kDownstreamToUpstream, filters::MessageVerdict::forward());
    EXPECT_LT(f.relay->heldBytes(), 1024u);  // both forwarded, the backlog gone
    EXPECT_EQ(f.toBackend().size(), 2u);
  }
}

TEST(Relay, AsyncCloseVerdict) {
  Judge j;
  j.status = Status::kStop;
  Fixture f(&j);
  f.fromBackend(frame(kText, "bad", false));
  j.cb->resumeMessage(Direction::kUpstreamToDownstream,
                      filters::MessageVerdict::close(1008, "policy"));
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toBackend()[0]), 1008);  // toward the sender
  EXPECT_EQ(closeCode(f.toClient()[0]), 1014);
}

TEST(Relay, BackpressureAndFilterPauseOverlap) {
  Judge j;
  j.pause_reads = true;
  Fixture f(&j);
  f.backend.full = true;  // the backend does not keep up
  f.fromClient(frame(kText, "a", true));
  EXPECT_FALSE(f.client.reading);  // paused twice: watermark and the filter
  f.backend.full = false;
  f.relay->onBackendWritable();
  EXPECT_FALSE(f.client.reading);  // the watermark's end does not undo the filter's pause
  j.cb->readDisable(Direction::kDownstreamToUpstream, false);
  EXPECT_TRUE(f.client.reading);
}

TEST(Relay, AFilterPauseStopsTheReadAtTheNextFrame) {
  // A rate limit shaping the client pauses its reading in the middle of a read that holds three
  // messages: the other two wait, as if not read yet, until the filter lets the client go on.
  Judge j;
  j.pause_reads = true;
  Fixture f(&j);
  f.fromClient(frame(kText, "one", true) + frame(kText, "two", true) + frame(kText, "three", true));
  ASSERT_EQ(f.toBackend().size(), 1u);
  EXPECT_FALSE(f.client.reading);
  f.fromClient(frame(kText, "four", true));  // read before the pause took effect: after the rest
  EXPECT_EQ(f.toBackend().size(), 1u);
  j.pause_reads = false;
  j.cb->readDisable(Direction::kDownstreamToUpstream, false);
  EXPECT_TRUE(f.client.reading);
  EXPECT_EQ(f.toBackend().size(), 1u);  // not from inside the filter's call
  f.dispatcher.advance(0);
  auto out = f.toBackend();
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[1].payload, "two");
  EXPECT_EQ(out[3].payload, "four");
  EXPECT_EQ(j.messages, 4);
}

TEST(Relay, FilterCloseDuringSessionEndsItOnce) {
  Judge j;
  Fixture f(&j);
  f.fromClient(frame(kText, "x", true));
  j.cb->closeWebSocket(1008, "later");  // outside a message phase: toward the client
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toClient()[0]), 1008);
  f.finished = false;
  j.cb->closeWebSocket(1008, "again");  // the session is over: nothing more
  EXPECT_FALSE(f.finished);
}

// ---- permessage-deflate ---------------------------------------------------------------------

std::string deflated(std::string_view text) {
  Deflater d(Deflater::Options{});
  std::string out;
  EXPECT_TRUE(d.compress(text, true, &out));
  return out;
}

std::string inflated(std::string_view data) {
  Inflater i(Inflater::Options{});
  std::string out;
  EXPECT_EQ(i.feed(data, &out), Inflater::Status::kOk);
  EXPECT_EQ(i.finishMessage(&out), Inflater::Status::kOk);
  return out;
}

std::string compressedFrame(std::string_view payload, bool masked) {
  std::string out;
  const uint8_t mask[4] = {9, 8, 7, 6};
  writeFrameHeader(&out, true, kText, payload.size(), masked ? mask : nullptr, 0x4);
  size_t start = out.size();
  out.append(payload);
  if (masked) {
    applyMask(reinterpret_cast<uint8_t*>(out.data() + start), payload.size(), mask, 0);
  }
  return out;
}

Relay::Compression terminate() {
  Relay::Compression c;
  DeflateNegotiated n;
  n.server_to_client.no_context_takeover = true;
  n.client_to_server.no_context_takeover = true;
  c.client = n;
  return c;
}

TEST(RelayDeflate, TerminateInflatesTowardTheBackendAndDeflatesTowardTheClient) {
  Fixture f(nullptr, terminate());
  std::string text(1000, 'a');
  f.fromClient(compressedFrame(deflated(text), true));
  auto b = f.toBackend();
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].payload, text);  // plain toward the backend, masked by sluice
  EXPECT_TRUE(b[0].masked);
  f.fromBackend(frame(kText, text, false));
  ASSERT_GE(f.client.out.size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>(f.client.out[0]) & 0x40, 0x40);  // RSV1: compressed
  struct H : FrameParser::Handler {
    std::string payload;
    bool onFrameHeader(const FrameHeader&, const uint8_t*) override { return true; }
    bool onFramePayload(const FrameHeader&, const uint8_t* d, size_t n, uint64_t) override {
      payload.append(reinterpret_cast<const char*>(d), n);
      return true;
    }
    bool onFrameEnd(const FrameHeader&) override { return true; }
  } h;
  FrameParser p(false, true);
  p.feed(reinterpret_cast<const uint8_t*>(f.client.out.data()), f.client.out.size(), h);
  EXPECT_EQ(inflated(h.payload), text);
  EXPECT_LT(h.payload.size(), 100u);
}

TEST(RelayDeflate, SmallMessagesGoUncompressed) {
  Fixture f(nullptr, terminate());
  std::string small = frame(kText, "hi", false);
  f.fromBackend(small);
  EXPECT_EQ(f.client.out, small);  // under the threshold: as it came
}

TEST(RelayDeflate, BombStopsAtTheBound) {
  Fixture f(nullptr, terminate());
  f.config.max_message_bytes = 64 * 1024;
  f.relay = std::make_unique<Relay>(f.dispatcher, f.client, f.backend, f.config, nullptr, nullptr,
                                    &f, terminate());
  std::string zeros(10 << 20, '\0');  // 10 MiB of zeros deflate to about 10 KiB
  f.fromClient(compressedFrame(deflated(zeros), true));
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toClient().back()), 1009);
  EXPECT_TRUE(f.toBackend().size() == 1 && f.toBackend()[0].opcode == kClose);
}

TEST(RelayDeflate, CorruptCompressedDataIs1007) {
  Fixture f(nullptr, terminate());
  f.fromClient(compressedFrame("\xff\xff\xff\xff garbage", true));
  EXPECT_TRUE(f.finished);
  EXPECT_EQ(closeCode(f.toClient().back()), 1007);
}

TEST(RelayDeflate, RsvWithoutNegotiationIsStillAProtocolError) {
  Fixture f;
  f.fromClient(compressedFrame(deflated("x"), true));
  EXPECT_EQ(closeCode(f.toClient().back()), 1002);
}

TEST(RelayDeflate, PassthroughForwardsFramesAsTheyCameButJudgesTheInflatedMessage) {
  Relay::Compression c = terminate();
  c.backend = c.client;
  c.passthrough = true;
  Judge j;
  Fixture f(&j, c);
  std::string in = compressedFrame(deflated("hello hello hello"), true);
  f.fromClient(in);
  EXPECT_EQ(f.backend.out, in);  // the peer's own bytes
  EXPECT_EQ(j.messages, 1);      // the filter saw it (inflated, as a copy)
}

TEST(RelayDeflate, FiltersSeeTheInflatedPayload) {
  Judge j;
  j.upper = true;
  Fixture f(&j, terminate());
  f.fromClient(compressedFrame(deflated("shout"), true));
  ASSERT_EQ(f.toBackend().size(), 1u);
  EXPECT_EQ(f.toBackend()[0].payload, "SHOUT");
}

}  // namespace
}  // namespace sluice::ws
