#pragma once

// The response side of HTTP/1.1, as sluice reads a backend's answers: llhttp (strict) plus the
// decisions llhttp leaves to the caller: the body's framing (which sluice then writes itself
// toward the client), transfer codings other than chunked alone refused (as nginx does), 1xx
// answers told apart from the final one, a 101 only for an upgrade request. Pure code over byte
// slices: no I/O, so unit tests and the fuzzer drive it directly.

#include <cstddef>
#include <cstdint>

#include <llhttp.h>

#include "proxy/http/message.h"

namespace sluice::http {

class ResponseParser {
 public:
  // Room for this many headers is made at the first one: a backend sends 3 to 15.
  static constexpr size_t kInitialHeaders = 16;

  class Handler {
   public:
    virtual ~Handler() = default;
    // A 1xx other than 101; the final response follows.
    virtual void onInformational(const ResponseHead& head) = 0;
    // A 101 answering an upgrade request. Return false to refuse it (a bad handshake).
    virtual bool onUpgrade(const ResponseHead& head) = 0;
    // The final response head; `framing` is how its body is delimited (kClose: by the
    // connection's end). Return false to stop (the handler is done with this response).
    virtual bool onHead(const ResponseHead& head, BodyFraming framing) = 0;
    virtual void onBody(const char* data, size_t len) = 0;
  };

  enum class Status {
    kNeedMore,  // everything consumed; the response is not complete yet
    kComplete,  // the response ended at `consumed` (bytes after it are not part of it)
    kUpgraded,  // a 101 was accepted; the bytes from `consumed` on are the new protocol's
    kStopped,   // a handler callback returned false
    kError,     // unparsable, or refused (`reason`)
  };
  struct Result {
    Status status;
    size_t consumed;
    const char* reason;  // kError
  };

  explicit ResponseParser(Handler* handler);
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Prepares for the response to a new request.
  void reset(bool head_request, bool upgrade_request);
  Result execute(const char* data, size_t len);
  // The connection ended: completes a close-delimited response, or reports it truncated.
  Result finish();

  const ResponseHead& head() const { return head_; }
  // A final response head has been parsed (its body may still be arriving).
  bool headDone() const { return head_done_; }
  // Valid once complete: the backend allows another request on this connection.
  bool keepAlive() const { return keep_alive_; }

 private:
  static int cbMessageBegin(llhttp_t* p);
  static int cbStatus(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderField(llhttp_t* p, const char* at, size_t len);
  static int cbHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int cbHeadersComplete(llhttp_t* p);
  static int cbBody(llhttp_t* p, const char* at, size_t len);
  static int cbMessageComplete(llhttp_t* p);
  static const llhttp_settings_t& settings();
  int refuse(const char* reason);

  Handler* handler_;
  llhttp_t parser_;
  ResponseHead head_;
  bool last_was_value_ = false;
  bool head_request_ = false;
  bool upgrade_request_ = false;
  bool head_done_ = false;
  bool upgraded_ = false;
  bool complete_ = false;
  bool stopped_ = false;
  bool keep_alive_ = false;
  const char* refused_ = nullptr;
};

}  // namespace sluice::http
