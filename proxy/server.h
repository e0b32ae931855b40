#pragma once

// The process: loads the config, opens the listening sockets, runs the workers, and handles
// signals on the main thread.

#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/access_log.h"
#include "proxy/admin.h"
#include "proxy/metrics.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/health.h"
#include "proxy/worker.h"

namespace sluice {

// Everything a reload or `--check` does: parse, validate, build filters, resolve backends, load
// certificates, and refuse what this version cannot run. Returns null when any diagnostic is an
// error; warnings alone do not stop it. `registry` and `states` (optional) bind the snapshot's
// metric slots and backend states.
SnapshotPtr loadSnapshot(const std::string& path, uint64_t generation,
                         conf::Diagnostics* diagnostics, metrics::Registry* registry = nullptr,
                         upstream::BackendStates* states = nullptr);

// Config features this version validates but cannot run: errors, so that `--check`, a start and
// a reload all refuse them.
void addUnsupportedFeatures(const conf::Config& config, conf::Diagnostics* diagnostics);

class Server {
 public:
  explicit Server(SnapshotPtr snapshot);
  ~Server();
  // Runs until a shutdown completes. Returns the process exit code.
  int run();

 private:
  struct ReloadResult {
    bool ok = false;
    uint64_t generation = 0;
    std::vector<std::string> errors;
  };

  static void onSignal(uv_signal_t* handle, int signum);
  static void onWorkersDone(uv_async_t* async);
  static void onFsEvent(uv_fs_event_t* handle, const char* filename, int events, int status);
  static void onDebounce(uv_timer_t* timer);
  void rebalance();
  AdminResponse drainEndpoint(std::string_view rest);
  bool openListeners(unsigned workers, std::vector<std::vector<int>>* fds);
  // Binds each worker's socket for every listener of `next` not in `cur` (name and address).
  // On failure closes what it opened and appends the error.
  bool openNewListeners(const conf::Config& cur, const conf::Config& next,
                        std::vector<std::vector<int>>* fds, conf::Diagnostics* diagnostics);
  void beginShutdown(int signum);
  ReloadResult reload(const char* trigger);
  void watchFiles();
  std::string fingerprint(const conf::Config& config) const;
  AdminResponse handleAdmin(const http::RequestHead& request);
  std::string statusJson() const;
  bool loadToken(const conf::Config& config, std::string* error);

  SnapshotPtr snapshot_;
  SharedState shared_;
  AccessLog access_log_;
  std::unique_ptr<metrics::Registry> registry_;
  upstream::BackendStates backend_states_;
  std::unique_ptr<upstream::HealthChecker> health_;
  uv_timer_t rebalance_timer_;
  uint64_t rebalance_tick_ = 0;
  std::unique_ptr<AdminServer> admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  uv_loop_t loop_;
  uv_signal_t sigterm_;
  uv_signal_t sigint_;
  uv_signal_t sighup_;
  uv_async_t workers_done_;
  uv_timer_t debounce_;
  std::vector<uv_fs_event_t*> watchers_;
  std::thread joiner_;
  bool shutting_down_ = false;
  uint64_t started_ms_ = 0;
  std::string token_;
  std::string loaded_fingerprint_;  // of the files last loaded (or last failed)
  bool new_file_seen_ = false;      // a *.toml appeared in a watched directory
  struct {
    bool ok = true;
    std::string time;
    std::vector<std::string> errors;
  } last_reload_;
};

}  // namespace sluice
