#pragma once

// A proxied WebSocket session after the 101: two legs (client to backend, backend to client),
// each parsing its frames incrementally and enforcing RFC 6455. Frames whose payload nothing
// needs are forwarded as they arrive, straight from the read buffer; text frames (UTF-8
// validation) and messages that a payload filter inspects are held until judged, then forwarded
// unchanged (client frames keep the client's mask), or re-framed by sluice when a filter rewrote
// the message. A filter may take its time over a message: that leg then stops reading (TCP
// backpressure) until the verdict. Close frames are relayed; protocol violations, limits and
// filter decisions end the session with a close code to each side.
//
// The relay sees its two sides as net::Transports and its clock and timer through a
// filters::Dispatcher: no sockets, no libuv, no thread-local state, so unit tests drive it whole.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "filters/filter.h"
#include "proxy/filter_manager.h"
#include "proxy/metrics.h"
#include "proxy/net/transport.h"
#include "proxy/ws/codec.h"
#include "proxy/ws/deflate.h"

namespace sluice::ws {

class Relay : public FilterOwner {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // The session is over and both sides have been written what they will get: close both.
    virtual void relayFinished() = 0;
    // After the session finished: the time lingerFor() set has passed.
    virtual void lingerExpired() = 0;
  };

  // Who ended the session, for logs and metrics.
  enum class ClosedBy : uint8_t { kNone, kDownstream, kUpstream, kSluice };

  struct Stats {
    uint64_t messages[2] = {0, 0};  // indexed by filters::Direction
    uint64_t bytes[2] = {0, 0};
    uint16_t close_code = 0;
    ClosedBy closed_by = ClosedBy::kNone;
    std::string close_reason;     // the first close frame's reason text (at most 123 bytes)
    const char* cause = nullptr;  // sluice closed: why ("shutdown", "drain", "idle_timeout", ...)
  };

  // permessage-deflate as agreed on each leg (none: that leg's messages are never compressed).
  // Toward the client sluice is the server, toward the backend the client.
  struct Compression {
    std::optional<DeflateNegotiated> client;
    std::optional<DeflateNegotiated> backend;
    // Negotiated end to end (the same agreement on both legs): frames go on as they came, and a
    // compressed message is inflated only as a copy (for limits and payload filters).
    bool passthrough = false;
  };

  // `filters` may be null (a route without filters); the relay becomes its owner.
  Relay(filters::Dispatcher& dispatcher, net::Transport& client, net::Transport& backend,
        const conf::WebSocketConfig& config, std::unique_ptr<FilterManager> filters,
        metrics::RouteSlot* route_slot, Owner* owner, const Compression& compression);
  ~Relay() override;
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  void onClientData(const char* data, size_t len);
  void onBackendData(const char* data, size_t len);
  void onClientEof();
  void onBackendEof();
  void onClientWritable();
  void onBackendWritable();
  // Ends the session from sluice's side: `code` (1001 on shutdown, 1012 on drain) to both.
  void goAway(uint16_t code, std::string_view reason, const char* cause = "shutdown");
  // After the session finished: Owner::lingerExpired() once `after` has passed.
  void lingerFor(std::chrono::milliseconds after);

  const Stats& stats() const { return stats_; }
  // What the legs hold now: messages held for validation, filters or compression, and input
  // waiting behind a filter's verdict.
  size_t heldBytes() const;
  // The worker holds too much: the client gets 1008, the backend 1001.
  void shed();
  // The session's filters (null on a route without filters).
  const FilterManager* filters() const { return filters_.get(); }
  bool finished() const { return finished_; }
  // The backend's close frame has arrived.
  bool backendSentClose() const { return down_.close_received; }
  // The client's or the backend's connection has ended (EOF or error).
  bool clientEnded() const { return up_.eof; }
  bool backendEnded() const { return down_.eof; }

  static const char* closedByName(ClosedBy by);

  // FilterOwner
  void filterLocalReply(uint16_t, std::string_view, std::string_view, bool) override {}
  void filterCloseWebSocket(filters::Direction from, uint16_t code,
                            std::string_view reason) override;
  void filterReadDisable(filters::Direction direction, bool disable) override;
  void onPhaseResumed(FilterOwner::Phase) override {}
  void onMessageVerdict(filters::Direction direction,
                        const filters::MessageVerdict& verdict) override;

 private:
  // Why a leg does not read (bits; it reads when none is set).
  enum Pause : uint8_t {
    kOutputFull = 1,    // its output is above the high watermark
    kFilterPause = 2,   // a filter asked (readDisable)
    kAwaitVerdict = 4,  // a filter judges a message of this leg
  };

  struct Leg : FrameParser::Handler {
    Leg(Relay* relay, bool from_client, net::Transport* in, net::Transport* out,
        std::optional<DeflateDirection> inflate, std::optional<DeflateDirection> deflate,
        bool passthrough);

    bool onFrameHeader(const FrameHeader& h, const uint8_t* raw) override;
    bool onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                        uint64_t offset) override;
    bool onFrameEnd(const FrameHeader& h) override;
    Whole onWholeFrame(const FrameHeader& h, const uint8_t* raw) override;
    // A whole control frame: `frame` as received, `body` its unmasked payload.
    bool onControlFrame(const FrameHeader& h, std::string_view frame, std::string_view body);
    // A whole message for the payload filters; returns false to stop parsing.
    bool judgeMessage();
    // After a message went on or was dropped: forget it.
    void messageDone();
    // Sends the held message on: as received, or framed by sluice (rewritten by a filter,
    // inflated, or to be compressed).
    void sendMessage(bool rewritten);
    // Inflated bytes of a compressed message; false (the session is closed) on an error.
    bool inflate(const uint8_t* data, size_t len, const FrameHeader& h, uint64_t offset);
    bool inflated(Inflater::Status status);
    // Validates the text appended to `payload` from `from` on.
    bool validateFrom(size_t from);
    // A control frame of sluice's own toward this leg's peer (masked toward a backend); waits
    // when a frame of the other direction is half-written there.
    void sendControl(uint8_t opcode, std::string_view payload);

    void feed(const char* data, size_t len);
    void releaseLargeBuffers();
    void forward(const uint8_t* p, size_t n);
    void flushRange();
    void pause(uint8_t why, bool on);
    filters::Direction direction() const {
      return from_client ? filters::Direction::kDownstreamToUpstream
                         : filters::Direction::kUpstreamToDownstream;
    }
    filters::MessageType type() const {
      return parser.messageOpcode() == kText ? filters::MessageType::kText
                                             : filters::MessageType::kBinary;
    }

    // kStream: forwarded as it comes; kHold: copied into `held` until judged; kInPlace: a text
    // frame whole in the current read, validated there and forwarded from there; kSkip: dropped.
    enum class Mode : uint8_t { kStream, kHold, kInPlace, kSkip };

    Relay* relay;
    bool from_client;
    net::Transport* in;
    net::Transport* out;
    FrameParser parser;
    Utf8Validator utf8;
    Mode mode = Mode::kStream;
    uint8_t paused = 0;           // Pause bits
    bool validate = false;        // the current message is text and validated
    bool assembling = false;      // the current message is held whole for payload filters
    bool close_received = false;  // this leg's peer sent a close frame
    bool close_sent = false;      // sluice has written a close frame toward this leg's peer
    bool mid_frame_out = false;   // a frame is half-written on `out`
    bool dropping = false;        // a filter dropped the current message: skip its other frames
    bool eof = false;
    bool compressed = false;  // the current message has RSV1 (permessage-deflate)
    bool reframe = false;     // sluice frames the current message itself: no raw bytes kept
    bool passthrough = false;
    // No payload filters, frame filters or compression toward the peer (fixed per session): a
    // one-frame data message whole in a read may take onWholeFrame()'s short way.
    bool plain = false;
    // sluice's own ping toward this leg's peer, and when it went out.
    bool ping_outstanding = false;
    uint64_t ping_sent_at = 0;
    uint64_t last_rx = 0;
    char ping_payload[8] = {};
    std::string pong_owed;  // a ping's payload to answer once the other direction's frame ends
    bool owe_pong = false;
    std::unique_ptr<Inflater> inflater;  // this leg's input is compressed
    std::unique_ptr<Deflater> deflater;  // this leg's output is compressed
    uint64_t message_bytes = 0;
    std::string held;     // raw bytes of held frames, forwarded unchanged once judged
    std::string payload;  // unmasked payload: the assembled message, then a control frame's
    // Where a control frame (which may come between two frames of a message) starts in `held`
    // and `payload`: the message's held bytes before it stay.
    size_t control_held_from = 0;
    size_t control_payload_from = 0;
    const uint8_t* fwd_begin = nullptr;
    const uint8_t* fwd_end = nullptr;
    const uint8_t* in_place = nullptr;  // the kInPlace frame's first byte
    // Input read while a message awaits a filter's verdict, or after a filter paused the leg,
    // parsed once it may go on.
    std::string backlog;
    // The assembled message the payload filters judge (it may wait for an asynchronous verdict).
    std::optional<filters::Message> message;
  };

  void fail(Leg& offender, uint16_t code, std::string_view reason);
  void sendClose(Leg& toward, uint16_t code, std::string_view reason);
  void onCloseFrame(Leg& from, uint16_t code);
  void onPeerGone(Leg& gone);
  void finish();
  void afterInput(Leg& leg);
  void armTimer();
  void onTimer();
  // Heartbeats toward one leg's peer: ping when it is quiet, give up when it does not answer.
  // Returns false when the session ended.
  bool heartbeat(Leg& toward, uint64_t now);
  bool pings(const Leg& leg) const;
  // Input kept while a leg was paused is parsed once it reads again, from the loop (never inside
  // the call that resumed it, which may come from a filter in the middle of a frame).
  void scheduleReplay();
  void replayBacklogs();
  void countMessage(size_t dir, uint64_t bytes, bool end_of_message, uint64_t message_bytes);
  Leg& leg(filters::Direction d) {
    return d == filters::Direction::kDownstreamToUpstream ? up_ : down_;
  }
  Leg& other(Leg& leg) { return &leg == &up_ ? down_ : up_; }

  filters::Dispatcher& dispatcher_;
  std::unique_ptr<filters::Timer> timer_;
  std::unique_ptr<filters::Timer> replay_timer_;
  const conf::WebSocketConfig& config_;
  std::unique_ptr<FilterManager> filters_;
  bool needs_payload_;
  bool frame_filters_;
  metrics::RouteSlot* route_slot_;  // may be null (unit tests)
  Owner* owner_;
  Leg up_;    // client -> backend: reads the client, writes the backend
  Leg down_;  // backend -> client
  Stats stats_;
  // The read being parsed (only inside Leg::feed): a text frame whole in it is validated where
  // it is and forwarded from there, instead of being copied aside first.
  const uint8_t* feed_begin_ = nullptr;
  const uint8_t* feed_end_ = nullptr;
  // A leg's held, payload or backlog buffer may have changed size since heldBytes() last
  // counted them (held_bytes_).
  mutable bool held_changed_ = true;
  mutable size_t held_bytes_ = 0;
  bool closing_ = false;  // a close handshake (relayed or sluice's own) is under way
  bool finished_ = false;
  bool lingering_ = false;
  uint64_t close_deadline_ = 0;
  uint64_t last_rx_ = 0;
  uint64_t ping_counter_ = 0;
};

}  // namespace sluice::ws
