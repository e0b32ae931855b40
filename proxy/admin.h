#pragma once

// The admin listener: a small HTTP/1.1 server on the main thread's loop. One request per
// connection (answered with Connection: close); heads up to 16 KiB, bodies up to 64 KiB.

#include <functional>
#include <string>
#include <string_view>

#include <uv.h>

#include "conf/config.h"
#include "proxy/http/message.h"

namespace sluice {

struct AdminResponse {
  uint16_t status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string headers;  // extra header lines, each ending in CRLF
};

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const http::RequestHead& request)>;

  AdminServer(uv_loop_t* loop, Handler handler);
  ~AdminServer();
  bool listen(const conf::Address& address, std::string* error);
  // Serves on an already listening socket (handed over by the process this one replaces).
  bool adopt(int fd, std::string* error);
  // The listening socket, for a hand-over (-1 when closed).
  int fd() const { return open_ ? fd_ : -1; }
  void close();

 private:
  class Connection;
  static void onReadable(uv_poll_t* poll, int status, int events);

  uv_loop_t* loop_;
  Handler handler_;
  int fd_ = -1;
  uv_poll_t poll_;
  bool open_ = false;
};

}  // namespace sluice
