#include "proxy/http/response_parser.h"

namespace sluice::http {

namespace {
ResponseParser* self(llhttp_t* p) {
  return static_cast<ResponseParser*>(p->data);
}
}  // namespace

ResponseParser::ResponseParser(Handler* handler) : handler_(handler) {
  reset(false, false);
}

const llhttp_settings_t& ResponseParser::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = &ResponseParser::cbMessageBegin;
    st.on_status = &ResponseParser::cbStatus;
    st.on_header_field = &ResponseParser::cbHeaderField;
    st.on_header_value = &ResponseParser::cbHeaderValue;
    st.on_headers_complete = &ResponseParser::cbHeadersComplete;
    st.on_body = &ResponseParser::cbBody;
    st.on_message_complete = &ResponseParser::cbMessageComplete;
    return st;
  }();
  return s;
}

void ResponseParser::reset(bool head_request, bool upgrade_request) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  head_.clear();
  last_was_value_ = false;
  head_request_ = head_request;
  upgrade_request_ = upgrade_request;
  head_done_ = upgraded_ = complete_ = stopped_ = keep_alive_ = false;
  refused_ = nullptr;
}

int ResponseParser::refuse(const char* reason) {
  refused_ = reason;
  return -1;
}

ResponseParser::Result ResponseParser::execute(const char* data, size_t len) {
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  const char* pos = llhttp_get_error_pos(&parser_);
  size_t consumed = (err != HPE_OK && pos != nullptr) ? static_cast<size_t>(pos - data) : len;
  if (err == HPE_OK) {
    return {Status::kNeedMore, len, nullptr};
  }
  if (upgraded_ && (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)) {
    return {Status::kUpgraded, consumed, nullptr};
  }
  if (err == HPE_PAUSED && complete_) {
    return {Status::kComplete, consumed, nullptr};
  }
  if (stopped_) {
    return {Status::kStopped, consumed, nullptr};
  }
  const char* reason = refused_ != nullptr ? refused_ : llhttp_get_error_reason(&parser_);
  return {Status::kError, consumed, reason != nullptr ? reason : "invalid response"};
}

ResponseParser::Result ResponseParser::finish() {
  if (head_done_ && llhttp_message_needs_eof(&parser_) != 0) {
    llhttp_errno_t err = llhttp_finish(&parser_);
    if ((err == HPE_OK || err == HPE_PAUSED) && complete_) {
      keep_alive_ = false;
      return {Status::kComplete, 0, nullptr};
    }
  }
  return {Status::kError, 0, head_done_ ? "response truncated" : "no response"};
}

int ResponseParser::cbMessageBegin(llhttp_t* p) {
  ResponseParser* r = self(p);
  r->head_.clear();
  r->last_was_value_ = false;
  return 0;
}

int ResponseParser::cbStatus(llhttp_t* p, const char* at, size_t len) {
  self(p)->head_.reason.append(at, len);
  return 0;
}

int ResponseParser::cbHeaderField(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* r = self(p);
  if (r->last_was_value_ || r->head_.headers.empty()) {
    if (r->head_.headers.capacity() == 0) {
      r->head_.headers.reserve(kInitialHeaders);  // not 1, 2, 4, 8, each moving the strings
    }
    r->head_.headers.emplace_back();
    r->last_was_value_ = false;
  }
  r->head_.headers.back().name.append(at, len);
  return 0;
}

int ResponseParser::cbHeaderValue(llhttp_t* p, const char* at, size_t len) {
  ResponseParser* r = self(p);
  r->last_was_value_ = true;
  if (!r->head_.headers.empty()) {
    r->head_.headers.back().value.append(at, len);
  }
  return 0;
}

int ResponseParser::cbHeadersComplete(llhttp_t* p) {
  ResponseParser* r = self(p);
  ResponseHead& h = r->head_;
  h.status = static_cast<uint16_t>(llhttp_get_status_code(p));
  h.major = llhttp_get_http_major(p);
  h.minor = llhttp_get_http_minor(p);
  if (h.status == 101) {
    // Only an upgrade request may be answered with 101, and only with a valid handshake.
    if (!r->upgrade_request_) {
      return r->refuse("101 to a request that asked for no upgrade");
    }
    if (!r->handler_->onUpgrade(h)) {
      return r->refuse("invalid WebSocket handshake");
    }
    r->upgraded_ = true;
    return 0;
  }
  if (h.status >= 100 && h.status < 200) {
    r->handler_->onInformational(h);
    return 0;
  }
  // sluice decides the framing here and writes it itself toward the client.
  BodyFraming framing;
  if (r->head_request_ || h.status == 204 || h.status == 304) {
    framing.kind = Framing::kNone;
  } else if ((p->flags & F_TRANSFER_ENCODING) != 0) {
    // As nginx does: no transfer coding but chunked alone, which sluice re-frames (another
    // coding would reach the client undeclared, or make the body close-delimited).
    if ((p->flags & F_CHUNKED) == 0 || !onlyChunked(h.headers)) {
      return r->refuse("unsupported Transfer-Encoding");
    }
    framing.kind = Framing::kChunked;
  } else if ((p->flags & F_CONTENT_LENGTH) != 0) {
    framing = {Framing::kContentLength, p->content_length};
  } else {
    framing.kind = Framing::kClose;
  }
  r->head_done_ = true;
  if (!r->handler_->onHead(h, framing)) {
    r->stopped_ = true;
    return -1;
  }
  // 1: no body, whatever the head declares. llhttp would read a Content-Length body after a 204
  // or 304 (it only skips it for HEAD answers): those bytes are not this response's, and what
  // follows the response leaves the connection in doubt (never pooled).
  return framing.kind == Framing::kNone ? 1 : 0;
}

int ResponseParser::cbBody(llhttp_t* p, const char* at, size_t len) {
  self(p)->handler_->onBody(at, len);
  return 0;
}

int ResponseParser::cbMessageComplete(llhttp_t* p) {
  ResponseParser* r = self(p);
  if (r->upgraded_) {
    return HPE_PAUSED;
  }
  if (r->head_.status >= 100 && r->head_.status < 200) {
    return 0;  // an informational response; the final one follows
  }
  r->complete_ = true;
  r->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  return HPE_PAUSED;
}

}  // namespace sluice::http
