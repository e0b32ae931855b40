#include "proxy/ws/relay.h"

#include <algorithm>
#include <cstring>

#include <openssl/rand.h>

#include "proxy/log.h"

namespace sluice::ws {

namespace {
constexpr uint64_t kCloseTimeoutMs = 5000;

// Masks for the frames sluice writes toward a backend (re-framed messages, its own control
// frames). RAND_bytes costs ~5k instructions a call in OpenSSL 3 (provider and parameter
// lookups), more than relaying a small message: the masks come from a per-thread block of its
// output instead, 64 masks per call, as unpredictable as before.
void randomMask(uint8_t mask[4], uint64_t salt) {
  struct Block {
    uint8_t bytes[256];
    size_t used = sizeof bytes;
  };
  thread_local Block block;
  if (block.used + 4 > sizeof block.bytes) {
    if (RAND_bytes(block.bytes, sizeof block.bytes) != 1) {
      // RAND_bytes does not fail on a seeded Linux system; never send a predictable mask anyway.
      memcpy(mask, &salt, 4);
      return;
    }
    block.used = 0;
  }
  memcpy(mask, block.bytes + block.used, 4);
  block.used += 4;
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

Relay::Leg::Leg(Relay* r, bool client, net::Transport* i, net::Transport* o,
                std::optional<DeflateDirection> inflate, std::optional<DeflateDirection> deflate,
                bool pass)
    : relay(r),
      from_client(client),
      in(i),
      out(o),
      parser(client, inflate.has_value()),
      passthrough(pass) {
  const conf::WebSocketConfig& c = r->config_;
  if (inflate) {
    Inflater::Options o = Inflater::optionsFor(*inflate, c.max_message_bytes);
    o.max_ratio = c.max_inflate_ratio;
    inflater = std::make_unique<Inflater>(o);
  }
  if (deflate && canDeflate(*deflate)) {
    Deflater::Options o;
    o.level = c.compression_level;
    o.mem_level = c.compression_mem_level;
    o.threshold = c.compression_threshold;
    deflater = std::make_unique<Deflater>(Deflater::optionsFor(*deflate, o));
  }
}

Relay::Relay(filters::Dispatcher& dispatcher, net::Transport& client, net::Transport& backend,
             const conf::WebSocketConfig& config, std::unique_ptr<FilterManager> filters,
             metrics::RouteSlot* route_slot, Owner* owner, const Compression& c)
    : dispatcher_(dispatcher),
      timer_(dispatcher.createTimer([this] { onTimer(); })),
      config_(config),
      filters_(std::move(filters)),
      needs_payload_(filters_ && filters_->has(filters::Filter::kMessage)),
      frame_filters_(filters_ && filters_->has(filters::Filter::kFrame)),
      route_slot_(route_slot),
      owner_(owner),
      // Each leg reads one peer's compression and writes the other's (passthrough: the
      // frames go on as they came, so nothing is re-compressed).
      up_(this, true, &client, &backend,
          c.client ? std::optional(c.client->client_to_server) : std::nullopt,
          !c.passthrough && c.backend ? std::optional(c.backend->client_to_server) : std::nullopt,
          c.passthrough),
      down_(this, false, &backend, &client,
            c.backend ? std::optional(c.backend->server_to_client) : std::nullopt,
            !c.passthrough && c.client ? std::optional(c.client->server_to_client) : std::nullopt,
            c.passthrough) {
  if (filters_) {
    filters_->setOwner(*this);
  }
  for (Leg* l : {&up_, &down_}) {
    l->plain = !needs_payload_ && !frame_filters_ && l->deflater == nullptr;
  }
  up_.last_rx = down_.last_rx = last_rx_ = dispatcher_.nowMs();
  armTimer();
}

Relay::~Relay() {
  if (filters_) {
    filters_->destroy();  // while the relay (its owner) is still whole
  }
}

// ---- input ---------------------------------------------------------------------------------

void Relay::onClientData(const char* data, size_t len) {
  up_.last_rx = last_rx_ = dispatcher_.nowMs();
  up_.feed(data, len);
  afterInput(up_);
}

void Relay::onBackendData(const char* data, size_t len) {
  down_.last_rx = last_rx_ = dispatcher_.nowMs();
  down_.feed(data, len);
  afterInput(down_);
}

void Relay::afterInput(Leg& leg) {
  if (finished_) {
    return;
  }
  // Watermark flow control: a slow reader stops the other side's reads.
  if (leg.out->aboveHighWatermark()) {
    leg.pause(kOutputFull, true);
  }
}

void Relay::onClientWritable() {
  down_.pause(kOutputFull, false);
}

void Relay::onBackendWritable() {
  up_.pause(kOutputFull, false);
}

void Relay::Leg::pause(uint8_t why, bool on) {
  uint8_t before = paused;
  paused = on ? (paused | why) : (paused & ~why);
  if (relay->finished_ || eof) {
    return;
  }
  if (before == 0 && paused != 0) {
    in->readStop();
  } else if (before != 0 && paused == 0) {
    in->readStart();
    if (!backlog.empty()) {
      relay->scheduleReplay();  // what was read before the pause, on the loop's next turn
    }
  }
}

void Relay::Leg::feed(const char* data, size_t len) {
  if (relay->finished_) {
    return;
  }
  if ((paused & (kAwaitVerdict | kFilterPause)) != 0 || !backlog.empty()) {
    backlog.append(data, len);  // read before the pause took effect, or after what waits
    relay->held_changed_ = true;
    return;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  relay->feed_begin_ = p;
  relay->feed_end_ = p + len;
  size_t used = parser.feed(p, len, *this);
  relay->feed_begin_ = relay->feed_end_ = nullptr;
  flushRange();
  if (relay->finished_) {
    return;
  }
  if (parser.error() != FrameError::kNone) {
    relay->fail(*this, kProtocolError, frameErrorName(parser.error()));
    return;
  }
  if (used < len && (paused & (kAwaitVerdict | kFilterPause)) != 0) {
    backlog.append(data + used, len - used);  // parsed once the verdict (or the filter) allows
    relay->held_changed_ = true;
  }
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
    // Filled in here: uv_buf_init() is a call into libuv, once per relayed frame.
    uv_buf_t b;
    b.base = reinterpret_cast<char*>(const_cast<uint8_t*>(fwd_begin));
    b.len = static_cast<size_t>(fwd_end - fwd_begin);
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
    relay->held_changed_ = true;
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
    compressed = (h.rsv & 0x4) != 0;
    // A message sluice compresses is assembled first, unless it is one frame too small to be
    // worth it (then it goes on as it came).
    bool to_deflate =
        deflater != nullptr && !(h.fin && !compressed && !deflater->shouldCompress(h.length));
    assembling = relay->needs_payload_ || compressed || to_deflate;
    reframe = (compressed && !passthrough) || to_deflate;
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
  if (relay->frame_filters_) {
    filters::FrameInfo info{direction(), type(), first, h.fin, h.length, message_bytes};
    switch (relay->filters_->frame(info)) {
      case FilterManager::MessageResult::kForward:
      case FilterManager::MessageResult::kStopped:  // (frames cannot wait)
        break;
      case FilterManager::MessageResult::kClosed:
        return false;
      case FilterManager::MessageResult::kDrop:
        flushRange();  // nothing of this message goes out
        held.clear();
        payload.clear();
        releaseLargeBuffers();
        relay->held_changed_ = true;
        dropping = true;
        mode = Mode::kSkip;
        return true;
    }
  }
  const uint8_t* feed_end = relay->feed_end_;
  if (validate && !assembling && raw >= relay->feed_begin_ && raw < feed_end &&
      static_cast<uint64_t>(feed_end - raw) >= h.header_size + h.length) {
    mode = Mode::kInPlace;  // the whole frame is in this read (a header split across reads is not)
    in_place = raw;
  } else if (validate || assembling) {
    flushRange();
    mode = Mode::kHold;
    relay->held_changed_ = true;
    if (!reframe) {
      held.append(reinterpret_cast<const char*>(raw), h.header_size);
    }
  } else {
    mode = Mode::kStream;
    forward(raw, h.header_size);
    mid_frame_out = h.length > 0;
  }
  return true;
}

FrameParser::Handler::Whole Relay::Leg::onWholeFrame(const FrameHeader& h, const uint8_t* raw) {
  // The frame nearly every message is (one whole data frame, uncompressed, on a plain session)
  // in one step: what onFrameHeader(), onFramePayload() and onFrameEnd() do for it in the
  // kStream or kInPlace mode, without their general bookkeeping. Anything else declines.
  Relay& r = *relay;
  Leg& o = r.other(*this);
  uint64_t limit = r.config_.max_message_bytes;
  if (!plain || !h.fin || h.rsv != 0 || (h.opcode != kText && h.opcode != kBinary) || r.finished_ ||
      close_received || o.close_sent || o.owe_pong || (limit > 0 && h.length > limit)) {
    return Whole::kDecline;
  }
  dropping = false;
  message_bytes = h.length;
  compressed = false;
  assembling = false;
  reframe = false;
  payload.clear();
  held.clear();
  validate = h.opcode == kText && r.config_.validate_utf8;
  if (validate) {
    mode = Mode::kInPlace;
    in_place = raw;
    utf8.reset();
    const uint8_t* data = raw + h.header_size;
    auto len = static_cast<size_t>(h.length);
    if (!(h.masked ? utf8.feedMasked(data, len, h.mask, 0) : utf8.feed(data, len))) {
      r.fail(*this, kInvalidPayload, "text message is not valid UTF-8");
      return Whole::kStop;
    }
    if (!utf8.complete()) {
      r.fail(*this, kInvalidPayload, "text message ends inside a UTF-8 sequence");
      return Whole::kStop;
    }
  } else {
    mode = Mode::kStream;
  }
  r.countMessage(dirIndex(direction()), h.length, true, message_bytes);
  forward(raw, h.header_size + static_cast<size_t>(h.length));
  return (paused & kFilterPause) == 0 ? Whole::kHandled : Whole::kStop;
}

bool Relay::Leg::onFramePayload(const FrameHeader& h, const uint8_t* data, size_t len,
                                uint64_t offset) {
  if (mode == Mode::kSkip) {
    if (compressed && inflater != nullptr && !isControl(h.opcode)) {
      // A dropped compressed message still feeds the inflater: with context takeover the next
      // messages refer to its bytes.
      std::string discard;
      inflater->feed(data, len, &discard);
    }
    return true;
  }
  if (mode == Mode::kStream) {
    forward(data, len);
    return true;
  }
  if (mode == Mode::kHold) {
    relay->held_changed_ = true;  // held or payload grows
  }
  bool control = isControl(h.opcode);
  if (mode == Mode::kHold && (control || !reframe)) {
    held.append(reinterpret_cast<const char*>(data), len);
  }
  if (!control && compressed) {
    return inflate(data, len, h, offset);
  }
  if (control || assembling) {
    size_t start = payload.size();
    payload.append(reinterpret_cast<const char*>(data), len);
    if (h.masked) {
      applyMask(reinterpret_cast<uint8_t*>(payload.data() + start), len, h.mask,
                static_cast<size_t>(offset & 3));
    }
    return control || !validate || validateFrom(start);
  }
  if (!validate) {
    return true;
  }
  // A text frame validated but not kept: validated where it is (a client's masked ASCII too),
  // with no copy.
  bool ok = h.masked ? utf8.feedMasked(data, len, h.mask, static_cast<size_t>(offset & 3))
                     : utf8.feed(data, len);
  if (!ok) {
    relay->fail(*this, kInvalidPayload, "text message is not valid UTF-8");
  }
  return ok;
}

bool Relay::Leg::inflate(const uint8_t* data, size_t len, const FrameHeader& h, uint64_t offset) {
  uint8_t chunk[4096];
  for (size_t done = 0; done < len;) {
    size_t n = std::min(sizeof chunk, len - done);
    memcpy(chunk, data + done, n);
    if (h.masked) {
      applyMask(chunk, n, h.mask, static_cast<size_t>((offset + done) & 3));
    }
    size_t before = payload.size();
    if (!inflated(inflater->feed(chunk, n, &payload)) || (validate && !validateFrom(before))) {
      return false;
    }
    done += n;
  }
  return true;
}

bool Relay::Leg::inflated(Inflater::Status status) {
  switch (status) {
    case Inflater::Status::kOk:
      return true;
    case Inflater::Status::kTooBig:
    case Inflater::Status::kRatio:
      relay->fail(*this, kMessageTooBig, "message too big once inflated");
      return false;
    case Inflater::Status::kCorrupt:
      relay->fail(*this, kInvalidPayload, "invalid compressed message");
      return false;
    case Inflater::Status::kNoMemory:
      relay->fail(*this, kInternalError, "cannot inflate a message");
      return false;
  }
  return false;
}

bool Relay::Leg::validateFrom(size_t from) {
  if (utf8.feed(reinterpret_cast<const uint8_t*>(payload.data() + from), payload.size() - from)) {
    return true;
  }
  relay->fail(*this, kInvalidPayload, "text message is not valid UTF-8");
  return false;
}

bool Relay::Leg::onFrameEnd(const FrameHeader& h) {
  Relay& r = *relay;
  if (mode == Mode::kSkip) {
    if (compressed && inflater != nullptr && h.fin && !isControl(h.opcode)) {
      std::string discard;
      inflater->finishMessage(&discard);
    }
    return true;
  }
  size_t dir = dirIndex(direction());
  if (isControl(h.opcode)) {
    r.held_changed_ = true;
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
    Leg& o = r.other(*this);
    if (o.owe_pong) {
      flushRange();  // the end of the frame that held the pong back goes first
      o.owe_pong = false;
      o.sendControl(kPong, o.pong_owed);
    }
    // A filter that paused this leg (a rate limit shaping it) stops it at this frame: the rest
    // of the read waits, as if it had not been read yet.
    return (paused & kFilterPause) == 0;
  }
  if (mode == Mode::kInPlace) {
    // Validated where it lies: nothing was copied aside, so no buffer to clear or release (a
    // dropped message releases its buffers when it is dropped).
    if (validate && h.fin && !utf8.complete()) {
      r.fail(*this, kInvalidPayload, "text message ends inside a UTF-8 sequence");
      return false;
    }
    r.countMessage(dir, h.length, h.fin, message_bytes);
    if (!r.other(*this).close_sent) {
      forward(in_place, h.header_size + static_cast<size_t>(h.length));
    }
    return (paused & kFilterPause) == 0;
  }
  // Held data frame.
  r.held_changed_ = true;
  if (compressed && h.fin) {
    size_t before = payload.size();
    if (!inflated(inflater->finishMessage(&payload)) || (validate && !validateFrom(before))) {
      return false;
    }
  }
  if (validate && h.fin && !utf8.complete()) {
    r.fail(*this, kInvalidPayload, "text message ends inside a UTF-8 sequence");
    return false;
  }
  if (assembling) {
    // Keep holding until the message is whole; after it, stop where a filter paused the leg.
    return !h.fin || (judgeMessage() && (paused & kFilterPause) == 0);
  }
  r.countMessage(dir, h.length, h.fin, message_bytes);
  if (!r.other(*this).close_sent) {
    out->write(held);
  }
  held.clear();
  releaseLargeBuffers();
  return (paused & kFilterPause) == 0;
}

bool Relay::Leg::judgeMessage() {
  if (!relay->needs_payload_) {
    sendMessage(false);  // assembled for compression alone
    messageDone();
    return true;
  }
  message.emplace(direction(), type(), &payload);
  switch (relay->filters_->message(*message)) {
    case FilterManager::MessageResult::kForward:
      sendMessage(message->modified());
      messageDone();
      return true;
    case FilterManager::MessageResult::kDrop:
      messageDone();
      return true;
    case FilterManager::MessageResult::kClosed:
      return false;
    case FilterManager::MessageResult::kStopped:
      pause(kAwaitVerdict, true);  // the rest of this read waits in the backlog
      return false;
  }
  return false;
}

void Relay::onMessageVerdict(filters::Direction direction, const filters::MessageVerdict& verdict) {
  if (finished_) {
    return;
  }
  Leg& l = leg(direction);
  if (!l.message) {
    return;
  }
  if (verdict.kind == filters::MessageVerdict::Kind::kForward) {
    l.sendMessage(l.message->modified());
  }
  l.messageDone();
  l.pause(kAwaitVerdict, false);
  if (!l.backlog.empty()) {
    held_changed_ = true;
    std::string backlog = std::move(l.backlog);
    l.backlog.clear();
    l.feed(backlog.data(), backlog.size());
    afterInput(l);
  }
}

void Relay::Leg::sendMessage(bool rewritten) {
  Relay& r = *relay;
  r.countMessage(dirIndex(direction()), payload.size(), true, payload.size());
  if (r.other(*this).close_sent) {
    return;  // nothing more goes that way
  }
  if (!rewritten && !reframe) {
    out->write(held);  // the frames as they came (passthrough keeps the peer's compression)
    return;
  }
  // sluice frames the message itself: one frame, compressed when it is worth it, masked toward
  // a backend.
  std::string_view body = payload;
  std::string compressed_body;
  uint8_t rsv = 0;
  if (deflater != nullptr && deflater->shouldCompress(payload.size()) &&
      deflater->compress(payload, true, &compressed_body)) {
    body = compressed_body;
    rsv = 0x4;
  }
  std::string frame;
  uint8_t opcode = type() == filters::MessageType::kText ? kText : kBinary;
  if (from_client) {
    uint8_t mask[4];
    randomMask(mask, r.dispatcher_.nowMs());
    writeFrameHeader(&frame, true, opcode, body.size(), mask, rsv);
    size_t start = frame.size();
    frame.append(body);
    applyMask(reinterpret_cast<uint8_t*>(frame.data() + start), body.size(), mask, 0);
  } else {
    writeFrameHeader(&frame, true, opcode, body.size(), nullptr, rsv);
    frame.append(body);
  }
  out->write(frame);
}

void Relay::Leg::messageDone() {
  relay->held_changed_ = true;
  message.reset();
  held.clear();
  payload.clear();
  releaseLargeBuffers();
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
    if (r.stats_.closed_by == ClosedBy::kNone && body.size() > 2) {
      r.stats_.close_reason.assign(body.substr(2));
    }
    Leg& o = r.other(*this);
    if (!o.close_sent) {
      out->write(frame);
      o.close_sent = true;
    }
    r.onCloseFrame(*this, code);
    return !r.finished_;
  }
  if (h.opcode == kPong && ping_outstanding && body.size() == 8 &&
      memcmp(body.data(), ping_payload, 8) == 0) {
    ping_outstanding = false;  // the answer to sluice's own ping: not relayed
    r.armTimer();
    return true;
  }
  if (!r.config_.ping_relay) {
    // Per leg: sluice answers a ping itself and drops unsolicited pongs, so that neither peer
    // sees the other's control frames (a lax peer's ping handling never shows through).
    if (h.opcode == kPing) {
      sendControl(kPong, body);
    }
    return true;
  }
  if (!r.other(*this).close_sent) {
    out->write(frame);
  }
  return true;
}

void Relay::Leg::sendControl(uint8_t opcode, std::string_view body) {
  if (close_sent) {
    return;
  }
  if (relay->other(*this).mid_frame_out) {
    // A frame of the other direction is half-written toward this peer: nothing can go between.
    // Only the latest ping needs its pong (RFC 6455 5.5.3).
    if (opcode == kPong) {
      owe_pong = true;
      pong_owed.assign(body);
    }
    return;
  }
  std::string frame;
  if (from_client) {
    writeControlFrame(&frame, opcode, body, nullptr);  // toward the client: unmasked
  } else {
    uint8_t mask[4];
    randomMask(mask, relay->dispatcher_.nowMs());
    writeControlFrame(&frame, opcode, body, mask);  // toward the backend: masked
  }
  in->write(frame);
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
  if (end_of_message) {
    ++stats_.messages[dir];
  }
  if (route_slot_ == nullptr) {
    return;
  }
  route_slot_->ws_bytes[dir].inc(bytes);
  if (end_of_message) {
    route_slot_->ws_messages[dir].inc();
    route_slot_->ws_message_bytes[dir].observeWhole(message_bytes, metrics::kSizeBoundsWhole);
  }
}

size_t Relay::heldBytes() const {
  // Asked after every read: recounted only when a buffer may have changed since the last time
  // (frames relayed as they come, or validated in place, leave every buffer alone). A message
  // out with a filter is recounted always: the filter may rewrite it at any time.
  if (held_changed_ || up_.message || down_.message) {
    held_changed_ = false;
    held_bytes_ = up_.held.capacity() + up_.payload.capacity() + up_.backlog.capacity() +
                  down_.held.capacity() + down_.payload.capacity() + down_.backlog.capacity();
  }
  return held_bytes_;
}

void Relay::shed() {
  fail(up_, kPolicyViolation, "sluice is short of memory");
}

// ---- filters -------------------------------------------------------------------------------

void Relay::filterCloseWebSocket(filters::Direction from, uint16_t code, std::string_view reason) {
  fail(leg(from), code, reason);
}

void Relay::filterReadDisable(filters::Direction direction, bool disable) {
  leg(direction).pause(kFilterPause, disable);
}

void Relay::scheduleReplay() {
  if (!replay_timer_) {
    replay_timer_ = dispatcher_.createTimer([this] { replayBacklogs(); });
  }
  if (!replay_timer_->armed()) {
    replay_timer_->arm(std::chrono::milliseconds(0));
  }
}

void Relay::replayBacklogs() {
  for (Leg* l : {&up_, &down_}) {
    if (finished_) {
      return;
    }
    if (l->paused == 0 && !l->backlog.empty()) {
      held_changed_ = true;
      std::string backlog = std::move(l->backlog);
      l->backlog.clear();
      l->feed(backlog.data(), backlog.size());
      afterInput(*l);
    }
  }
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
    randomMask(mask, dispatcher_.nowMs());
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
  stats_.close_reason.assign(reason.substr(0, 123));
  sendClose(offender, code, reason);
  // The innocent side learns that its peer went away (client fault) or failed (backend fault).
  sendClose(other(offender), offender.from_client ? kGoingAway : kBadGateway,
            offender.from_client ? "client connection ended" : "backend connection failed");
  finish();
}

void Relay::goAway(uint16_t code, std::string_view reason, const char* cause) {
  if (finished_) {
    return;
  }
  stats_.close_code = code;
  stats_.closed_by = ClosedBy::kSluice;
  stats_.close_reason.assign(reason.substr(0, 123));
  stats_.cause = cause;
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
  close_deadline_ = dispatcher_.nowMs() + kCloseTimeoutMs;
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
  timer_->disarm();
  if (filters_) {
    filters_->destroy();  // async work for messages that will never be sent is cancelled
  }
  owner_->relayFinished();
}

void Relay::lingerFor(std::chrono::milliseconds after) {
  lingering_ = true;
  timer_->arm(after);
}

// ---- timers: heartbeats, idle timeout, close handshake -------------------------------------

bool Relay::pings(const Leg& leg) const {
  // The client always gets sluice's heartbeats; the backend too when control frames are per leg.
  return config_.ping_interval.count() > 0 && (leg.from_client || !config_.ping_relay);
}

void Relay::armTimer() {
  if (finished_) {
    return;
  }
  uint64_t now = dispatcher_.nowMs();
  uint64_t due = UINT64_MAX;
  auto consider = [&](uint64_t t) { due = std::min(due, t); };
  if (closing_) {
    consider(close_deadline_);
  } else {
    const auto ping = static_cast<uint64_t>(config_.ping_interval.count());
    const auto pong = static_cast<uint64_t>(config_.pong_timeout.count());
    for (const Leg* l : {&up_, &down_}) {
      if (pings(*l)) {
        consider(l->ping_outstanding ? l->ping_sent_at + pong : l->last_rx + ping);
      }
    }
    uint64_t idle = static_cast<uint64_t>(config_.idle_timeout.count());
    if (idle > 0) {
      consider(last_rx_ + idle);
    }
  }
  if (due == UINT64_MAX) {
    timer_->disarm();
    return;
  }
  timer_->arm(std::chrono::milliseconds(due > now ? due - now : 0));
}

bool Relay::heartbeat(Leg& toward, uint64_t now) {
  const auto ping = static_cast<uint64_t>(config_.ping_interval.count());
  const auto pong = static_cast<uint64_t>(config_.pong_timeout.count());
  if (toward.ping_outstanding && now >= toward.ping_sent_at + pong) {
    if (toward.from_client) {
      LOG_INFO("websocket: client did not answer a ping within pong_timeout; closing");
      stats_.close_code = kGoingAway;
      stats_.closed_by = ClosedBy::kSluice;
      stats_.close_reason = "client did not answer pings";
      stats_.cause = "ping_timeout";
      up_.close_sent = true;  // the client is gone: nothing more is written to it
      sendClose(down_, kGoingAway, "client did not answer pings");
      finish();
    } else {
      fail(down_, kGoingAway, "backend did not answer pings");  // the client gets 1014
      stats_.cause = "ping_timeout";
    }
    return false;
  }
  if (!toward.ping_outstanding && now >= toward.last_rx + ping) {
    if (other(toward).mid_frame_out || toward.close_sent) {
      toward.last_rx = now - ping + 100;  // retry shortly, after the frame in progress
    } else {
      ++ping_counter_;
      memcpy(toward.ping_payload, &ping_counter_, 8);
      toward.sendControl(kPing, std::string_view(toward.ping_payload, 8));
      toward.ping_outstanding = true;
      toward.ping_sent_at = now;
    }
  }
  return true;
}

void Relay::onTimer() {
  if (lingering_) {
    owner_->lingerExpired();
    return;
  }
  if (finished_) {
    return;
  }
  uint64_t now = dispatcher_.nowMs();
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
    goAway(kGoingAway, "idle timeout", "idle_timeout");
    return;
  }
  for (Leg* l : {&up_, &down_}) {
    if (pings(*l) && !heartbeat(*l, now)) {
      return;
    }
  }
  armTimer();
}

}  // namespace sluice::ws
