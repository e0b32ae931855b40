#include "proxy/http/request_parser.h"

#include <algorithm>
#include <cstring>

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
    st.on_header_value_complete = &RequestParser::cbHeaderValueComplete;
    st.on_headers_complete = &RequestParser::cbHeadersComplete;
    st.on_body = &RequestParser::cbBody;
    st.on_message_complete = &RequestParser::cbMessageComplete;
    st.on_chunk_complete = &RequestParser::cbChunkComplete;
    return st;
  }();
  return s;
}

RequestParser::Result RequestParser::execute(const char* data, size_t len) {
  exec_start_ = data;
  exec_end_ = data + len;
  chunk_data_end_ = nullptr;
  stopped_ = false;
  reject_status_ = 0;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (chunk_data_pending_) {
    // A chunk's data ended but its CRLF has not been checked yet: keep the bytes after the data
    // (at most two) for the check in a later slice.
    const char* from = chunk_data_end_ != nullptr ? chunk_data_end_ : data;
    if (chunk_data_end_ != nullptr) {
      crlf_seen_len_ = 0;
    }
    while (crlf_seen_len_ < 2 && from < exec_end_) {
      crlf_seen_[crlf_seen_len_++] = *from++;
    }
  }
  // Remember whether this slice ends in a line break plus optional whitespace, for obs-fold
  // detection when the next slice starts with a value.
  const char* q = data + len;
  while (q > data && (q[-1] == ' ' || q[-1] == '\t')) {
    --q;
  }
  if (q > data) {
    after_line_break_ = q[-1] == '\n';
  }
  const char* pos = llhttp_get_error_pos(&parser_);
  size_t consumed = (err != HPE_OK && pos != nullptr) ? static_cast<size_t>(pos - data) : len;
  switch (err) {
    case HPE_OK:
      return {Status::kNeedMore, len, 0, ""};
    case HPE_PAUSED:
    case HPE_PAUSED_UPGRADE:
      return {Status::kPaused, consumed, 0, ""};
    default:
      break;
  }
  if (reject_status_ != 0) {
    return {Status::kError, consumed, reject_status_, reject_reason_};
  }
  if (stopped_) {
    return {Status::kStopped, consumed, 0, ""};
  }
  const char* reason = llhttp_get_error_reason(&parser_);
  return {Status::kError, consumed, 400, reason != nullptr ? reason : "malformed request"};
}

void RequestParser::resume() {
  if (llhttp_get_errno(&parser_) == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&parser_);
  } else if (llhttp_get_errno(&parser_) == HPE_PAUSED) {
    llhttp_resume(&parser_);
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
  r->last_cb_ = LastCb::kNone;
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
  if (r->last_cb_ != LastCb::kField) {
    if (r->head_.headers.capacity() == 0) {
      r->head_.headers.reserve(kInitialHeaders);  // not 1, 2, 4, 8, 16, each moving the strings
    }
    r->head_.headers.emplace_back();
    r->head_bytes_ += 4;  // ": " and CRLF
  }
  if (!r->countHeadBytes(len)) {
    return r->reject(431, "request head too large");
  }
  r->last_cb_ = LastCb::kField;
  r->head_.headers.back().name.append(at, len);
  return 0;
}

int RequestParser::cbHeaderFieldComplete(llhttp_t* p) {
  RequestParser* r = self(p);
  r->last_cb_ = LastCb::kFieldComplete;
  const std::string& name = r->head_.headers.back().name;
  // llhttp accepts "Host : x"; RFC 9112 5.1 requires rejecting whitespace before the colon.
  if (!name.empty() && (name.back() == ' ' || name.back() == '\t')) {
    return r->reject(400, "whitespace between header name and colon");
  }
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
  // llhttp folds obs-fold continuation lines into the value. Such a span follows a line end
  // (and optional whitespace); a span continuing a value split across reads does not.
  const char* q = at;
  while (q > r->exec_start_ && (q[-1] == ' ' || q[-1] == '\t')) {
    --q;
  }
  bool fold = q > r->exec_start_ ? q[-1] == '\n' : r->after_line_break_;
  if (fold) {
    return r->reject(400, "obsolete line folding in header");
  }
  r->last_cb_ = LastCb::kValue;
  if (r->head_.headers.empty()) {
    r->head_.headers.emplace_back();
  }
  r->head_.headers.back().value.append(at, len);
  return 0;
}

int RequestParser::cbHeaderValueComplete(llhttp_t* p) {
  self(p)->last_cb_ = LastCb::kValueComplete;
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
  if (r->chunked()) {
    r->chunk_data_pending_ = true;
    r->chunk_data_end_ = at + len;
    r->crlf_seen_len_ = 0;
  }
  if (!r->handler_->onBody(at, len)) {
    r->stopped_ = true;
    return HPE_USER;
  }
  return 0;
}

int RequestParser::cbChunkComplete(llhttp_t* p) {
  RequestParser* r = self(p);
  if (!r->chunk_data_pending_) {
    return 0;  // the last (empty) chunk: no data, no CRLF of its own
  }
  r->chunk_data_pending_ = false;
  char crlf[2];
  size_t have = 0;
  if (r->chunk_data_end_ != nullptr) {
    // The data ended in this slice; the CRLF follows it here.
    have = std::min<size_t>(2, static_cast<size_t>(r->exec_end_ - r->chunk_data_end_));
    memcpy(crlf, r->chunk_data_end_, have);
  } else {
    have = r->crlf_seen_len_;
    memcpy(crlf, r->crlf_seen_, have);
  }
  for (size_t i = have; i < 2; ++i) {
    // The rest of the CRLF is at the start of this slice.
    crlf[i] = r->exec_start_[i - have];
  }
  if (crlf[0] != '\r' || crlf[1] != '\n') {
    return r->reject(400, "chunk data not followed by CRLF");
  }
  return 0;
}

int RequestParser::cbMessageComplete(llhttp_t* p) {
  self(p)->handler_->onMessageComplete();
  return HPE_PAUSED;
}

}  // namespace sluice::http
