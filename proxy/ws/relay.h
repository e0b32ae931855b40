#pragma once

// A proxied WebSocket session after the 101: two legs (client to backend, backend to client),
// each parsing its frames incrementally and enforcing RFC 6455. Frames whose payload nothing
// needs are forwarded as they arrive, straight from the read buffer; text frames (UTF-8
// validation) and messages that a payload filter inspects are held until judged, then forwarded
// unchanged (client frames keep the client's mask). Close frames are relayed; protocol
// violations, limits and filter decisions end the session with a close code to each side.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

#include "conf/config.h"
#include "filters/filter.h"
#include "proxy/metrics.h"
#include "proxy/net/stream.h"
#include "proxy/ws/codec.h"

namespace sluice::ws {

class Relay {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // The session is over and both sides have been written what they will get: close both.
    virtual void relayFinished() = 0;
  };

  // Who ended the session, for logs and metrics.
  enum class ClosedBy : uint8_t { kNone, kDownstream, kUpstream, kSluice };

  struct Stats {
    uint64_t messages[2] = {0, 0};  // indexed by filters::Direction
    uint64_t bytes[2] = {0, 0};
    uint16_t close_code = 0;
    ClosedBy closed_by = ClosedBy::kNone;
  };

  // `timer` is the owner's; when it fires, the owner calls onTimer() (via `timer_cb`).
  Relay(uv_loop_t* loop, net::Stream& client, net::Stream& backend, uv_timer_t* timer,
        uv_timer_cb timer_cb, const conf::WebSocketConfig& config,
        std::vector<std::unique_ptr<filters::StreamFilter>> filters,
        std::vector<metrics::FilterSlot*> filter_slots, bool needs_payload,
        metrics::RouteSlot* route_slot, Owner* owner);
  ~Relay();

  void onClientData(const char* data, size_t len);
  void onBackendData(const char* data, size_t len);
  void onClientEof();
  void onBackendEof();
  void onClientWritable();
  void onBackendWritable();
  void onTimer();
  // Ends the session from sluice's side: `code` (1001 on shutdown, 1012 on drain) to both.
  void goAway(uint16_t code, std::string_view reason);

  const Stats& stats() const { return stats_; }
  bool finished() const { return finished_; }
  // The backend's close frame has arrived.
  bool backendSentClose() const { return down_.close_received; }
  // The client's or the backend's connection has ended (EOF or error).
  bool clientEnded() const { return up_.eof; }
  bool backendEnded() const { return down_.eof; }

  static const char* closedByName(ClosedBy by);

 private:
  struct Leg : FrameParser::Handler {
    Leg(Relay* relay, bool from_client, net::Stream* in, net::Stream* out);

    bool onFrameHeader(const FrameHeader& h, const uint8_t* raw) override;
    bool onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                        uint64_t offset) override;
    bool onFrameEnd(const FrameHeader& h) override;
    // A whole control frame: `frame` as received, `body` its unmasked payload.
    bool onControlFrame(const FrameHeader& h, std::string_view frame, std::string_view body);

    void feed(const char* data, size_t len);
    void releaseLargeBuffers();
    void forward(const uint8_t* p, size_t n);
    void flushRange();
    filters::Direction direction() const {
      return from_client ? filters::Direction::kDownstreamToUpstream
                         : filters::Direction::kUpstreamToDownstream;
    }

    // kStream: forwarded as it comes; kHold: copied into `held` until judged; kInPlace: a text
    // frame whole in the current read, validated there and forwarded from there; kSkip: dropped.
    enum class Mode : uint8_t { kStream, kHold, kInPlace, kSkip };

    Relay* relay;
    bool from_client;
    net::Stream* in;
    net::Stream* out;
    FrameParser parser;
    Utf8Validator utf8;
    Mode mode = Mode::kStream;
    bool validate = false;        // the current message is text and validated
    bool assembling = false;      // the current message is held whole for payload filters
    bool close_received = false;  // this leg's peer sent a close frame
    bool close_sent = false;      // sluice has written a close frame toward this leg's peer
    bool mid_frame_out = false;   // a frame is half-written on `out`
    bool dropping = false;        // a filter dropped the current message: skip its other frames
    bool eof = false;
    uint64_t message_bytes = 0;
    std::string held;     // raw bytes of held frames, forwarded unchanged once judged
    std::string payload;  // unmasked payload: the assembled message, then a control frame's
    // Where a control frame (which may come between two frames of a message) starts in `held`
    // and `payload`: the message's held bytes before it stay.
    size_t control_held_from = 0;
    size_t control_payload_from = 0;
    const uint8_t* fwd_begin = nullptr;
    const uint8_t* fwd_end = nullptr;
  };

  void fail(Leg& offender, uint16_t code, std::string_view reason);
  void sendClose(Leg& toward, uint16_t code, std::string_view reason);
  void onCloseFrame(Leg& from, uint16_t code);
  void onPeerGone(Leg& gone);
  void finish();
  void afterInput(Leg& leg);
  void armTimer();
  void countMessage(size_t dir, uint64_t bytes, bool end_of_message, uint64_t message_bytes);
  // Counts a filter decision; returns true when it ends or drops the message.
  bool judged(size_t filter, const filters::MessageDecision& d);
  Leg& other(Leg& leg) { return &leg == &up_ ? down_ : up_; }

  uv_loop_t* loop_;
  uv_timer_t* timer_;
  uv_timer_cb timer_cb_;
  const conf::WebSocketConfig& config_;
  std::vector<std::unique_ptr<filters::StreamFilter>> filters_;
  std::vector<metrics::FilterSlot*> filter_slots_;
  bool needs_payload_;
  metrics::RouteSlot* route_slot_;  // may be null (unit tests)
  Owner* owner_;
  Leg up_;    // client -> backend: reads the client, writes the backend
  Leg down_;  // backend -> client
  Stats stats_;
  bool closing_ = false;  // a close handshake (relayed or sluice's own) is under way
  bool finished_ = false;
  uint64_t close_deadline_ = 0;
  uint64_t last_client_rx_ = 0;
  uint64_t last_rx_ = 0;
  uint64_t ping_sent_at_ = 0;
  uint64_t ping_counter_ = 0;
  bool ping_outstanding_ = false;
  char ping_payload_[8];
};

}  // namespace sluice::ws
