#pragma once

// filters::Services for the running process, on the main thread's loop: a dispatcher whose
// post() queue any thread may feed, and fetch(), a small one-shot HTTP/1.1 GET
// client (a remote JWKS, say) over net::Stream, with net::ClientTls for https: name resolution
// through libuv, every address tried in turn, the response read by the same strict parser as a
// backend's, the body bounded, the whole fetch under one timeout, `Connection: close`, no
// redirects followed.
//
// The Server makes one, hands it to each filter's start() when a snapshot goes live, and closes
// it at shutdown: fetches still running end with an error then, and later posts are dropped.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <uv.h>

#include "filters/filter.h"
#include "proxy/dispatcher.h"
#include "proxy/net/tls.h"

namespace sluice {

// The parts of a fetch URL: "http(s)://host[:port][/path]".
struct FetchUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6 literals
  uint16_t port = 0;
  std::string target;     // path and query, "/" at least
  std::string authority;  // for the Host header: as written in the URL
};
// Nullopt (and `why`) for anything else: other schemes, user info, a bad port, control
// characters or spaces.
std::optional<FetchUrl> parseFetchUrl(std::string_view url, std::string* why);

class ProcessServices : public filters::Services {
 public:
  explicit ProcessServices(uv_loop_t* loop);
  ~ProcessServices() override;
  ProcessServices(const ProcessServices&) = delete;
  ProcessServices& operator=(const ProcessServices&) = delete;

  filters::Dispatcher& mainDispatcher() override { return dispatcher_; }
  void fetch(const filters::FetchRequest& request,
             std::function<void(filters::FetchResult)> done) override;

  // Main thread, at shutdown: fetches under way end (their callbacks run with an error), later
  // fetches fail at once, posts are dropped, and the loop's handles of this object are closed.
  void close();

  // A fetch ended (called by the fetch itself).
  void fetchDone(void* fetch);

 private:
  class Fetch;
  static void onAsync(uv_async_t* async);
  void post(std::function<void()> task);
  std::shared_ptr<const net::ClientTls> clientTls(const filters::FetchRequest& request,
                                                  std::string* error);

  uv_loop_t* loop_;
  uv_async_t* async_;  // freed in its close callback
  LoopDispatcher dispatcher_;
  std::mutex mutex_;  // guards tasks_ and closed_
  std::vector<std::function<void()>> tasks_;
  bool closed_ = false;
  std::set<Fetch*> fetches_;
  // TLS contexts by CA file and verification, built once.
  std::map<std::pair<std::string, bool>, std::shared_ptr<const net::ClientTls>> tls_;
};

}  // namespace sluice
