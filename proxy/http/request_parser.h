#pragma once

// The request side of HTTP/1.1: llhttp decides the framing, and sluice checks the rest. Every
// byte of a head, a chunk line and a trailer section passes MessageSyntax (the RFC 9112
// grammar) before llhttp sees it, region by region, so llhttp's leniencies never reach a
// handler; after a head, the head size, Host and Transfer-Encoding rules. Chunk lines are
// checked here and handed to llhttp as a bare "size CRLF", so extensions never reach it.
// Pure code over byte slices: no I/O, so unit tests and the fuzzer drive it directly.

#include <cstddef>
#include <cstdint>

#include <llhttp.h>

#include "proxy/http/message.h"
#include "proxy/http/syntax.h"

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
  // Which bytes come next, and who checks them: the scanned phases pass MessageSyntax before
  // llhttp; chunk data and Content-Length bodies are opaque and go to llhttp as they are.
  enum class Phase : uint8_t {
    kHead,
    kBody,  // a Content-Length body: llhttp pauses at its end
    kChunkLine,
    kChunkData,
    kChunkDataEnd,
    kTrailers,
    kUpgraded,  // after an upgrade request: llhttp answers HPE_PAUSED_UPGRADE until resumed
  };

  static int cbMessageBegin(llhttp_t* p);
  static int cbUrl(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderField(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderFieldComplete(llhttp_t* p);
  static int cbHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int cbHeadersComplete(llhttp_t* p);
  static int cbBody(llhttp_t* p, const char* at, size_t len);
  static int cbChunkHeader(llhttp_t* p);
  static int cbChunkComplete(llhttp_t* p);
  static int cbMessageComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();

  int reject(uint16_t status, const char* reason);
  bool countHeadBytes(size_t n);
  // The checks that need the whole head; returns 0 or a reject.
  int validateHead();
  void setPhase(Phase phase);
  // Runs llhttp over bytes the phase allows. Returns true when llhttp took them all and goes
  // on; otherwise `*out` says why it stopped, with `consumed` counted from `data`.
  bool feed(const char* data, size_t len, Result* out, bool even_empty = false);
  Result fail(uint16_t status, const char* reason, size_t consumed);

  Handler* handler_;
  uint64_t max_header_bytes_;
  llhttp_t parser_;
  RequestHead head_;
  MessageSyntax syntax_;
  Phase phase_ = Phase::kHead;
  uint32_t phase_changes_ = 0;  // to see that llhttp ended a region where the scanner did
  bool in_name_ = false;        // the last header name may continue in the next slice
  size_t head_bytes_ = 0;
  uint64_t chunk_left_ = 0;  // kChunkData: data bytes still to come
  // Bytes the scanner passed that llhttp has not taken yet because it paused in their region;
  // the next execute() starts with them.
  size_t unfed_ = 0;
  uint16_t reject_status_ = 0;
  const char* reject_reason_ = "";
  bool stopped_ = false;
  Status final_ = Status::kNeedMore;  // kStopped or kError once parsing has ended for good
  uint16_t final_status_ = 0;
  const char* final_reason_ = "";
};

}  // namespace sluice::http
