#pragma once

// One worker thread: its own uv loop, its own SO_REUSEPORT listening sockets, its own upstream
// keep-alive pools. A connection lives on the worker that accepted it for its whole life.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <uv.h>

#include "proxy/access_log.h"
#include "proxy/client_session.h"
#include "proxy/dispatcher.h"
#include "proxy/memory_budget.h"
#include "proxy/net/stream.h"
#include "proxy/snapshot.h"
#include "proxy/upstream/keepalive_pool.h"

namespace sluice {

// Process-wide state the workers share (atomics only; nothing here is on a lock).
struct SharedState {
  std::atomic<uint64_t> open_connections{0};
  std::atomic<uint64_t> max_connections{100000};
  // Shutting down (lame duck, then drain): health answers fail, responses close their
  // connections, so that a load balancer in front moves clients elsewhere.
  std::atomic<bool> stopping{false};
};

class Worker {
 public:
  // Makes the connection object for a socket accepted on snapshot listener `listener` (the
  // server's choice of protocol: the worker knows nothing of HTTP).
  using Acceptor =
      std::function<void(Worker& worker, size_t listener, int fd, const sockaddr_storage& peer)>;

  // `listen_fds`: this worker's bound sockets, each with its snapshot listener's index (usually
  // one per listener; more after a binary upgrade from a process with more workers).
  Worker(unsigned id, SnapshotPtr snapshot, std::vector<std::pair<size_t, int>> listen_fds,
         SharedState* shared, AccessLog* access_log, Acceptor acceptor);
  ~Worker();

  void start();
  void join();
  // Thread-safe: asks the worker to stop accepting, finish in-flight requests, and exit its loop
  // once everything is closed or `timeout` has passed.
  void requestShutdown(conf::Duration timeout);
  // Thread-safe: switches to `snapshot` for new connections and requests. `listen_fds[i]` is a
  // bound socket for the new snapshot's listener i when it is new, or -1 when the worker keeps
  // the socket it has for a listener of the same name and address.
  void updateSnapshot(SnapshotPtr snapshot, std::vector<int> listen_fds);
  // Thread-safe: runs `task` on the worker thread soon.
  void post(std::function<void()> task);
  // On the worker thread: WebSockets to this backend are closed with 1012 after `timeout`
  // (drain), no longer scheduled for that (undrain), or `max` of them now (rebalance).
  void drainBackend(const std::string& pool, const std::string& address, conf::Duration timeout);
  void undrainBackend(const std::string& pool, const std::string& address);
  size_t shedWebSockets(const std::string& pool, const std::string& address, size_t max);

  // Thread-safe: waits (at most `timeout`) until the worker serves `generation`.
  void waitForGeneration(uint64_t generation, std::chrono::milliseconds timeout);

  // --- for connections, on the worker thread ---
  uv_loop_t* loop() { return &loop_; }
  unsigned id() const { return id_; }
  const SnapshotPtr& snapshot() const { return snapshot_; }
  bool shuttingDown() const { return shutting_down_; }
  AccessLog* accessLog() { return access_log_; }
  SharedState* shared() { return shared_; }
  filters::Dispatcher& dispatcher() { return dispatcher_; }
  MemoryBudget& memoryBudget() { return memory_budget_; }
  // Where the worker publishes its own figures (null in unit tests).
  void setWorkerSlot(metrics::WorkerSlot* slot) { worker_slot_ = slot; }
  // The filter's state on this worker (made at its first use here; null when it keeps none).
  std::shared_ptr<filters::WorkerState> filterState(const filters::ConstFilterPtr& filter);
  void newRequestId(std::string* out);
  // `high` then `low` as 32 lower-case hex digits (no terminator) at `out`.
  static constexpr size_t kRequestIdLength = 32;
  static void formatRequestId(uint64_t high, uint64_t low, char* out);
  // A number for this worker's next connection, for debug logs ("c3.17": worker 3, the 17th).
  // Unique within the process (per-connection rate limits key on it), touched once per
  // connection.
  static uint64_t nextConnectionId() {
    static std::atomic<uint64_t> ids{0};
    return ids.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  // A backend of `pool` by the pool's balancer (`key` for consistent_hash), if any may take it.
  std::optional<size_t> pickBackend(const Snapshot& snap, size_t pool, std::string_view key,
                                    std::optional<size_t> exclude);

  // Idle upstream connections, kept for reuse.
  upstream::KeepalivePool& keepalivePool() { return idle_upstreams_; }

  void registerConnection(ClientSession* conn);
  void unregisterConnection(ClientSession* conn);
  // WebSockets that must move (their backend or route went away): closed with 1012 at
  // `deadline_ms` (loop time) unless they end first. `cause`: "drain" or "reload".
  void scheduleDrain(ClientSession* conn, uint64_t deadline_ms, const char* cause);

 private:
  struct Listener {
    Listener(Worker* w, size_t i, int listen_fd)
        : worker(w), index(i), fd(listen_fd), watcher(w->loop(), fd, &onListenerReadable, this) {}
    Worker* worker;
    size_t index;  // into the snapshot's listeners
    int fd;        // the listening socket (SO_REUSEPORT: this worker's own)
    net::Watcher watcher;
    bool listening = false;
    // Not accepting (max_connections reached, or out of file descriptors): connections wait in
    // the kernel's backlog until the resume timer finds room.
    bool pending_accept = false;
  };

  static void onListenerReadable(net::Watcher* watcher);
  static void onAsync(uv_async_t* async);
  static void onResumeTimer(uv_timer_t* timer);
  static void onShutdownTimer(uv_timer_t* timer);
  static void onPublishTimer(uv_timer_t* timer);
  void acceptSome(Listener* l);
  void pauseAccepting(Listener* l);
  static void closeListener(Listener* l);
  void startListening(Listener* l);
  void applySnapshot(SnapshotPtr next, std::vector<int> fds);
  void addListener(size_t index, int fd);
  static void onDrainTimer(uv_timer_t* timer);
  void armDrainTimer();
  void resumeAccepting();
  void beginShutdown();
  void maybeFinishShutdown();
  void run();

  unsigned id_;
  uv_loop_t loop_;
  uv_async_t async_;
  uv_timer_t resume_timer_;
  uv_timer_t shutdown_timer_;
  uv_timer_t drain_timer_;
  uv_timer_t publish_timer_;
  struct Draining {
    uint64_t deadline;
    ClientSession* conn;
    const char* cause;
  };
  std::vector<Draining> draining_;
  std::thread thread_;
  SnapshotPtr snapshot_;
  std::vector<std::pair<size_t, int>> listen_fds_;
  std::vector<Listener*> listeners_;
  SharedState* shared_;
  AccessLog* access_log_;
  bool shutting_down_ = false;
  bool closing_handles_ = false;
  bool closing_after_timeout_ = false;  // shutdown_timeout passed: closing in batches

  std::mutex mutex_;  // guards the fields below, written by other threads
  bool shutdown_requested_ = false;
  conf::Duration shutdown_timeout_{0};
  SnapshotPtr pending_snapshot_;
  std::vector<int> pending_fds_;
  uint64_t applied_generation_ = 0;
  std::vector<std::function<void()>> tasks_;
  std::condition_variable applied_cv_;

  std::vector<ClientSession*> connections_;
  Acceptor acceptor_;
  upstream::KeepalivePool idle_upstreams_;
  std::unordered_map<const upstream::Balancer*, upstream::PickState> pick_states_;
  LoopDispatcher dispatcher_;
  MemoryBudget memory_budget_;
  metrics::WorkerSlot* worker_slot_ = nullptr;
  uint64_t published_shed_ = 0;
  uint64_t accept_failures_ = 0;        // failed accept attempts since the last log line
  uint64_t accept_failure_logged_ = 0;  // loop time of that line
  // Filters' per-worker states, for the filters of the current snapshot (streams of older ones
  // keep theirs alive through their own shared_ptr).
  std::unordered_map<const filters::Filter*,
                     std::pair<filters::ConstFilterPtr, std::shared_ptr<filters::WorkerState>>>
      filter_states_;
  std::mt19937_64 rng_;
};

}  // namespace sluice
