#pragma once

// The admin listener: a small HTTP/1.1 server on the main thread's loop. One request per
// connection (answered with Connection: close); heads up to 16 KiB, bodies up to 64 KiB.
//
// A request the handler answers with `live` set (GET /api/live) becomes a WebSocket that the
// server pushes the live source's document to: once on upgrade, then on every tick of one timer
// shared by all open pages. The document is built and framed once per tick, whatever the number
// of pages; a page whose unsent bytes pass kLiveMaxQueued is closed with 1008 rather than
// buffered for. The pages send nothing but pings and a close; data frames are allowed up to a
// small budget and then closed on.

#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>

#include <uv.h>

#include "conf/config.h"
#include "proxy/http/message.h"

namespace sluice {

struct AdminResponse {
  uint16_t status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string headers;  // extra header lines, each ending in CRLF
  bool live = false;    // a 101: the connection becomes a live feed (see above)
};

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const http::RequestHead& request)>;

  // The live feed's document, built on the loop's thread.
  using LiveSource = std::function<std::string()>;

  static constexpr uint64_t kLiveIntervalMs = 1000;
  static constexpr size_t kLiveMaxQueued = size_t{256} * 1024;
  static constexpr size_t kLiveMaxClientFrame = 1024;              // one data frame's payload
  static constexpr size_t kLiveMaxClientData = size_t{16} * 1024;  // all data frames of a page

  AdminServer(uv_loop_t* loop, Handler handler);
  ~AdminServer();
  // The handshake answer for a request to the live feed: a 101 with `live` set (its
  // Sec-WebSocket-Accept, and `protocol` echoed when not empty), or 400/426 naming what is wrong.
  static AdminResponse liveHandshake(const http::RequestHead& request, std::string_view protocol);
  void setLiveSource(LiveSource source) { live_source_ = std::move(source); }
  size_t livePages() const { return live_.size(); }
  bool listen(const conf::Address& address, std::string* error);
  // Serves on an already listening socket (handed over by the process this one replaces).
  bool adopt(int fd, std::string* error);
  // The listening socket, for a hand-over (-1 when closed).
  int fd() const { return open_ ? fd_ : -1; }
  void close();

 private:
  class Connection;
  static void onReadable(uv_poll_t* poll, int status, int events);
  void addLive(Connection* page);
  void removeLive(Connection* page);
  void pushLive();

  uv_loop_t* loop_;
  Handler handler_;
  int fd_ = -1;
  uv_poll_t poll_;
  bool open_ = false;
  LiveSource live_source_;
  std::unordered_set<Connection*> live_;
  uv_timer_t* live_timer_ = nullptr;  // while pages are open; freed in its close callback
};

}  // namespace sluice
