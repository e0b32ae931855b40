#pragma once

// The process: loads the config, opens the listening sockets (or takes them over from the sluice
// it replaces), drops privileges, runs the workers, and handles signals, reloads, the admin API
// and the control socket on the main thread.

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/access_log.h"
#include "proxy/admin.h"
#include "proxy/control.h"
#include "proxy/metrics.h"
#include "proxy/services.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/health.h"
#include "proxy/worker.h"

namespace sluice {

// Everything a reload or `--check` does: parse, validate, build filters, resolve backends, load
// certificates, read the token files, and refuse what this version cannot run. Returns null when
// any diagnostic is an error; warnings alone do not stop it. A config with errors still has its
// certificates and token files checked, so that one run reports every stage's errors.
// `registry` and `states` (optional) bind the snapshot's metric slots and backend states.
SnapshotPtr loadSnapshot(const std::string& path, uint64_t generation,
                         conf::Diagnostics* diagnostics, metrics::Registry* registry = nullptr,
                         upstream::BackendStates* states = nullptr);

// Config features this version validates but cannot run: errors, so that `--check`, a start and
// a reload all refuse them.
void addUnsupportedFeatures(const conf::Config& config, conf::Diagnostics* diagnostics);

// `sluice --check FILE`: everything a start would fail on, every stage in one run: the config,
// certificates and files, the log files, the account to drop to, and the listen addresses (tried
// with a bind, except those a sluice running this same config holds already). Prints every
// diagnostic; returns the exit code.
int checkConfig(const std::string& path);

class Server {
 public:
  struct Options {
    bool upgrade = false;        // take the listening sockets over from the running sluice
    bool log_level_set = false;  // --log-level given: the config's log_level does not apply
  };

  Server(SnapshotPtr snapshot, Options options);
  ~Server();
  // Runs until a shutdown completes. Returns the process exit code.
  int run();

 private:
  struct ReloadResult {
    bool ok = false;
    uint64_t generation = 0;
    std::vector<std::string> errors;
  };
  // A listener's sockets, as this process knows them (duplicates of the workers' descriptors, so
  // that they can be handed over whatever the workers do with theirs).
  struct ListenerSockets {
    std::string name;
    conf::Address address;
    std::vector<int> fds;
  };

  static void onSignal(uv_signal_t* handle, int signum);
  static void onWorkersDone(uv_async_t* async);
  static void onFsEvent(uv_fs_event_t* handle, const char* filename, int events, int status);
  static void onDebounce(uv_timer_t* timer);
  void rebalance();
  AdminResponse drainEndpoint(std::string_view rest);
  // Every worker's sockets for every listener: taken over from `inherited` where the address
  // matches, bound anew otherwise (after a probe: a port another process holds is refused).
  bool openListeners(unsigned workers, std::vector<control::Socket>* inherited,
                     std::vector<std::vector<std::pair<size_t, int>>>* fds);
  // Binds each worker's socket for every listener of `next` not in `cur` (name and address).
  // On failure closes what it opened and appends the error.
  bool openNewListeners(const conf::Config& cur, const conf::Config& next,
                        std::vector<std::vector<int>>* fds, conf::Diagnostics* diagnostics);
  void rememberSockets(const conf::Config& next, const std::vector<std::vector<int>>& new_fds);
  void closeRememberedSockets();
  // SIGTERM/SIGINT: the lame duck (drain_delay), then the drain.
  void beginShutdown(int signum);
  void startDrain(const char* why);
  // The control socket: a new binary has taken the sockets over.
  void handOver(pid_t new_pid);
  void reopenLogs();
  ReloadResult reload(const char* trigger);
  void watchFiles();
  std::string fingerprint(const conf::Config& config) const;
  AdminResponse handleAdmin(const http::RequestHead& request);
  std::string statusJson() const;
  // The token files' contents (empty when not configured); false with `error` set.
  static bool loadTokens(const conf::Config& config, std::string* token, std::string* read_token,
                         std::string* error);
  // The log destinations and level of `config`, applied (at start and after a reload).
  bool applyLogs(const conf::Config& config, std::string* error);
  int fail();  // a start that cannot go on: lets the handles made so far close
  // Filter::start() on every filter of a snapshot about to go live, stop() on those of one that
  // was replaced (or at shutdown).
  void startFilters(const Snapshot& snapshot);
  void stopFilters(const Snapshot& snapshot);

  SnapshotPtr snapshot_;
  Options options_;
  SharedState shared_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<metrics::Registry> registry_;
  upstream::BackendStates backend_states_;
  std::unique_ptr<upstream::HealthChecker> health_;
  uv_timer_t rebalance_timer_;
  uint64_t rebalance_tick_ = 0;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<control::Server> control_;
  std::string control_name_;
  std::vector<ListenerSockets> sockets_;
  std::unique_ptr<ProcessServices> services_;  // from the workers' start to the loop's end
  std::vector<std::unique_ptr<Worker>> workers_;
  uv_loop_t loop_;
  uv_signal_t sigterm_;
  uv_signal_t sigint_;
  uv_signal_t sighup_;
  uv_signal_t sigusr1_;
  uv_async_t workers_done_;
  uv_timer_t debounce_;
  uv_timer_t lame_duck_;
  std::vector<uv_fs_event_t*> watchers_;
  std::thread joiner_;
  bool handles_ready_ = false;  // the signal handles and timers above are initialised
  bool shutting_down_ = false;  // lame duck or drain
  bool draining_ = false;       // workers told to stop accepting
  bool handed_over_ = false;
  uint64_t started_ms_ = 0;
  std::string token_;
  std::string read_token_;
  std::shared_ptr<log::LogFile> error_log_;
  std::string loaded_fingerprint_;  // of the files last loaded (or last failed)
  bool new_file_seen_ = false;      // a *.toml appeared in a watched directory
  struct {
    bool ok = true;
    std::string time;
    std::vector<std::string> errors;
  } last_reload_;
  // The last reloads (at most 10, oldest first), for the status page.
  struct ReloadRecord {
    std::string time;
    std::string trigger;
    bool ok = false;
    uint64_t generation = 0;  // the one live after it
    std::vector<std::string> errors;
  };
  std::deque<ReloadRecord> reload_history_;
};

}  // namespace sluice
