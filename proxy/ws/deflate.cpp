#include "proxy/ws/deflate.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "proxy/http/zstream.h"

namespace sluice::ws {

using http::iequals;
using http::ZStream;

namespace {

constexpr std::string_view kExtension = "permessage-deflate";

// ---- Sec-WebSocket-Extensions syntax (RFC 6455 9.1, lists and quoted strings per RFC 7230) ----

bool isTchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

struct Param {
  std::string_view name;
  std::string value;  // unquoted
  bool has_value = false;
};

struct Element {
  std::string_view name;
  std::vector<Param> params;
};

// Walks a comma-separated list of extensions. An element with a syntax error is reported as
// invalid and the walk goes on after the next comma outside a quoted string, so one bad element
// costs only itself.
class ExtensionScanner {
 public:
  explicit ExtensionScanner(std::string_view s) : s_(s) {}

  // The next non-empty element; false at the end of the list.
  bool next(Element* e, bool* valid) {
    for (;;) {
      skipSpace();
      if (i_ >= s_.size()) {
        return false;
      }
      if (s_[i_] == ',') {  // empty list elements are allowed (RFC 7230 7)
        ++i_;
        continue;
      }
      e->name = {};
      e->params.clear();
      *valid = element(e);
      if (!*valid) {
        skipPastComma();
      }
      return true;
    }
  }

 private:
  bool element(Element* e) {
    if (!token(&e->name)) {
      return false;
    }
    skipSpace();
    while (i_ < s_.size() && s_[i_] == ';') {
      ++i_;
      skipSpace();
      Param p;
      if (!token(&p.name)) {
        return false;
      }
      skipSpace();
      if (i_ < s_.size() && s_[i_] == '=') {
        ++i_;
        skipSpace();
        p.has_value = true;
        if (i_ < s_.size() && s_[i_] == '"') {
          if (!quoted(&p.value)) {
            return false;
          }
        } else {
          std::string_view t;
          if (!token(&t)) {
            return false;
          }
          p.value = t;
        }
        skipSpace();
      }
      e->params.push_back(std::move(p));
    }
    if (i_ < s_.size()) {
      if (s_[i_] != ',') {
        return false;
      }
      ++i_;
    }
    return true;
  }

  bool token(std::string_view* out) {
    size_t start = i_;
    while (i_ < s_.size() && isTchar(s_[i_])) {
      ++i_;
    }
    *out = s_.substr(start, i_ - start);
    return i_ > start;
  }

  // A quoted-string, unescaped into `out`; `i_` is on the opening quote.
  bool quoted(std::string* out) {
    ++i_;
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') {
        return true;
      }
      if (c == '\\') {
        if (i_ >= s_.size()) {
          return false;
        }
        c = static_cast<unsigned char>(s_[i_++]);
      }
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return false;
      }
      out->push_back(static_cast<char>(c));
    }
    return false;  // unterminated
  }

  void skipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) {
      ++i_;
    }
  }

  void skipPastComma() {
    bool in_quotes = false;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (in_quotes && c == '\\') {
        ++i_;
      } else if (c == '"') {
        in_quotes = !in_quotes;
      } else if (c == ',' && !in_quotes) {
        return;
      }
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

// A window size: a decimal integer 8..15 without leading zeros (RFC 7692 7.1.2). 0 if invalid.
uint8_t windowBits(std::string_view v) {
  if (v.size() == 1 && (v[0] == '8' || v[0] == '9')) {
    return static_cast<uint8_t>(v[0] - '0');
  }
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') {
    return static_cast<uint8_t>(10 + v[1] - '0');
  }
  return 0;
}

// The parameters of a permessage-deflate element; null, or why the element breaks RFC 7692. In
// an answer client_max_window_bits needs a value; in an offer it may go without.
const char* interpret(const Element& e, bool answer, DeflateParams* out) {
  DeflateParams p;
  bool seen_server_window = false;
  for (const Param& param : e.params) {
    if (iequals(param.name, "server_no_context_takeover") ||
        iequals(param.name, "client_no_context_takeover")) {
      bool& flag = param.name[0] == 's' || param.name[0] == 'S' ? p.server_no_context_takeover
                                                                : p.client_no_context_takeover;
      if (flag) {
        return "a repeated parameter";
      }
      if (param.has_value) {
        return "a value on a *_no_context_takeover parameter";
      }
      flag = true;
    } else if (iequals(param.name, "server_max_window_bits")) {
      if (seen_server_window) {
        return "a repeated parameter";
      }
      seen_server_window = true;
      p.server_max_window_bits = param.has_value ? windowBits(param.value) : 0;
      if (p.server_max_window_bits == 0) {
        return "server_max_window_bits without a value in 8..15";
      }
    } else if (iequals(param.name, "client_max_window_bits")) {
      if (p.client_max_window_bits) {
        return "a repeated parameter";
      }
      p.client_max_window_bits = true;
      if (param.has_value) {
        p.client_max_window_bits_value = windowBits(param.value);
        if (p.client_max_window_bits_value == 0) {
          return "client_max_window_bits outside 8..15";
        }
      } else if (answer) {
        return "client_max_window_bits without a value in an answer";
      }
    } else {
      return "an unknown permessage-deflate parameter";
    }
  }
  *out = p;
  return nullptr;
}

uint8_t clampWindow(uint8_t bits) {
  return std::clamp(bits, kMinDeflateWindowBits, kMaxWindowBits);
}

// What an offer and the answer to it mean for each direction (RFC 7692 7.1).
DeflateNegotiated negotiatedFrom(const DeflateParams& offer, const DeflateParams& answer) {
  DeflateNegotiated n;
  n.server_to_client.window_bits =
      answer.server_max_window_bits != 0 ? answer.server_max_window_bits : kMaxWindowBits;
  n.server_to_client.no_context_takeover = answer.server_no_context_takeover;
  // A value in the offer binds the client even when the answer does not repeat it (7.1.2.2),
  // and so does client_no_context_takeover (7.1.1.2).
  if (answer.client_max_window_bits_value != 0) {
    n.client_to_server.window_bits = answer.client_max_window_bits_value;
  } else if (offer.client_max_window_bits_value != 0) {
    n.client_to_server.window_bits = offer.client_max_window_bits_value;
  }
  n.client_to_server.no_context_takeover =
      answer.client_no_context_takeover || offer.client_no_context_takeover;
  return n;
}

// Null when `answer` is a valid acceptance of `offer`, else why not.
const char* answerMismatch(const DeflateParams& offer, const DeflateParams& answer) {
  if (answer.client_max_window_bits) {
    if (!offer.client_max_window_bits) {
      return "client_max_window_bits that was not offered";
    }
    if (offer.client_max_window_bits_value != 0 &&
        answer.client_max_window_bits_value > offer.client_max_window_bits_value) {
      return "client_max_window_bits larger than offered";
    }
  }
  if (offer.server_max_window_bits != 0) {
    if (answer.server_max_window_bits == 0) {
      return "server_max_window_bits offered and not answered";
    }
    if (answer.server_max_window_bits > offer.server_max_window_bits) {
      return "server_max_window_bits larger than offered";
    }
  }
  if (offer.server_no_context_takeover && !answer.server_no_context_takeover) {
    return "server_no_context_takeover offered and not answered";
  }
  return nullptr;
}

std::vector<std::string_view> extensionLines(const std::vector<http::Header>& headers) {
  std::vector<std::string_view> values;
  for (const http::Header& h : headers) {
    if (iequals(h.name, "sec-websocket-extensions")) {
      values.push_back(h.value);
    }
  }
  return values;
}

constexpr uint8_t kTail[4] = {0x00, 0x00, 0xff, 0xff};

// zlib counts in uInt: bigger inputs go in slices of this.
constexpr size_t kMaxSlice = size_t{1} << 30;

}  // namespace

// ---- negotiation ----

std::string formatDeflateParams(const DeflateParams& params) {
  std::string out(kExtension);
  if (params.server_no_context_takeover) {
    out += "; server_no_context_takeover";
  }
  if (params.client_no_context_takeover) {
    out += "; client_no_context_takeover";
  }
  if (params.server_max_window_bits != 0) {
    out += "; server_max_window_bits=" + std::to_string(params.server_max_window_bits);
  }
  if (params.client_max_window_bits) {
    out += "; client_max_window_bits";
    if (params.client_max_window_bits_value != 0) {
      out += "=" + std::to_string(params.client_max_window_bits_value);
    }
  }
  return out;
}

std::string formatDeflateOffers(std::span<const DeflateParams> offers) {
  std::string out;
  for (const DeflateParams& p : offers) {
    if (!out.empty()) {
      out += ", ";
    }
    out += formatDeflateParams(p);
  }
  return out;
}

std::vector<DeflateParams> parseDeflateOffers(std::span<const std::string_view> values) {
  std::vector<DeflateParams> offers;
  Element e;
  for (std::string_view value : values) {
    ExtensionScanner scanner(value);
    bool valid = false;
    while (scanner.next(&e, &valid)) {
      DeflateParams p;
      if (valid && iequals(e.name, kExtension) && interpret(e, false, &p) == nullptr) {
        offers.push_back(p);
      }
    }
  }
  return offers;
}

std::vector<DeflateParams> parseDeflateOffers(const std::vector<http::Header>& headers) {
  std::vector<std::string_view> values = extensionLines(headers);
  return parseDeflateOffers(values);
}

std::optional<DeflateAnswer> answerDeflateOffers(std::span<const DeflateParams> offers,
                                                 const DeflateConfig& config) {
  if (!config.enabled) {
    return std::nullopt;
  }
  const uint8_t deflate_bits = clampWindow(config.deflate_window_bits);
  const uint8_t inflate_bits = clampWindow(config.inflate_window_bits);
  for (size_t i = 0; i < offers.size(); ++i) {
    const DeflateParams& offer = offers[i];
    if (offer.server_max_window_bits != 0 && offer.server_max_window_bits < kMinDeflateWindowBits) {
      continue;  // window 8: zlib cannot compress with it, and 9 is not a legal answer
    }
    DeflateParams r;
    // sluice's window: never more than the client allows. Answered when the client asked (the
    // answer is how a server accepts that demand) or when it is smaller than the default 15.
    uint8_t limit =
        offer.server_max_window_bits != 0 ? offer.server_max_window_bits : kMaxWindowBits;
    uint8_t server_bits = std::min(deflate_bits, limit);
    if (offer.server_max_window_bits != 0 || server_bits < kMaxWindowBits) {
      r.server_max_window_bits = server_bits;
    }
    // A server may always announce that it starts every message afresh (7.1.1.1).
    r.server_no_context_takeover =
        offer.server_no_context_takeover || config.deflate_no_context_takeover;
    // The client's window can be limited only when it offered client_max_window_bits; what it
    // offered binds it already, so only a smaller value needs answering.
    if (offer.client_max_window_bits) {
      uint8_t client_limit = offer.client_max_window_bits_value != 0
                                 ? offer.client_max_window_bits_value
                                 : kMaxWindowBits;
      if (inflate_bits < client_limit) {
        r.client_max_window_bits = true;
        r.client_max_window_bits_value = inflate_bits;
      }
    }
    r.client_no_context_takeover = config.inflate_no_context_takeover;
    return DeflateAnswer{r, negotiatedFrom(offer, r), i};
  }
  return std::nullopt;
}

DeflateParams backendDeflateOffer(const DeflateConfig& config) {
  const uint8_t deflate_bits = clampWindow(config.deflate_window_bits);
  const uint8_t inflate_bits = clampWindow(config.inflate_window_bits);
  DeflateParams o;
  // Offered so that a backend short of memory may ask for a smaller window; a value says how
  // small sluice's window is already.
  o.client_max_window_bits = true;
  o.client_max_window_bits_value = deflate_bits < kMaxWindowBits ? deflate_bits : 0;
  o.server_max_window_bits = inflate_bits < kMaxWindowBits ? inflate_bits : 0;
  o.server_no_context_takeover = config.inflate_no_context_takeover;
  o.client_no_context_takeover = config.deflate_no_context_takeover;
  return o;
}

BackendDeflateAnswer checkBackendDeflateAnswer(std::span<const std::string_view> values,
                                               std::span<const DeflateParams> offers) {
  BackendDeflateAnswer result;
  bool answered = false;
  Element e;
  for (std::string_view value : values) {
    ExtensionScanner scanner(value);
    bool valid = false;
    while (scanner.next(&e, &valid)) {
      if (!valid) {
        result.error = "a malformed Sec-WebSocket-Extensions answer";
        return result;
      }
      if (!iequals(e.name, kExtension) || offers.empty()) {
        result.error = "an extension that was not offered";
        return result;
      }
      if (answered) {
        result.error = "permessage-deflate accepted twice";
        return result;
      }
      answered = true;
      if (const char* why = interpret(e, true, &result.response)) {
        result.error = why;
        return result;
      }
    }
  }
  if (!answered) {
    return result;
  }
  const char* first_mismatch = nullptr;
  for (size_t i = 0; i < offers.size(); ++i) {
    const char* why = answerMismatch(offers[i], result.response);
    if (why == nullptr) {
      result.accepted = true;
      result.offer = i;
      result.negotiated = negotiatedFrom(offers[i], result.response);
      return result;
    }
    if (first_mismatch == nullptr) {
      first_mismatch = why;
    }
  }
  result.error = first_mismatch;
  return result;
}

BackendDeflateAnswer checkBackendDeflateAnswer(const std::vector<http::Header>& headers,
                                               std::span<const DeflateParams> offers) {
  std::vector<std::string_view> values = extensionLines(headers);
  return checkBackendDeflateAnswer(values, offers);
}

// ---- streams kept between messages ----

namespace {

// Without context takeover a zlib stream serves one message. Making one (and ending it) costs far
// more than a short message's own work: measured ~19k instructions per 64 B message to inflate
// and ~120k to deflate, against ~2.7k for the whole relay of an uncompressed one. So a stream
// that finished its message cleanly is reset and kept for the next message of any connection on
// the same thread (a worker); a connection still holds nothing while idle. At most
// kMaxIdleStreams are kept per thread (about 1 MiB at the default window and memory level:
// a deflater holds 2^(window_bits+2) + 2^(mem_level+9) bytes, an inflater 2^window_bits + ~7 KiB).
constexpr size_t kMaxIdleStreams = 4;

struct IdleStream {
  int key;  // inflaters: window bits; deflaters: kDeflaterKey | level, window bits, memory level
  std::unique_ptr<http::ZStream> z;
};

constexpr int kDeflaterKey = 1 << 16;

std::vector<IdleStream>& idleStreams() {
  thread_local std::vector<IdleStream> idle;
  return idle;
}

std::unique_ptr<http::ZStream> takeIdleStream(int key) {
  std::vector<IdleStream>& idle = idleStreams();
  for (auto it = idle.begin(); it != idle.end(); ++it) {
    if (it->key == key) {
      std::unique_ptr<http::ZStream> z = std::move(it->z);
      idle.erase(it);
      return z;
    }
  }
  return nullptr;
}

// `z` must have been reset (inflateReset/deflateReset) already.
void keepIdleStream(int key, std::unique_ptr<http::ZStream> z) {
  std::vector<IdleStream>& idle = idleStreams();
  if (idle.size() >= kMaxIdleStreams) {
    idle.erase(idle.begin());  // the oldest goes
  }
  idle.push_back({key, std::move(z)});
}

}  // namespace

// ---- Inflater ----

Inflater::Inflater(const Options& options) : options_(options) {
  options_.window_bits = clampWindow(options_.window_bits);  // zlib inflates a 2^8 window as 2^9
}

Inflater::~Inflater() = default;

size_t Inflater::memoryBytes() const {
  return z_ ? z_->memoryBytes() : 0;
}

Inflater::Status Inflater::fail(Status s) {
  failed_ = s;
  z_.reset();  // the stream is useless now; its memory goes at once
  return s;
}

void Inflater::reset() {
  z_.reset();
  produced_ = consumed_ = 0;
  failed_ = Status::kOk;
  ended_ = false;
}

Inflater::Status Inflater::feed(const uint8_t* data, size_t len, std::string* out) {
  if (failed_ != Status::kOk) {
    return failed_;
  }
  if (ended_) {  // after a final block: nothing more belongs to the deflate stream
    consumed_ += len;
    return Status::kOk;
  }
  if (len == 0) {
    return Status::kOk;
  }
  if (!z_) {
    if (options_.no_context_takeover) {
      z_ = takeIdleStream(options_.window_bits);
    }
    if (!z_) {
      z_ = std::make_unique<ZStream>();
      if (!z_->initInflate(-options_.window_bits)) {
        return fail(Status::kNoMemory);
      }
    }
  }
  while (len > 0 && !ended_) {
    size_t n = std::min(len, kMaxSlice);
    if (Status s = run(data, n, out); s != Status::kOk) {
      return s;
    }
    data += n;
    len -= n;
  }
  return Status::kOk;
}

Inflater::Status Inflater::run(const uint8_t* data, size_t len, std::string* out) {
  z_stream& s = z_->s;
  s.next_in = const_cast<Bytef*>(data);  // zlib's input is not const-qualified; it is not written
  s.avail_in = static_cast<uInt>(len);
  Bytef buf[16384];
  for (;;) {
    // Room for one byte past the bound: producing it is how "too big" is seen, and it is never
    // appended.
    uint64_t room = options_.max_message_bytes - produced_;
    size_t cap = room < sizeof buf ? static_cast<size_t>(room) + 1 : sizeof buf;
    s.next_out = buf;
    s.avail_out = static_cast<uInt>(cap);
    uInt in_before = s.avail_in;
    int rc = inflate(&s, Z_SYNC_FLUSH);
    size_t n = cap - s.avail_out;
    consumed_ += in_before - s.avail_in;
    if (n > room) {
      return fail(Status::kTooBig);
    }
    out->append(reinterpret_cast<const char*>(buf), n);
    produced_ += n;
    if (options_.max_ratio != 0 && produced_ > kRatioGrace &&
        produced_ / options_.max_ratio > consumed_) {
      return fail(Status::kRatio);
    }
    if (rc == Z_STREAM_END) {
      ended_ = true;
      consumed_ += s.avail_in;
      return Status::kOk;
    }
    if (rc == Z_MEM_ERROR) {
      return fail(Status::kNoMemory);
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return fail(Status::kCorrupt);  // Z_DATA_ERROR (a bad stream, a distance too far back)
    }
    if (s.avail_out != 0 && s.avail_in == 0) {
      return Status::kOk;  // everything consumed and nothing left to put out
    }
    if (n == 0 && in_before == s.avail_in) {
      return Status::kOk;  // no progress possible (zlib said Z_BUF_ERROR)
    }
  }
}

Inflater::Status Inflater::finishMessage(std::string* out) {
  if (failed_ != Status::kOk) {
    return failed_;
  }
  // A compressed message without a single payload byte is taken for empty: RFC 7692 7.2.3.6
  // says 0x00, but an empty payload leaves nothing to doubt.
  if (!ended_ && consumed_ > 0) {
    if (Status s = run(kTail, sizeof kTail, out); s != Status::kOk) {
      return s;
    }
    // The tail completes an empty stored block: the data must now be between blocks (zlib's
    // data_type bit 128). Anything else is a message cut short.
    if (!ended_ && (z_->s.data_type & 128) == 0) {
      return fail(Status::kCorrupt);
    }
  }
  if (options_.no_context_takeover) {
    // Nothing outlives the message: an idle connection holds no zlib memory. The stream serves
    // the thread's next message.
    if (z_ && inflateReset(&z_->s) == Z_OK) {
      keepIdleStream(options_.window_bits, std::move(z_));
    }
    z_.reset();
  } else if (ended_ && z_) {
    // The sender ended its deflate stream with a final block (7.2.3.4 allows it); the next
    // message is a new stream that may still refer to this one's window.
    std::string window(size_t{1} << kMaxWindowBits, '\0');
    uInt len = 0;
    z_stream& s = z_->s;
    if (inflateGetDictionary(&s, reinterpret_cast<Bytef*>(window.data()), &len) != Z_OK ||
        inflateReset(&s) != Z_OK ||
        inflateSetDictionary(&s, reinterpret_cast<const Bytef*>(window.data()), len) != Z_OK) {
      return fail(Status::kCorrupt);
    }
  }
  produced_ = consumed_ = 0;
  ended_ = false;
  return Status::kOk;
}

// ---- Deflater ----

Deflater::Deflater(const Options& options) : options_(options) {
  options_.window_bits = clampWindow(options_.window_bits);
  options_.mem_level = std::clamp<uint8_t>(options_.mem_level, 1, 9);
  options_.level = std::clamp(options_.level, -1, 9);
}

Deflater::~Deflater() = default;

void Deflater::release() {
  z_.reset();
}

size_t Deflater::memoryBytes() const {
  return z_ ? z_->memoryBytes() : 0;
}

bool Deflater::ensureStream() {
  if (z_) {
    return true;
  }
  if (options_.no_context_takeover && options_.release_after_message) {
    z_ = takeIdleStream(idleKey());
    if (z_) {
      return true;
    }
  }
  z_ = std::make_unique<ZStream>();
  if (!z_->initDeflate(options_.level, -options_.window_bits, options_.mem_level)) {
    z_.reset();
    return false;
  }
  return true;
}

bool Deflater::compress(std::string_view data, bool fin, std::string* out) {
  if (data.empty() && !fin) {
    return true;
  }
  if (!ensureStream()) {
    return false;
  }
  z_stream& s = z_->s;
  const size_t start = out->size();
  bool flushed_nothing = false;
  do {
    size_t n = std::min(data.size(), kMaxSlice);
    const bool last = n == data.size();
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    s.avail_in = static_cast<uInt>(n);
    data.remove_prefix(n);
    // Output room for the whole slice at once (a flushed slice never needs more than its bound
    // plus the flush's few bytes); a second round is a rare exception, not the pattern.
    size_t step = deflateBound(&s, s.avail_in) + 16;
    for (;;) {
      size_t at = out->size();
      out->resize(at + step);
      s.next_out = reinterpret_cast<Bytef*>(out->data() + at);
      s.avail_out = static_cast<uInt>(step);
      int rc = deflate(&s, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
      out->resize(out->size() - s.avail_out);
      if (rc == Z_BUF_ERROR) {
        flushed_nothing = true;  // no input since the last flush: nothing to put out
        break;
      }
      if (rc != Z_OK) {
        out->resize(start);
        release();
        return false;
      }
      if (s.avail_out != 0 && s.avail_in == 0) {
        break;
      }
    }
  } while (!data.empty());

  if (!fin) {
    return true;
  }
  if (flushed_nothing && out->size() == start) {
    // Nothing since the last flush (an empty message, or an empty last piece): one byte of an
    // empty stored block's header, which the receiver's 00 00 ff ff completes (7.2.3.6).
    out->push_back('\0');
  } else if (out->size() - start >= sizeof kTail &&
             std::memcmp(out->data() + out->size() - sizeof kTail, kTail, sizeof kTail) == 0) {
    out->resize(out->size() - sizeof kTail);
  } else {
    out->resize(start);  // cannot happen with Z_SYNC_FLUSH; never send a stream we cannot vouch for
    release();
    return false;
  }
  if (options_.no_context_takeover) {
    if (deflateReset(&s) != Z_OK) {
      release();
    } else if (options_.release_after_message) {
      keepIdleStream(idleKey(), std::move(z_));  // for the thread's next message
    }
  }
  return true;
}

int Deflater::idleKey() const {
  return kDeflaterKey | (options_.level + 1) << 8 | options_.window_bits << 4 | options_.mem_level;
}

}  // namespace sluice::ws
