#include "proxy/worker.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <array>
#include <cstdio>

#include <openssl/rand.h>

#include "proxy/log.h"
#include "proxy/net/stream.h"

namespace sluice {

namespace {
constexpr uint64_t kResumeCheckMs = 50;
constexpr uint64_t kPublishIntervalMs = 200;  // the held-memory gauges
// When shutdown_timeout passes, the connections left are closed in batches, one batch per loop
// turn a few milliseconds apart (10,000 a second per worker): the WebSockets' 1001 frames and
// their clients' reconnects come as a stream, not as one burst that stalls the loop.
constexpr size_t kCloseBatch = 100;
constexpr uint64_t kCloseBatchIntervalMs = 10;
}  // namespace

Worker::Worker(unsigned id, SnapshotPtr snapshot, std::vector<std::pair<size_t, int>> listen_fds,
               SharedState* shared, AccessLog* access_log, Acceptor acceptor)
    : id_(id),
      snapshot_(std::move(snapshot)),
      listen_fds_(std::move(listen_fds)),
      shared_(shared),
      access_log_(access_log),
      acceptor_(std::move(acceptor)),
      dispatcher_(&loop_, id, [this](std::function<void()> task) { post(std::move(task)); }) {
  uint64_t seed = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof seed);
  rng_.seed(seed ^ id);
  memory_budget_.setCap(snapshot_->config->server.max_held_bytes);
  uv_loop_init(&loop_);
  loop_.data = nullptr;  // net:: keeps the loop's epoll set there (uv_loop_init keeps `data`)
  uv_async_init(&loop_, &async_, &Worker::onAsync);
  async_.data = this;
  uv_timer_init(&loop_, &resume_timer_);
  resume_timer_.data = this;
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_timer_init(&loop_, &publish_timer_);
  publish_timer_.data = this;
  for (const auto& [index, fd] : listen_fds_) {
    addListener(index, fd);
  }
}

void Worker::addListener(size_t index, int fd) {
  listeners_.push_back(new Listener(this, index, fd));
}

Worker::~Worker() {
  uv_loop_close(&loop_);
}

void Worker::start() {
  for (Listener* l : listeners_) {
    startListening(l);
  }
  uv_timer_start(&publish_timer_, &Worker::onPublishTimer, kPublishIntervalMs, kPublishIntervalMs);
  thread_ = std::thread([this] { run(); });
}

void Worker::startListening(Listener* l) {
  int rc = ::listen(l->fd, 4096) == 0 ? 0 : -errno;
  if (rc == 0) {
    l->listening = true;
    rc = l->watcher.start();
  }
  if (rc != 0) {
    LOG_ERROR("worker %u: listen on '%s': %s", id_,
              snapshot_->config->listeners[l->index].name.c_str(), uv_strerror(rc));
  }
}

void Worker::run() {
  net::runLoop(&loop_);
  net::closeEventSet(&loop_);
}

void Worker::closeListener(Listener* l) {
  l->watcher.stop();
  ::close(l->fd);
  delete l;
}

void Worker::join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Worker::requestShutdown(conf::Duration timeout) {
  {
    std::lock_guard lock(mutex_);
    shutdown_requested_ = true;
    shutdown_timeout_ = timeout;
  }
  uv_async_send(&async_);
}

void Worker::updateSnapshot(SnapshotPtr snapshot, std::vector<int> listen_fds) {
  {
    std::lock_guard lock(mutex_);
    // A snapshot not applied yet is superseded; its new sockets are not needed any more.
    for (int fd : pending_fds_) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
    pending_snapshot_ = std::move(snapshot);
    pending_fds_ = std::move(listen_fds);
  }
  uv_async_send(&async_);
}

void Worker::onAsync(uv_async_t* async) {
  auto* w = static_cast<Worker*>(async->data);
  bool shutdown;
  SnapshotPtr next;
  std::vector<int> fds;
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(w->mutex_);
    shutdown = w->shutdown_requested_;
    tasks.swap(w->tasks_);
    next = std::move(w->pending_snapshot_);
    fds = std::move(w->pending_fds_);
    w->pending_snapshot_.reset();
    w->pending_fds_.clear();
  }
  if (next && !w->shutting_down_) {
    uint64_t generation = next->generation;
    w->applySnapshot(std::move(next), std::move(fds));
    {
      std::lock_guard lock(w->mutex_);
      w->applied_generation_ = generation;
    }
    w->applied_cv_.notify_all();
  } else {
    for (int fd : fds) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  }
  for (auto& task : tasks) {
    task();
  }
  if (shutdown && !w->shutting_down_) {
    w->beginShutdown();
  }
}

void Worker::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  uv_async_send(&async_);
}

void Worker::drainBackend(const std::string& pool, const std::string& address,
                          conf::Duration timeout) {
  // Idle keep-alive connections to it go now; busy ones close after their request.
  std::string prefix = upstreamKey(pool, address);
  idle_upstreams_.closeIf([&](const std::string& key) { return key.starts_with(prefix); });
  uint64_t deadline = uv_now(&loop_) + static_cast<uint64_t>(timeout.count());
  for (ClientSession* c : connections_) {
    if (c->webSocketTo(pool, address)) {
      scheduleDrain(c, deadline, "drain");
    }
  }
}

void Worker::undrainBackend(const std::string& pool, const std::string& address) {
  std::erase_if(draining_, [&](const Draining& d) { return d.conn->webSocketTo(pool, address); });
  armDrainTimer();
}

size_t Worker::shedWebSockets(const std::string& pool, const std::string& address, size_t max) {
  std::vector<ClientSession*> victims;
  for (ClientSession* c : connections_) {
    if (victims.size() < max && c->webSocketTo(pool, address)) {
      victims.push_back(c);
    }
  }
  for (ClientSession* c : victims) {
    c->drainNow("rebalance");
  }
  return victims.size();
}

void Worker::waitForGeneration(uint64_t generation, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  applied_cv_.wait_for(lock, timeout,
                       [&] { return applied_generation_ >= generation || shutdown_requested_; });
}

void Worker::applySnapshot(SnapshotPtr next, std::vector<int> fds) {
  const auto& old_listeners = snapshot_->config->listeners;
  const auto& new_listeners = next->config->listeners;
  // Listeners: keep the sockets of those that stay (same name and address), close the others,
  // and start the new ones.
  std::vector<Listener*> kept;
  for (Listener* l : listeners_) {
    const conf::ListenerConfig& old = old_listeners[l->index];
    int found = -1;
    for (size_t i = 0; i < new_listeners.size(); ++i) {
      if (new_listeners[i].name == old.name && new_listeners[i].listen.text == old.listen.text &&
          (i >= fds.size() || fds[i] < 0)) {
        found = static_cast<int>(i);
      }
    }
    if (found >= 0) {
      l->index = static_cast<size_t>(found);
      kept.push_back(l);
    } else {
      LOG_INFO("worker %u: listener '%s' (%s) removed; its connections finish on their own", id_,
               old.name.c_str(), old.listen.text.c_str());
      closeListener(l);
    }
  }
  listeners_ = std::move(kept);
  snapshot_ = std::move(next);
  memory_budget_.setCap(snapshot_->config->server.max_held_bytes);
  // Filters' worker states go with the snapshot that made them.
  std::erase_if(filter_states_, [&](const auto& entry) {
    const auto& current = snapshot_->filters;
    return std::none_of(current.begin(), current.end(),
                        [&](const filters::FilterPtr& f) { return f.get() == entry.first; });
  });
  pick_states_.clear();  // balancers of older snapshots start afresh if still used
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i] >= 0) {
      addListener(i, fds[i]);
      startListening(listeners_.back());
    }
  }
  // Idle upstream connections that no pool of the new config would reuse (backend removed, or
  // its pool's TLS settings changed) are closed now.
  idle_upstreams_.closeIf([&](const std::string& key) {
    for (const PoolRuntime& pool : snapshot_->pools) {
      for (const BackendRuntime& b : pool.backends) {
        if (b.upstream_key == key) {
          return false;
        }
      }
    }
    return true;
  });
  // WebSockets whose route or backend the new config moved elsewhere are drained.
  std::vector<ClientSession*> conns = connections_;
  for (ClientSession* c : conns) {
    c->onSnapshotChanged(*snapshot_);
  }
}

void Worker::scheduleDrain(ClientSession* conn, uint64_t deadline_ms, const char* cause) {
  for (Draining& d : draining_) {
    if (d.conn == conn) {
      if (deadline_ms < d.deadline) {
        d.deadline = deadline_ms;
        d.cause = cause;
      }
      armDrainTimer();
      return;
    }
  }
  draining_.push_back({deadline_ms, conn, cause});
  armDrainTimer();
}

void Worker::armDrainTimer() {
  if (draining_.empty()) {
    uv_timer_stop(&drain_timer_);
    return;
  }
  uint64_t first = UINT64_MAX;
  for (const Draining& d : draining_) {
    first = std::min(first, d.deadline);
  }
  uint64_t now = uv_now(&loop_);
  uv_timer_start(&drain_timer_, &Worker::onDrainTimer, first > now ? first - now : 0, 0);
}

void Worker::onDrainTimer(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  uint64_t now = uv_now(&w->loop_);
  std::vector<Draining> due;
  for (const Draining& d : w->draining_) {
    if (d.deadline <= now) {
      due.push_back(d);
    }
  }
  std::erase_if(w->draining_, [&](const Draining& d) { return d.deadline <= now; });
  for (const Draining& d : due) {
    d.conn->drainNow(d.cause);  // may unregister (and leave draining_) at once or later
  }
  w->armDrainTimer();
}

void Worker::onPublishTimer(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  if (w->worker_slot_ != nullptr) {
    metrics::WorkerSlot& slot = w->worker_slot_[w->id_];
    slot.held_bytes.add(static_cast<int64_t>(w->memory_budget_.total()) - slot.held_bytes.get());
    slot.shed.inc(w->memory_budget_.shed() - w->published_shed_);
    w->published_shed_ = w->memory_budget_.shed();
  }
}

// ---- accepting -----------------------------------------------------------------------------

void Worker::onListenerReadable(net::Watcher* watcher) {
  auto* l = static_cast<Listener*>(watcher->data());
  l->worker->acceptSome(l);
}

void Worker::acceptSome(Listener* l) {
  // A bounded batch: the poll is level-triggered, so what is left comes back on the next turn.
  constexpr int kAcceptBatch = 64;
  for (int i = 0; i < kAcceptBatch; ++i) {
    if (shutting_down_) {
      return;
    }
    if (shared_->open_connections.load(std::memory_order_relaxed) >=
        shared_->max_connections.load(std::memory_order_relaxed)) {
      if (!l->pending_accept) {
        snapshot_->metrics.listeners[l->index][id_].accept_paused.inc();
        LOG_WARN("max_connections (%llu) reached: not accepting",
                 static_cast<unsigned long long>(shared_->max_connections.load()));
      }
      pauseAccepting(l);
      return;
    }
    sockaddr_storage peer;
    int fd = net::acceptSocket(l->fd, &peer);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      }
      if (errno == ECONNABORTED || errno == EPROTO || errno == EPERM) {
        continue;  // that connection is gone; the next one may be fine
      }
      // Out of file descriptors or memory: the connections wait in the backlog (polling on
      // would spin) until the resume timer tries again. Logged at most once a second, with
      // how many attempts failed since.
      ++accept_failures_;
      uint64_t now = uv_now(&loop_);
      if (now >= accept_failure_logged_ + 1000) {
        LOG_WARN(
            "accept on '%s': %s (%llu failed attempt%s since the last report); serving "
            "what is open, accepting again when descriptors free",
            snapshot_->config->listeners[l->index].name.c_str(), strerror(errno),
            static_cast<unsigned long long>(accept_failures_), accept_failures_ == 1 ? "" : "s");
        accept_failure_logged_ = now;
        accept_failures_ = 0;
      }
      pauseAccepting(l);
      return;
    }
    acceptor_(*this, l->index, fd, peer);
  }
}

void Worker::pauseAccepting(Listener* l) {
  l->pending_accept = true;
  l->watcher.stop();
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&resume_timer_)) == 0) {
    uv_timer_start(&resume_timer_, &Worker::onResumeTimer, kResumeCheckMs, kResumeCheckMs);
  }
}

void Worker::onResumeTimer(uv_timer_t* t) {
  static_cast<Worker*>(t->data)->resumeAccepting();
}

void Worker::resumeAccepting() {
  bool at_limit = shared_->open_connections.load(std::memory_order_relaxed) >=
                  shared_->max_connections.load(std::memory_order_relaxed);
  bool any_pending = false;
  for (Listener* l : listeners_) {
    if (l->pending_accept && !at_limit && !shutting_down_) {
      l->pending_accept = false;
      if (l->listening) {
        l->watcher.start();
      }
      acceptSome(l);
    }
    any_pending = any_pending || l->pending_accept;
  }
  if (!any_pending) {
    uv_timer_stop(&resume_timer_);
  }
}

// ---- connections and the upstream keep-alive pool ------------------------------------------

void Worker::registerConnection(ClientSession* conn) {
  conn->worker_slot_ = connections_.size();
  connections_.push_back(conn);
}

void Worker::unregisterConnection(ClientSession* conn) {
  size_t slot = conn->worker_slot_;
  if (slot < connections_.size() && connections_[slot] == conn) {
    connections_[slot] = connections_.back();
    connections_[slot]->worker_slot_ = slot;
    connections_.pop_back();
    conn->worker_slot_ = SIZE_MAX;
  }
  if (!draining_.empty()) {
    std::erase_if(draining_, [conn](const Draining& d) { return d.conn == conn; });
  }
  if (shutting_down_) {
    maybeFinishShutdown();
  }
}

std::optional<size_t> Worker::pickBackend(const Snapshot& snap, size_t pool, std::string_view key,
                                          std::optional<size_t> exclude) {
  const upstream::Balancer& b = *snap.pool(pool).balancer;
  return b.pick(pick_states_[&b], rng_, key, exclude, upstream::steadyNowMs());
}

std::shared_ptr<filters::WorkerState> Worker::filterState(const filters::ConstFilterPtr& filter) {
  auto it = filter_states_.find(filter.get());
  if (it == filter_states_.end()) {
    it = filter_states_
             .emplace(filter.get(), std::make_pair(filter, filter->createWorkerState(dispatcher_)))
             .first;
  }
  return it->second.second;
}

namespace {
// Two hex digits per byte value: an id takes 16 look-ups instead of 32 (one id per request).
constexpr std::array<char, 512> kHexPairs = [] {
  constexpr char kHex[] = "0123456789abcdef";
  std::array<char, 512> t{};
  for (size_t i = 0; i < 256; ++i) {
    t[2 * i] = kHex[i >> 4];
    t[2 * i + 1] = kHex[i & 0xf];
  }
  return t;
}();
}  // namespace

void Worker::formatRequestId(uint64_t high, uint64_t low, char* out) {
  for (uint64_t v : {high, low}) {
    // The lowest byte is written last in the 16 digits, the highest first.
    for (size_t i = 0; i < 8; ++i, v >>= 8) {
      std::memcpy(out + 14 - 2 * i, &kHexPairs[2 * (v & 0xff)], 2);
    }
    out += 16;
  }
}

void Worker::newRequestId(std::string* out) {
  // 128 random bits as 32 hex digits (by hand: snprintf was a tenth of a request's CPU).
  char buf[kRequestIdLength];
  uint64_t high = rng_();
  formatRequestId(high, rng_(), buf);
  out->assign(buf, sizeof buf);
}

// ---- shutdown ------------------------------------------------------------------------------

void Worker::beginShutdown() {
  shutting_down_ = true;
  conf::Duration timeout;
  {
    std::lock_guard lock(mutex_);
    timeout = shutdown_timeout_;
  }
  for (Listener* l : listeners_) {
    closeListener(l);
  }
  listeners_.clear();
  uv_timer_stop(&resume_timer_);
  idle_upstreams_.closeIf();
  // shutdownGracefully() may unregister (and so reorder) connections: iterate over a copy.
  std::vector<ClientSession*> conns = connections_;
  for (ClientSession* c : conns) {
    c->shutdownGracefully();
  }
  uv_timer_start(&shutdown_timer_, &Worker::onShutdownTimer,
                 static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 0)), 0);
  maybeFinishShutdown();
}

void Worker::onShutdownTimer(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  if (!w->closing_after_timeout_ && !w->connections_.empty()) {
    LOG_WARN("worker %u: shutdown_timeout passed, closing %zu connections", w->id_,
             w->connections_.size());
  }
  w->closing_after_timeout_ = true;
  // A batch now, the rest on the next ticks (abort() may unregister: iterate over a copy).
  size_t n = std::min(w->connections_.size(), kCloseBatch);
  std::vector<ClientSession*> batch(w->connections_.end() - static_cast<std::ptrdiff_t>(n),
                                    w->connections_.end());
  for (ClientSession* c : batch) {
    c->abort();
  }
  if (w->connections_.size() > 0 && !w->closing_handles_) {
    uv_timer_start(&w->shutdown_timer_, &Worker::onShutdownTimer, kCloseBatchIntervalMs, 0);
  }
  w->maybeFinishShutdown();
}

void Worker::maybeFinishShutdown() {
  if (!connections_.empty() || closing_handles_) {
    return;
  }
  closing_handles_ = true;
  idle_upstreams_.closeIf();
  // No stream is left to use the filters' worker states: their timers and connections (a rate
  // limiter's Redis client) close now, or the loop would never run out of handles.
  filter_states_.clear();
  auto close = [](auto* h) { uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr); };
  close(&async_);
  close(&resume_timer_);
  close(&shutdown_timer_);
  close(&drain_timer_);
  close(&publish_timer_);
  // In-flight upstream connections close with their downstream; uv_run returns when every
  // handle is closed.
}

}  // namespace sluice
