#include "proxy/ws/relay.h"

#include <algorithm>
#include <cstring>

#include <openssl/rand.h>

#include "proxy/log.h"

namespace sluice::ws {

namespace {
constexpr uint64_t kCloseTimeoutMs = 5000;
// Held frames are unmasked into this scratch buffer for UTF-8 validation when the payload itself
// is not kept.
thread_local std::string t_scratch;
// The read being parsed (set only inside Leg::feed), and the first byte of a text frame that lies
// whole in it: such a frame is validated where it is and forwarded from there, in its place in
// the forwarded range, instead of being copied aside first. Per thread, because a thread parses
// one read at a time.
thread_local const uint8_t* t_feed_begin = nullptr;
thread_local const uint8_t* t_feed_end = nullptr;
thread_local const uint8_t* t_in_place = nullptr;

void randomMask(uint8_t mask[4]) {
  if (RAND_bytes(mask, 4) != 1) {
    // RAND_bytes does not fail on a seeded Linux system; never send a predictable mask anyway.
    uint64_t t = uv_hrtime();
    memcpy(mask, &t, 4);
  }
}

size_t dirIndex(filters::Direction d) {
  return d == filters::Direction::kDownstreamToUpstream ? 0 : 1;
}
}  // namespace

const char* Relay::closedByName(ClosedBy by) {
  switch (by) {
    case ClosedBy::kDownstream:
      return "downstream";
    case ClosedBy::kUpstream:
      return "upstream";
    case ClosedBy::kSluice:
      return "sluice";
    case ClosedBy::kNone:
      break;
  }
  return "none";
}

Relay::Leg::Leg(Relay* r, bool client, net::Stream* i, net::Stream* o)
    : relay(r), from_client(client), in(i), out(o), parser(client) {}

Relay::Relay(uv_loop_t* loop, net::Stream& client, net::Stream& backend, uv_timer_t* timer,
             uv_timer_cb timer_cb, const conf::WebSocketConfig& config,
             std::vector<std::unique_ptr<filters::StreamFilter>> filters,
             std::vector<metrics::FilterSlot*> filter_slots, bool needs_payload,
             metrics::RouteSlot* route_slot, Owner* owner)
    : loop_(loop),
      timer_(timer),
      timer_cb_(timer_cb),
      config_(config),
      filters_(std::move(filters)),
      filter_slots_(std::move(filter_slots)),
      needs_payload_(needs_payload),
      route_slot_(route_slot),
      owner_(owner),
      up_(this, true, &client, &backend),
      down_(this, false, &backend, &client) {
  last_client_rx_ = last_rx_ = uv_now(loop_);
  armTimer();
}

Relay::~Relay() = default;

// ---- input ---------------------------------------------------------------------------------

void Relay::onClientData(const char* data, size_t len) {
  last_client_rx_ = last_rx_ = uv_now(loop_);
  up_.feed(data, len);
  afterInput(up_);
}

void Relay::onBackendData(const char* data, size_t len) {
  last_rx_ = uv_now(loop_);
  down_.feed(data, len);
  afterInput(down_);
}

void Relay::afterInput(Leg& leg) {
  if (finished_) {
    return;
  }
  // Watermark flow control: a slow reader stops the other side's reads.
  if (leg.out->aboveHighWatermark()) {
    leg.in->readStop();
  }
}

void Relay::onClientWritable() {
  if (!finished_ && !down_.eof) {
    down_.in->readStart();
  }
}

void Relay::onBackendWritable() {
  if (!finished_ && !up_.eof) {
    up_.in->readStart();
  }
}

void Relay::Leg::feed(const char* data, size_t len) {
  if (relay->finished_) {
    return;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  t_feed_begin = p;
  t_feed_end = p + len;
  size_t used = parser.feed(p, len, *this);
  t_feed_begin = t_feed_end = nullptr;
  flushRange();
  if (parser.error() != FrameError::kNone && !relay->finished_) {
    relay->fail(*this, kProtocolError, frameErrorName(parser.error()));
    return;
  }
  (void)used;
}

void Relay::Leg::forward(const uint8_t* p, size_t n) {
  if (n == 0) {
    return;
  }
  if (fwd_end == p) {
    fwd_end += n;
    return;
  }
  flushRange();
  fwd_begin = p;
  fwd_end = p + n;
}

void Relay::Leg::flushRange() {
  if (fwd_begin != fwd_end) {
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(const_cast<uint8_t*>(fwd_begin)),
                             static_cast<unsigned>(fwd_end - fwd_begin));
    out->write(&b, 1);
  }
  fwd_begin = fwd_end = nullptr;
}

bool Relay::Leg::onFrameHeader(const FrameHeader& h, const uint8_t* raw) {
  if (relay->finished_ || close_received) {
    mode = Mode::kSkip;  // nothing may follow a peer's close frame
    return !relay->finished_;
  }
  if (isControl(h.opcode)) {
    // Between two frames of a message, whose held bytes stay before the control frame's.
    flushRange();
    mode = Mode::kHold;
    control_held_from = held.size();
    control_payload_from = payload.size();
    held.append(reinterpret_cast<const char*>(raw), h.header_size);
    return true;
  }
  bool first = h.opcode != kContinuation;
  if (first) {
    dropping = false;
    message_bytes = 0;
    utf8.reset();
    validate = h.opcode == kText && relay->config_.validate_utf8;
    assembling = relay->needs_payload_;
    payload.clear();
    held.clear();
    mode = Mode::kStream;
  } else if (dropping) {
    mode = Mode::kSkip;  // the rest of a dropped message
    return true;
  }
  message_bytes += h.length;
  uint64_t limit = relay->config_.max_message_bytes;
  if (limit > 0 && message_bytes > limit) {
    relay->fail(*this, kMessageTooBig, "message too big");
    return false;
  }
  filters::FrameInfo info{
      direction(),
      parser.messageOpcode() == kText ? filters::MessageType::kText : filters::MessageType::kBinary,
      first,
      h.fin,
      h.length,
      message_bytes};
  for (size_t i = 0; i < relay->filters_.size(); ++i) {
    filters::MessageDecision d = relay->filters_[i]->onFrame(info);
    if (!relay->judged(i, d)) {
      continue;
    }
    if (d.action == filters::MessageDecision::Action::kClose) {
      relay->fail(*this, d.close_code, d.reason);
      return false;
    }
    flushRange();  // kDrop: nothing of this message goes out
    held.clear();
    payload.clear();
    dropping = true;
    mode = Mode::kSkip;
    return true;
  }
  if (validate && !assembling && raw >= t_feed_begin && raw < t_feed_end &&
      static_cast<uint64_t>(t_feed_end - raw) >= h.header_size + h.length) {
    mode = Mode::kInPlace;  // the whole frame is in this read (a header split across reads is not)
    t_in_place = raw;
  } else if (validate || assembling) {
    flushRange();
    mode = Mode::kHold;
    held.append(reinterpret_cast<const char*>(raw), h.header_size);
  } else {
    mode = Mode::kStream;
    forward(raw, h.header_size);
    mid_frame_out = h.length > 0;
  }
  return true;
}

bool Relay::Leg::onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                                uint64_t offset) {
  if (mode == Mode::kSkip) {
    return true;
  }
  if (mode == Mode::kStream) {
    forward(data, len);
    return true;
  }
  if (mode == Mode::kHold) {
    held.append(reinterpret_cast<const char*>(data), len);
  }
  bool keep = isControl(h.opcode) || assembling;
  std::string& plain = keep ? payload : t_scratch;
  if (!keep) {
    plain.clear();
  }
  size_t start = plain.size();
  plain.append(reinterpret_cast<const char*>(data), len);
  auto* u = reinterpret_cast<uint8_t*>(plain.data() + start);
  if (h.masked) {
    applyMask(u, len, h.mask, static_cast<size_t>(offset & 3));
  }
  if (!isControl(h.opcode) && validate && !utf8.feed(u, len)) {
    relay->fail(*this, kInvalidPayload, "text message is not valid UTF-8");
    return false;
  }
  return true;
}

bool Relay::Leg::onFrameEnd(const FrameHeader& h) {
  Relay& r = *relay;
  if (mode == Mode::kSkip) {
    return true;
  }
  size_t dir = dirIndex(direction());
  if (isControl(h.opcode)) {
    std::string_view frame = std::string_view(held).substr(control_held_from);
    std::string_view body = std::string_view(payload).substr(control_payload_from);
    bool go_on = onControlFrame(h, frame, body);
    held.resize(control_held_from);  // what is left: the held frames of a message, if any
    payload.resize(control_payload_from);
    return go_on;
  }
  if (mode == Mode::kStream) {
    mid_frame_out = false;
    r.countMessage(dir, h.length, h.fin, message_bytes);
    return true;
  }
  // Held (or validated in place) data frame.
  if (validate && h.fin && !utf8.complete()) {
    r.fail(*this, kInvalidPayload, "text message ends inside a UTF-8 sequence");
    return false;
  }
  if (assembling && !h.fin) {
    return true;  // keep holding until the message is whole
  }
  if (assembling) {
    filters::Message m{direction(),
                       parser.messageOpcode() == kText ? filters::MessageType::kText
                                                       : filters::MessageType::kBinary,
                       payload};
    for (size_t i = 0; i < r.filters_.size(); ++i) {
      filters::MessageDecision d = r.filters_[i]->onMessage(m);
      if (!r.judged(i, d)) {
        continue;
      }
      if (d.action == filters::MessageDecision::Action::kClose) {
        r.fail(*this, d.close_code, d.reason);
        return false;
      }
      held.clear();
      payload.clear();
      return true;
    }
  }
  r.countMessage(dir, assembling ? payload.size() : h.length, h.fin, message_bytes);
  if (r.other(*this).close_sent) {
    // nothing more goes that way
  } else if (mode == Mode::kInPlace) {
    forward(t_in_place, h.header_size + static_cast<size_t>(h.length));
  } else {
    out->write(held);
  }
  held.clear();
  if (assembling) {
    payload.clear();
  }
  releaseLargeBuffers();
  return true;
}

bool Relay::Leg::onControlFrame(const FrameHeader& h, std::string_view frame,
                                std::string_view body) {
  Relay& r = *relay;
  if (h.opcode == kClose) {
    uint16_t code = 1005;  // no status code present
    if (body.size() == 1) {
      r.fail(*this, kProtocolError, "close frame with a 1-byte payload");
      return false;
    }
    if (body.size() >= 2) {
      code =
          static_cast<uint16_t>(static_cast<uint8_t>(body[0]) << 8 | static_cast<uint8_t>(body[1]));
      if (!validCloseCode(code)) {
        r.fail(*this, kProtocolError, "invalid close code");
        return false;
      }
      if (!validUtf8(body.substr(2))) {
        r.fail(*this, kInvalidPayload, "close reason is not valid UTF-8");
        return false;
      }
    }
    close_received = true;
    Leg& o = r.other(*this);
    if (!o.close_sent) {
      out->write(frame);
      o.close_sent = true;
    }
    r.onCloseFrame(*this, code);
    return !r.finished_;
  }
  if (h.opcode == kPong && from_client && r.ping_outstanding_ && body.size() == 8 &&
      memcmp(body.data(), r.ping_payload_, 8) == 0) {
    r.ping_outstanding_ = false;  // the answer to sluice's own ping: not relayed
    r.armTimer();
    return true;
  }
  if (!r.other(*this).close_sent) {
    out->write(frame);
  }
  return true;
}

void Relay::Leg::releaseLargeBuffers() {
  // A big message leaves big buffers behind; an idle session should not keep them.
  constexpr size_t kKeep = 4096;
  if (held.capacity() > kKeep) {
    std::string().swap(held);  // frees it (assigning "" would not)
  }
  if (payload.capacity() > kKeep) {
    std::string().swap(payload);  // frees it (assigning "" would not)
  }
}

void Relay::countMessage(size_t dir, uint64_t bytes, bool end_of_message, uint64_t message_bytes) {
  stats_.bytes[dir] += bytes;
  if (route_slot_ != nullptr) {
    route_slot_->ws_bytes[dir].inc(bytes);
  }
  if (!end_of_message) {
    return;
  }
  ++stats_.messages[dir];
  if (route_slot_ != nullptr) {
    route_slot_->ws_messages[dir].inc();
    route_slot_->ws_message_bytes[dir].observe(static_cast<double>(message_bytes));
  }
}

bool Relay::judged(size_t filter, const filters::MessageDecision& d) {
  if (d.action == filters::MessageDecision::Action::kContinue) {
    return false;  // not counted per frame: that would be a counter per frame for nothing
  }
  if (filter < filter_slots_.size()) {
    filter_slots_[filter]
        ->decisions[d.action == filters::MessageDecision::Action::kClose ? metrics::kDecisionClose
                                                                         : metrics::kDecisionDrop]
        .inc();
  }
  return true;
}

// ---- closing -------------------------------------------------------------------------------

void Relay::sendClose(Leg& toward, uint16_t code, std::string_view reason) {
  // `toward` is the leg reading from the peer we write to; we write on toward.in.
  if (toward.close_sent) {
    return;
  }
  toward.close_sent = true;
  Leg& feeding = other(toward);  // the leg whose output is toward.in
  if (feeding.mid_frame_out) {
    return;  // a frame is half-written there: no frame can follow it; the TCP close says it all
  }
  feeding.flushRange();
  std::string frame;
  if (toward.from_client) {
    writeCloseFrame(&frame, code, reason, nullptr);  // server to client: unmasked
  } else {
    uint8_t mask[4];
    randomMask(mask);
    writeCloseFrame(&frame, code, reason, mask);  // client to server: masked
  }
  toward.in->write(frame);
}

// sluice's own closes end the session at once: the owner then closes the client side with a
// lingering close (FIN after the close frame, input read and discarded until the client's EOF),
// so that unread input cannot turn into a reset that destroys the close frame on its way.
void Relay::fail(Leg& offender, uint16_t code, std::string_view reason) {
  if (finished_) {
    return;
  }
  LOG_INFO("websocket: closing %s with %u: %.*s", offender.from_client ? "client" : "backend",
           static_cast<unsigned>(code), static_cast<int>(reason.size()), reason.data());
  offender.flushRange();
  stats_.close_code = code;
  stats_.closed_by = ClosedBy::kSluice;
  sendClose(offender, code, reason);
  // The innocent side learns that its peer went away (client fault) or failed (backend fault).
  sendClose(other(offender), offender.from_client ? kGoingAway : kBadGateway,
            offender.from_client ? "client connection ended" : "backend connection failed");
  finish();
}

void Relay::goAway(uint16_t code, std::string_view reason) {
  if (finished_) {
    return;
  }
  stats_.close_code = code;
  stats_.closed_by = ClosedBy::kSluice;
  up_.flushRange();
  down_.flushRange();
  sendClose(up_, code, reason);
  sendClose(down_, code, reason);
  finish();
}

void Relay::onCloseFrame(Leg& from, uint16_t code) {
  if (stats_.closed_by == ClosedBy::kNone) {
    stats_.close_code = code;
    stats_.closed_by = from.from_client ? ClosedBy::kDownstream : ClosedBy::kUpstream;
  }
  if (up_.close_received && down_.close_received) {
    finish();  // both closes seen: the handshake is complete
    return;
  }
  closing_ = true;  // wait (bounded) for the other side's answer, which is relayed too
  close_deadline_ = uv_now(loop_) + kCloseTimeoutMs;
  armTimer();
}

void Relay::onClientEof() {
  up_.eof = true;
  onPeerGone(up_);
}

void Relay::onBackendEof() {
  down_.eof = true;
  onPeerGone(down_);
}

void Relay::onPeerGone(Leg& gone) {
  if (finished_) {
    return;
  }
  gone.flushRange();
  if (!gone.close_received) {
    // The peer vanished without a close frame.
    if (stats_.closed_by == ClosedBy::kNone) {
      stats_.close_code = 1006;
      stats_.closed_by = gone.from_client ? ClosedBy::kDownstream : ClosedBy::kUpstream;
    }
    sendClose(other(gone), gone.from_client ? kGoingAway : kBadGateway,
              gone.from_client ? "client connection ended" : "backend connection failed");
  }
  finish();
}

void Relay::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  uv_timer_stop(timer_);
  owner_->relayFinished();
}

// ---- timers: heartbeats, idle timeout, close handshake -------------------------------------

void Relay::armTimer() {
  if (finished_) {
    return;
  }
  uint64_t now = uv_now(loop_);
  uint64_t due = UINT64_MAX;
  auto consider = [&](uint64_t t) { due = std::min(due, t); };
  if (closing_) {
    consider(close_deadline_);
  } else {
    uint64_t ping = static_cast<uint64_t>(config_.ping_interval.count());
    if (ping > 0) {
      consider(ping_outstanding_
                   ? ping_sent_at_ + static_cast<uint64_t>(config_.pong_timeout.count())
                   : last_client_rx_ + ping);
    }
    uint64_t idle = static_cast<uint64_t>(config_.idle_timeout.count());
    if (idle > 0) {
      consider(last_rx_ + idle);
    }
  }
  if (due == UINT64_MAX) {
    uv_timer_stop(timer_);
    return;
  }
  uint64_t delay = due > now ? due - now : 0;
  uv_timer_start(timer_, timer_cb_, delay, 0);
}

void Relay::onTimer() {
  if (finished_) {
    return;
  }
  uint64_t now = uv_now(loop_);
  if (closing_) {
    if (now >= close_deadline_) {
      finish();  // the answering close never came
      return;
    }
    armTimer();
    return;
  }
  uint64_t idle = static_cast<uint64_t>(config_.idle_timeout.count());
  if (idle > 0 && now >= last_rx_ + idle) {
    goAway(kGoingAway, "idle timeout");
    return;
  }
  uint64_t ping = static_cast<uint64_t>(config_.ping_interval.count());
  if (ping > 0) {
    if (ping_outstanding_ &&
        now >= ping_sent_at_ + static_cast<uint64_t>(config_.pong_timeout.count())) {
      LOG_INFO("websocket: client did not answer a ping within pong_timeout; closing");
      stats_.close_code = kGoingAway;
      stats_.closed_by = ClosedBy::kSluice;
      up_.close_sent = true;  // the client is gone: nothing more is written to it
      sendClose(down_, kGoingAway, "client did not answer pings");
      finish();
      return;
    }
    if (!ping_outstanding_ && now >= last_client_rx_ + ping) {
      if (down_.mid_frame_out || up_.close_sent) {
        last_client_rx_ = now - ping + 100;  // retry shortly, after the frame in progress
      } else {
        ++ping_counter_;
        memcpy(ping_payload_, &ping_counter_, 8);
        std::string frame;
        writeControlFrame(&frame, kPing, std::string_view(ping_payload_, 8), nullptr);
        down_.out->write(frame);
        ping_outstanding_ = true;
        ping_sent_at_ = now;
      }
    }
  }
  armTimer();
}

}  // namespace sluice::ws
