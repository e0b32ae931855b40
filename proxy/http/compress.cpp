#include "proxy/http/compress.h"

#include <brotli/encode.h>

#include <algorithm>
#include <charconv>

#include "proxy/http/zstream.h"

namespace sluice::http {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// A qvalue (RFC 9110 12.4.2) in thousandths, or -1 when malformed.
int qvalue(std::string_view v) {
  if (v.empty() || (v[0] != '0' && v[0] != '1')) {
    return -1;
  }
  int whole = v[0] - '0';
  int frac = 0;
  if (v.size() > 1) {
    if (v[1] != '.' || v.size() > 5) {
      return -1;
    }
    int scale = 100;
    for (char c : v.substr(2)) {
      if (c < '0' || c > '9') {
        return -1;
      }
      frac += (c - '0') * scale;
      scale /= 10;
    }
  }
  int q = whole * 1000 + frac;
  return q > 1000 ? -1 : q;
}

// The q-values an Accept-Encoding list gives, in thousandths; -1 when a coding is not named.
struct Weights {
  int gzip = -1;
  int br = -1;
  int star = -1;

  int of(Coding c) const {
    int q = c == Coding::kGzip ? gzip : (c == Coding::kBrotli ? br : -1);
    return q >= 0 ? q : (star >= 0 ? star : 0);
  }
};

void readAcceptEncoding(std::string_view value, Weights* w) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view element = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);

    size_t semi = element.find(';');
    std::string_view coding = trim(element.substr(0, semi));
    int q = 1000;
    while (semi != std::string_view::npos) {
      element.remove_prefix(semi + 1);
      semi = element.find(';');
      std::string_view param = trim(element.substr(0, semi));
      if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        q = qvalue(param.substr(2));
      }
    }
    if (coding.empty() || q < 0) {
      continue;  // an empty or malformed element says nothing
    }
    int* slot = nullptr;
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      slot = &w->gzip;
    } else if (iequals(coding, "br")) {
      slot = &w->br;
    } else if (coding == "*") {
      slot = &w->star;
    }
    if (slot != nullptr && *slot < 0) {  // the first mention counts
      *slot = q;
    }
  }
}

std::string_view mediaType(std::string_view content_type) {
  return trim(content_type.substr(0, content_type.find(';')));
}

bool encodedAlready(const ResponseHead& response) {
  for (const Header& h : response.headers) {
    if (iequals(h.name, "content-encoding")) {
      std::string_view v = trim(h.value);
      if (!v.empty() && !iequals(v, "identity")) {
        return true;
      }
    }
  }
  return false;
}

// A stack buffer for the libraries' output, appended to the caller's string as produced: the
// string grows by what was produced, never by a guess.
constexpr size_t kOutChunk = 16384;
constexpr size_t kMaxSlice = size_t{1} << 30;  // zlib counts in uInt
constexpr size_t kBrotliSlice = 16384;

class GzipEncoder : public Encoder {
 public:
  bool init(const EncoderOptions& o) {
    int level = std::clamp(o.gzip_level, 1, 9);
    int bits = std::clamp<int>(o.gzip_window_bits, 9, 15);
    int mem = std::clamp<int>(o.gzip_mem_level, 1, 9);
    return z_.initDeflate(level, bits + 16, mem);  // +16: the gzip wrapper
  }

  bool write(std::string_view data, std::string* out) override {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kMaxSlice);
      if (!run(data.substr(0, n), Z_NO_FLUSH, out)) {
        return false;
      }
      data.remove_prefix(n);
    }
    return true;
  }
  bool flush(std::string* out) override { return run({}, Z_SYNC_FLUSH, out); }
  bool finish(std::string* out) override {
    bool ok = run({}, Z_FINISH, out);
    done_ = true;
    return ok;
  }
  size_t memoryBytes() const override { return z_.memoryBytes(); }
  Coding coding() const override { return Coding::kGzip; }

 private:
  bool run(std::string_view data, int mode, std::string* out) {
    if (done_) {
      return false;
    }
    z_stream& s = z_.s;
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));  // read, not written
    s.avail_in = static_cast<uInt>(data.size());
    Bytef buf[kOutChunk];
    for (;;) {
      s.next_out = buf;
      s.avail_out = sizeof buf;
      int rc = deflate(&s, mode);
      out->append(reinterpret_cast<const char*>(buf), sizeof buf - s.avail_out);
      if (rc == Z_STREAM_END) {
        return true;
      }
      if (rc == Z_BUF_ERROR) {
        return true;  // nothing to do (a flush with nothing new)
      }
      if (rc != Z_OK) {
        done_ = true;
        return false;
      }
      if (s.avail_out != 0 && s.avail_in == 0 && mode != Z_FINISH) {
        return true;
      }
    }
  }

  ZStream z_;
  bool done_ = false;
};

class BrotliEncoder : public Encoder {
 public:
  ~BrotliEncoder() override {
    if (state_ != nullptr) {
      BrotliEncoderDestroyInstance(state_);
    }
  }

  bool init(const EncoderOptions& o) {
    state_ = BrotliEncoderCreateInstance(&AllocationCounter::allocate, &AllocationCounter::release,
                                         &counter_);
    if (state_ == nullptr) {
      return false;
    }
    int quality = std::clamp(o.brotli_quality, BROTLI_MIN_QUALITY, BROTLI_MAX_QUALITY);
    int lgwin = std::clamp(o.brotli_window_bits, BROTLI_MIN_WINDOW_BITS, BROTLI_MAX_WINDOW_BITS);
    return BrotliEncoderSetParameter(state_, BROTLI_PARAM_QUALITY,
                                     static_cast<uint32_t>(quality)) &&
           BrotliEncoderSetParameter(state_, BROTLI_PARAM_LGWIN, static_cast<uint32_t>(lgwin));
  }

  bool write(std::string_view data, std::string* out) override {
    // In slices: at qualities 0 and 1 the encoder's memory follows the size of one input.
    while (!data.empty()) {
      size_t n = std::min(data.size(), kBrotliSlice);
      if (!run(data.substr(0, n), BROTLI_OPERATION_PROCESS, out)) {
        return false;
      }
      data.remove_prefix(n);
    }
    return true;
  }
  bool flush(std::string* out) override { return run({}, BROTLI_OPERATION_FLUSH, out); }
  bool finish(std::string* out) override {
    bool ok = run({}, BROTLI_OPERATION_FINISH, out);
    done_ = true;
    return ok;
  }
  size_t memoryBytes() const override { return counter_.bytes; }
  Coding coding() const override { return Coding::kBrotli; }

 private:
  bool run(std::string_view data, BrotliEncoderOperation op, std::string* out) {
    if (done_) {
      return false;
    }
    size_t avail_in = data.size();
    const auto* next_in = reinterpret_cast<const uint8_t*>(data.data());
    for (;;) {
      // No output buffer: the encoder keeps its output, taken below without another copy.
      size_t avail_out = 0;
      if (!BrotliEncoderCompressStream(state_, op, &avail_in, &next_in, &avail_out, nullptr,
                                       nullptr)) {
        done_ = true;
        return false;
      }
      size_t n = 0;
      const uint8_t* produced = BrotliEncoderTakeOutput(state_, &n);
      out->append(reinterpret_cast<const char*>(produced), n);
      bool more = BrotliEncoderHasMoreOutput(state_) != 0;
      if (op == BROTLI_OPERATION_FINISH ? BrotliEncoderIsFinished(state_) != 0
                                        : avail_in == 0 && !more) {
        return true;
      }
    }
  }

  AllocationCounter counter_;
  BrotliEncoderState* state_ = nullptr;
  bool done_ = false;
};

}  // namespace

const char* codingToken(Coding coding) {
  switch (coding) {
    case Coding::kGzip:
      return "gzip";
    case Coding::kBrotli:
      return "br";
    case Coding::kIdentity:
      break;
  }
  return "identity";
}

Coding chooseCoding(const std::vector<Header>& request_headers, std::span<const Coding> allowed) {
  Weights w;
  bool any = false;
  for (const Header& h : request_headers) {
    if (iequals(h.name, "accept-encoding")) {
      any = true;
      readAcceptEncoding(h.value, &w);
    }
  }
  if (!any) {
    return Coding::kIdentity;  // RFC 9110 would allow anything; no client sends nothing and means
                               // it
  }
  Coding best = Coding::kIdentity;
  int best_q = 0;
  for (Coding c : allowed) {
    int q = w.of(c);
    if (q > best_q) {  // strictly: on a tie the route's earlier preference stays
      best = c;
      best_q = q;
    }
  }
  return best;
}

std::vector<std::string> CompressPolicy::defaultTypes() {
  return {
      "text/*",
      "application/json",
      "application/javascript",
      "application/x-javascript",
      "application/ecmascript",
      "application/xml",
      "application/xhtml+xml",
      "application/rss+xml",
      "application/atom+xml",
      "application/ld+json",
      "application/manifest+json",
      "application/problem+json",
      "application/geo+json",
      "application/wasm",
      "application/vnd.ms-fontobject",
      "font/ttf",
      "font/otf",
      "image/svg+xml",
      "image/x-icon",
      "image/vnd.microsoft.icon",
      "image/bmp",
  };
}

bool typeMatches(std::string_view content_type, std::span<const std::string> patterns) {
  std::string_view type = mediaType(content_type);
  if (type.empty()) {
    return false;
  }
  for (const std::string& p : patterns) {
    if (p.size() >= 2 && p.compare(p.size() - 2, 2, "/*") == 0) {
      size_t prefix = p.size() - 1;  // "text/"
      if (type.size() > prefix && iequalsBytes(type.data(), p.data(), prefix)) {
        return true;
      }
    } else if (iequals(type, p)) {
      return true;
    }
  }
  return false;
}

const char* skipName(Skip skip) {
  switch (skip) {
    case Skip::kNone:
      return "none";
    case Skip::kMethod:
      return "method";
    case Skip::kStatus:
      return "status";
    case Skip::kRange:
      return "range";
    case Skip::kEncoded:
      return "encoded";
    case Skip::kNoTransform:
      return "no_transform";
    case Skip::kType:
      return "type";
    case Skip::kSmall:
      return "small";
  }
  return "?";
}

Skip compressionSkip(const RequestHead& request, const ResponseHead& response,
                     const CompressPolicy& policy) {
  if (iequals(request.method, "HEAD")) {
    return Skip::kMethod;
  }
  if (response.status < 200 || response.status == 204 || response.status == 206 ||
      response.status == 304) {
    return Skip::kStatus;
  }
  if (response.find("content-range") != nullptr) {
    return Skip::kRange;
  }
  if (encodedAlready(response)) {
    return Skip::kEncoded;
  }
  if (headersHaveToken(response.headers, "cache-control", "no-transform") ||
      headersHaveToken(request.headers, "cache-control", "no-transform")) {
    return Skip::kNoTransform;
  }
  const Header* type = response.find("content-type");
  if (type == nullptr || !typeMatches(type->value, policy.types) ||
      typeMatches(type->value, policy.exclude_types)) {
    return Skip::kType;
  }
  if (const Header* length = response.find("content-length")) {
    std::string_view v = trim(length->value);
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec == std::errc() && end == v.data() + v.size() && n < policy.min_length) {
      return Skip::kSmall;
    }
  }
  return Skip::kNone;
}

void addVaryAcceptEncoding(ResponseHead* response) {
  Header* first = nullptr;
  for (Header& h : response->headers) {
    if (!iequals(h.name, "vary")) {
      continue;
    }
    if (headerHasToken(h.value, "accept-encoding") || headerHasToken(h.value, "*")) {
      return;
    }
    if (first == nullptr) {
      first = &h;
    }
  }
  if (first == nullptr) {
    response->headers.push_back({"Vary", "Accept-Encoding"});
  } else if (trim(first->value).empty()) {
    first->value = "Accept-Encoding";
  } else {
    first->value += ", Accept-Encoding";
  }
}

void encodeResponseHead(ResponseHead* response, Coding coding) {
  std::vector<Header>& headers = response->headers;
  std::erase_if(headers, [](const Header& h) {
    return iequals(h.name, "content-length") || iequals(h.name, "content-encoding") ||
           iequals(h.name, "accept-ranges");
  });
  for (Header& h : headers) {
    if (iequals(h.name, "etag")) {
      std::string_view v = trim(h.value);
      if (!v.empty() && v.front() == '"') {
        h.value = "W/" + std::string(v);
      }
    }
  }
  headers.push_back({"Content-Encoding", codingToken(coding)});
  addVaryAcceptEncoding(response);
}

std::unique_ptr<Encoder> makeEncoder(Coding coding, const EncoderOptions& options) {
  if (coding == Coding::kGzip) {
    auto e = std::make_unique<GzipEncoder>();
    if (e->init(options)) {
      return e;
    }
  } else if (coding == Coding::kBrotli) {
    auto e = std::make_unique<BrotliEncoder>();
    if (e->init(options)) {
      return e;
    }
  }
  return nullptr;
}

}  // namespace sluice::http
