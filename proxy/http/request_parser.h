#pragma once

// The request side of HTTP/1.1: llhttp in strict mode plus the checks llhttp leaves to us
// (obs-fold, whitespace before the colon, head size, Host rules, Transfer-Encoding rules).
// Pure code over byte slices: no I/O, so unit tests and the fuzzer drive it directly.

#include <cstddef>
#include <cstdint>

#include <llhttp.h>

#include "proxy/http/message.h"

namespace sluice::http {

class RequestParser {
 public:
  // Room for this many headers is made at the first one: a browser sends 10 to 20.
  static constexpr size_t kInitialHeaders = 16;

  enum class HeadAction { kContinue, kPause, kStop };

  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onMessageBegin() {}
    // The head is complete and passed every check. kPause stops before the body (resume()
    // continues); kStop ends parsing (the handler has answered the request).
    virtual HeadAction onHead() = 0;
    // Return false to stop parsing.
    virtual bool onBody(const char* data, size_t len) = 0;
    // The whole request has been read. Parsing pauses after every request; resume() continues
    // with the next one (pipelining).
    virtual void onMessageComplete() = 0;
  };

  enum class Status {
    kNeedMore,  // everything consumed; the request is not complete yet
    kPaused,    // stopped after a head (kPause) or a complete request; `consumed` says where
    kStopped,   // a handler callback stopped parsing
    kError,     // a malformed request: answer `error_status` and close
  };
  struct Result {
    Status status;
    size_t consumed;
    uint16_t error_status;
    const char* error_reason;
  };

  RequestParser(Handler* handler, uint64_t max_header_bytes);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  Result execute(const char* data, size_t len);
  void resume();
  void setMaxHeaderBytes(uint64_t max) { max_header_bytes_ = max; }

  const RequestHead& head() const { return head_; }
  // The head for the filters to change before it goes on (valid until the next request begins).
  RequestHead& mutableHead() { return head_; }
  // Only valid after the head is complete.
  bool keepAlive() const { return llhttp_should_keep_alive(&parser_) != 0; }
  bool chunked() const { return (parser_.flags & F_CHUNKED) != 0; }
  bool hasContentLength() const { return (parser_.flags & F_CONTENT_LENGTH) != 0; }
  uint64_t contentLength() const { return parser_.content_length; }
  bool hasBody() const { return chunked() || (hasContentLength() && contentLength() > 0); }

 private:
  static int cbMessageBegin(llhttp_t* p);
  static int cbUrl(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderField(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderFieldComplete(llhttp_t* p);
  static int cbHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderValueComplete(llhttp_t* p);
  static int cbHeadersComplete(llhttp_t* p);
  static int cbBody(llhttp_t* p, const char* at, size_t len);
  static int cbMessageComplete(llhttp_t* p);
  static int cbChunkComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();

  int reject(uint16_t status, const char* reason);
  bool countHeadBytes(size_t n);
  // The checks that need the whole head; returns 0 or a reject.
  int validateHead();

  enum class LastCb : uint8_t { kNone, kField, kFieldComplete, kValue, kValueComplete };

  Handler* handler_;
  uint64_t max_header_bytes_;
  llhttp_t parser_;
  RequestHead head_;
  LastCb last_cb_ = LastCb::kNone;
  size_t head_bytes_ = 0;
  const char* exec_start_ = nullptr;
  bool after_line_break_ = false;  // the previous slice ended in "\n" and optional whitespace
  // llhttp 8 does not check the CRLF after chunk data ("5\r\nhelloXX0\r\n" would pass and
  // smuggle what follows). We check it: where the last body span of a chunk ended, and the
  // bytes after it that an earlier slice held.
  const char* exec_end_ = nullptr;
  const char* chunk_data_end_ = nullptr;  // in the current slice; null when not
  bool chunk_data_pending_ = false;       // a chunk's data ended and its CRLF is not checked yet
  char crlf_seen_[2] = {0, 0};
  uint8_t crlf_seen_len_ = 0;  // bytes after the data seen in earlier slices
  uint16_t reject_status_ = 0;
  const char* reject_reason_ = "";
  bool stopped_ = false;
};

}  // namespace sluice::http
