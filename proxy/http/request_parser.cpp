#include "proxy/http/request_parser.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace sluice::http {

namespace {
RequestParser* self(llhttp_t* p) {
  return static_cast<RequestParser*>(p->data);
}
}  // namespace

RequestParser::RequestParser(Handler* handler, uint64_t max_header_bytes)
    : handler_(handler), max_header_bytes_(max_header_bytes) {
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  parser_.data = this;
}

const llhttp_settings_t& RequestParser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = &RequestParser::cbMessageBegin;
    st.on_url = &RequestParser::cbUrl;
    st.on_header_field = &RequestParser::cbHeaderField;
    st.on_header_field_complete = &RequestParser::cbHeaderFieldComplete;
    st.on_header_value = &RequestParser::cbHeaderValue;
    st.on_headers_complete = &RequestParser::cbHeadersComplete;
    st.on_body = &RequestParser::cbBody;
    st.on_chunk_header = &RequestParser::cbChunkHeader;
    st.on_chunk_complete = &RequestParser::cbChunkComplete;
    st.on_message_complete = &RequestParser::cbMessageComplete;
    return st;
  }();
  return s;
}

RequestParser::Result RequestParser::fail(uint16_t status, const char* reason, size_t consumed) {
  final_ = Status::kError;
  final_status_ = status;
  final_reason_ = reason;
  return {Status::kError, consumed, status, reason};
}

bool RequestParser::feed(const char* data, size_t len, Result* out, bool even_empty) {
  if (len == 0 && !even_empty) {
    return true;
  }
  stopped_ = false;
  reject_status_ = 0;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) {
    return true;
  }
  const char* pos = llhttp_get_error_pos(&parser_);
  size_t consumed = len;
  if (pos != nullptr && pos >= data && pos <= data + len) {
    consumed = static_cast<size_t>(pos - data);
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    *out = {Status::kPaused, consumed, 0, ""};
  } else if (reject_status_ != 0) {
    *out = fail(reject_status_, reject_reason_, consumed);
  } else if (stopped_) {
    final_ = Status::kStopped;
    *out = {Status::kStopped, consumed, 0, ""};
  } else if (err == HPE_INVALID_METHOD) {
    // The scanner let the method through, so it is a token: a method llhttp does not know
    // (RFC 9110 9.1).
    *out = fail(501, "method not implemented", consumed);
  } else {
    const char* reason = llhttp_get_error_reason(&parser_);
    *out = fail(400, reason != nullptr ? reason : "malformed request", consumed);
  }
  return false;
}

RequestParser::Result RequestParser::execute(const char* data, size_t len) {
  if (final_ != Status::kNeedMore) {
    return {final_, 0, final_status_, final_reason_};
  }
  Result out{};
  if (len == 0) {
    // No bytes, after resume() from a pause at the head: llhttp needs a call to finish a
    // request that has no body.
    if (!feed("", 0, &out, true)) {
      return out;
    }
    return {Status::kNeedMore, 0, 0, ""};
  }
  size_t pos = 0;
  if (unfed_ > 0) {
    size_t n = std::min(unfed_, len);
    if (!feed(data, n, &out)) {
      unfed_ -= out.consumed;
      return out;
    }
    unfed_ -= n;
    pos = n;
  }
  while (pos < len) {
    const char* at = data + pos;
    size_t avail = len - pos;
    switch (phase_) {
      case Phase::kHead:
      case Phase::kChunkDataEnd:
      case Phase::kTrailers: {
        MessageSyntax::Scan s = syntax_.scan(at, avail);
        if (s.error != nullptr) {
          return fail(400, s.error, pos + s.used);
        }
        uint32_t changes = phase_changes_;
        if (!feed(at, s.used, &out)) {
          if (out.status == Status::kPaused) {
            unfed_ = s.used - out.consumed;
          }
          out.consumed += pos;
          return out;
        }
        pos += s.used;
        // llhttp must end the region exactly where the grammar does; anything else means the
        // two parsers disagree about where the message is, which is how smuggling starts.
        if (s.done != (phase_changes_ != changes)) {
          return fail(400, "request framing is ambiguous", pos);
        }
        break;
      }
      case Phase::kChunkLine: {
        MessageSyntax::Scan s = syntax_.scan(at, avail);
        if (s.error != nullptr) {
          return fail(400, s.error, pos + s.used);
        }
        pos += s.used;
        if (s.done) {
          // llhttp gets the size alone: the extensions were checked above and go no further.
          char line[24];
          int n = snprintf(line, sizeof(line), "%" PRIx64 "\r\n", syntax_.chunkSize());
          uint32_t changes = phase_changes_;
          if (!feed(line, static_cast<size_t>(n), &out) || phase_changes_ == changes) {
            return out.status == Status::kError
                       ? Result{Status::kError, pos, out.error_status, out.error_reason}
                       : fail(400, "request framing is ambiguous", pos);
          }
        }
        break;
      }
      case Phase::kChunkData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, avail));
        if (!feed(at, n, &out)) {
          out.consumed += pos;
          return out;
        }
        pos += n;
        chunk_left_ -= n;
        if (chunk_left_ == 0) {
          setPhase(Phase::kChunkDataEnd);
        }
        break;
      }
      case Phase::kBody:
      case Phase::kUpgraded:
        if (!feed(at, avail, &out)) {
          out.consumed += pos;
          return out;
        }
        pos = len;
        break;
    }
  }
  return {Status::kNeedMore, len, 0, ""};
}

void RequestParser::resume() {
  if (llhttp_get_errno(&parser_) == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&parser_);
    setPhase(Phase::kHead);
  } else if (llhttp_get_errno(&parser_) == HPE_PAUSED) {
    llhttp_resume(&parser_);
  }
}

void RequestParser::setPhase(Phase phase) {
  phase_ = phase;
  ++phase_changes_;
  switch (phase) {
    case Phase::kHead:
      syntax_.begin(MessageSyntax::Region::kHead);
      break;
    case Phase::kChunkLine:
      syntax_.begin(MessageSyntax::Region::kChunkLine);
      break;
    case Phase::kChunkDataEnd:
      syntax_.begin(MessageSyntax::Region::kChunkDataEnd);
      break;
    case Phase::kTrailers:
      syntax_.begin(MessageSyntax::Region::kTrailers);
      break;
    case Phase::kBody:
    case Phase::kChunkData:
    case Phase::kUpgraded:
      break;
  }
}

int RequestParser::reject(uint16_t status, const char* reason) {
  reject_status_ = status;
  reject_reason_ = reason;
  return HPE_USER;
}

bool RequestParser::countHeadBytes(size_t n) {
  head_bytes_ += n;
  return head_bytes_ <= max_header_bytes_;
}

int RequestParser::cbMessageBegin(llhttp_t* p) {
  RequestParser* r = self(p);
  r->head_.clear();
  r->in_name_ = false;
  r->head_bytes_ = 0;
  r->handler_->onMessageBegin();
  return 0;
}

int RequestParser::cbUrl(llhttp_t* p, const char* at, size_t len) {
  RequestParser* r = self(p);
  if (!r->countHeadBytes(len)) {
    return r->reject(431, "request head too large");
  }
  r->head_.url.append(at, len);
  return 0;
}

int RequestParser::cbHeaderField(llhttp_t* p, const char* at, size_t len) {
  RequestParser* r = self(p);
  if (!r->in_name_) {
    if (r->head_.headers.capacity() == 0) {
      r->head_.headers.reserve(kInitialHeaders);  // not 1, 2, 4, 8, 16, each moving the strings
    }
    r->head_.headers.emplace_back();
    r->head_bytes_ += 4;  // ": " and CRLF
    r->in_name_ = true;
  }
  if (!r->countHeadBytes(len)) {
    return r->reject(431, "request head too large");
  }
  r->head_.headers.back().name.append(at, len);
  return 0;
}

int RequestParser::cbHeaderFieldComplete(llhttp_t* p) {
  self(p)->in_name_ = false;
  return 0;
}

int RequestParser::cbHeaderValue(llhttp_t* p, const char* at, size_t len) {
  RequestParser* r = self(p);
  if (len == 0) {
    return 0;  // an empty value ("X-Empty:"); llhttp may point it past the line end
  }
  if (!r->countHeadBytes(len)) {
    return r->reject(431, "request head too large");
  }
  if (r->head_.headers.empty()) {
    r->head_.headers.emplace_back();
  }
  r->head_.headers.back().value.append(at, len);
  return 0;
}

int RequestParser::validateHead() {
  RequestHead& req = head_;
  req.major = llhttp_get_http_major(&parser_);
  req.minor = llhttp_get_http_minor(&parser_);
  req.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  if (req.major != 1) {
    return reject(505, "only HTTP/1.x is supported");
  }
  size_t hosts = req.count("host");
  if (hosts > 1) {
    return reject(400, "more than one Host header");
  }
  if (hosts == 0 && req.minor >= 1) {
    return reject(400, "missing Host header");
  }
  if (chunked()) {
    // Only "chunked" itself: sluice re-frames bodies, so it cannot pass other codings on.
    for (const Header& h : req.headers) {
      if (iequals(h.name, "transfer-encoding") && !iequals(h.value, "chunked")) {
        return reject(501, "transfer codings other than chunked are not supported");
      }
    }
  }
  if ((parser_.flags & F_TRANSFER_ENCODING) != 0 && !chunked()) {
    // llhttp reports this only after on_headers_complete; nothing may reach a backend first.
    return reject(400, "Transfer-Encoding other than a final chunked");
  }
  if (req.minor == 0 && (parser_.flags & F_TRANSFER_ENCODING) != 0) {
    return reject(400, "Transfer-Encoding in an HTTP/1.0 request");
  }
  if (req.method == "CONNECT") {
    return reject(405, "CONNECT is not supported");
  }
  return 0;
}

int RequestParser::cbHeadersComplete(llhttp_t* p) {
  RequestParser* r = self(p);
  if (int rc = r->validateHead(); rc != 0) {
    return rc;
  }
  r->setPhase(r->chunked() ? Phase::kChunkLine : Phase::kBody);
  switch (r->handler_->onHead()) {
    case HeadAction::kContinue:
      return 0;
    case HeadAction::kPause:
      return HPE_PAUSED;
    case HeadAction::kStop:
      break;
  }
  r->stopped_ = true;
  return HPE_USER;
}

int RequestParser::cbBody(llhttp_t* p, const char* at, size_t len) {
  RequestParser* r = self(p);
  if (!r->handler_->onBody(at, len)) {
    r->stopped_ = true;
    return HPE_USER;
  }
  return 0;
}

int RequestParser::cbChunkHeader(llhttp_t* p) {
  RequestParser* r = self(p);
  if (r->phase_ != Phase::kChunkLine || p->content_length != r->syntax_.chunkSize()) {
    return r->reject(400, "request framing is ambiguous");
  }
  if (p->content_length == 0) {
    r->setPhase(Phase::kTrailers);
  } else {
    r->chunk_left_ = p->content_length;
    r->setPhase(Phase::kChunkData);
  }
  return 0;
}

int RequestParser::cbChunkComplete(llhttp_t* p) {
  RequestParser* r = self(p);
  if (r->phase_ == Phase::kChunkDataEnd) {
    r->setPhase(Phase::kChunkLine);
  }
  return 0;  // the last chunk completes after its trailers: its phase is kTrailers
}

int RequestParser::cbMessageComplete(llhttp_t* p) {
  RequestParser* r = self(p);
  r->setPhase(p->upgrade != 0 ? Phase::kUpgraded : Phase::kHead);
  r->handler_->onMessageComplete();
  return HPE_PAUSED;
}

}  // namespace sluice::http
