#pragma once

// Metrics: per-worker counters, summed when scraped. Each counter has exactly one writer (the
// worker that owns its slot), so an increment is a plain load and store, not a locked
// instruction; any thread may read. The registry's structure (which routes, pools, ... exist)
// changes only on the main thread, which is also the thread that scrapes: no lock anywhere.
// A config snapshot carries pointers resolved once (route index -> that route's slots), so the
// hot path never looks a name up.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "filters/stats.h"

namespace sluice::metrics {

class Counter {
 public:
  void inc(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// A gauge written by one worker.
class Gauge {
 public:
  void add(int64_t n) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  int64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> v_{0};
};

// Cumulative histogram with fixed upper bounds.
template <size_t N>
class Histogram {
 public:
  explicit Histogram(const std::array<double, N>* bounds) : bounds_(bounds) {}
  void observe(double v) {
    size_t i = 0;
    while (i < N && v > (*bounds_)[i]) {
      ++i;
    }
    buckets_[i].inc();
    sum_micro_.inc(static_cast<uint64_t>(v * 1e6));
  }
  // observe(v) for a whole number below 2^43, given `bounds` as integers: integer compares and
  // an integer sum (no conversions to and from double), since it runs once per WebSocket message.
  // Same buckets and sum as observe(static_cast<double>(v)).
  void observeWhole(uint64_t v, const std::array<uint64_t, N>& bounds) {
    size_t i = 0;
    while (i < N && v > bounds[i]) {
      ++i;
    }
    buckets_[i].inc();
    sum_micro_.inc(v * 1000000);
  }
  const std::array<double, N>& bounds() const { return *bounds_; }
  uint64_t bucket(size_t i) const { return buckets_[i].get(); }  // i == N: +Inf
  double sum() const { return static_cast<double>(sum_micro_.get()) / 1e6; }

 private:
  const std::array<double, N>* bounds_;
  std::array<Counter, N + 1> buckets_;
  Counter sum_micro_;  // sum in millionths, so that a counter can hold it
};

inline constexpr std::array<double, 12> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                          0.1,   0.25,   0.5,   1,    2.5,   10};
inline constexpr std::array<double, 10> kSizeBounds = {64,    256,    1024,    4096,    16384,
                                                       65536, 262144, 1048576, 4194304, 16777216};
// kSizeBounds as integers, for SizeHistogram::observeWhole().
inline constexpr std::array<uint64_t, 10> kSizeBoundsWhole = {
    64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216};
static_assert([] {
  for (size_t i = 0; i < kSizeBounds.size(); ++i) {
    if (static_cast<double>(kSizeBoundsWhole[i]) != kSizeBounds[i]) {
      return false;
    }
  }
  return true;
}());
using LatencyHistogram = Histogram<kLatencyBounds.size()>;
using SizeHistogram = Histogram<kSizeBounds.size()>;

// Per-worker slots. alignas keeps two workers' slots off one cache line.
// sluice_tls_handshakes_total{result}: "ok" or why a handshake failed.
inline constexpr const char* kTlsResults[] = {
    "ok",           "handshake_failed",      "no_shared_cipher",          "protocol_version",
    "http_request", "no_client_certificate", "certificate_verify_failed", "eof",
    "timeout"};
inline constexpr size_t kTlsResultCount = sizeof kTlsResults / sizeof kTlsResults[0];
size_t tlsResultIndex(const char* result);  // unknown results count as "handshake_failed"

// sluice_proxy_protocol_rejected_total{reason}: connections closed before the PROXY header
// was read.
enum ProxyRejection { kProxyUntrusted, kProxyInvalid, kProxyTimeout };
inline constexpr const char* kProxyRejections[] = {"untrusted", "invalid", "timeout"};

struct alignas(64) ListenerSlot {
  Gauge connections_open;
  Counter connections_accepted;
  Counter accept_paused;  // times max_connections stopped accepting
  std::array<Counter, kTlsResultCount> tls_handshakes;
  std::array<Counter, 3> proxy_protocol_rejected;  // by ProxyRejection
};

// A certificate a listener serves, for sluice_tls_certificate_expiry_seconds.
struct CertificateExpiry {
  std::string listener;
  std::string name;       // the certificate's first DNS name (or its subject's CN)
  int64_t not_after = 0;  // Unix time
};

struct alignas(64) RouteSlot {
  std::array<Counter, 6> requests_by_class;  // index = status / 100 (1..5); 0 = no response
  Gauge ws_open;
  std::array<Counter, 2> ws_messages;  // by filters::Direction
  std::array<Counter, 2> ws_bytes;
  std::array<SizeHistogram, 2> ws_message_bytes{SizeHistogram(&kSizeBounds),
                                                SizeHistogram(&kSizeBounds)};
  // Close frames by code and by whom; few distinct codes happen, so a small fixed table.
  struct Close {
    std::atomic<uint32_t> key{0};  // code << 2 | by; 0 = free
    Counter count;
  };
  std::array<Close, 24> closes;
  void countClose(uint16_t code, uint8_t by);
};

struct alignas(64) PoolSlot {
  LatencyHistogram upstream_response{&kLatencyBounds};
};

// One worker's own figures.
struct alignas(64) WorkerSlot {
  Gauge held_bytes;  // held messages and buffered bodies (MemoryBudget), published periodically
  Counter shed;      // connections closed because the worker held too much
};

struct alignas(64) BackendSlot {
  Gauge connections_open;
  Gauge websockets_open;
};

struct alignas(64) FilterSlot {
  std::array<Counter, 4> decisions;  // continue, reject, drop, close
};
enum FilterDecision { kDecisionContinue, kDecisionReject, kDecisionDrop, kDecisionClose };

// One metric family member per worker.
template <typename Slot>
using Slots = std::unique_ptr<Slot[]>;

// The registry also keeps the series filters declare (filters::Stats): families by name, each
// with its series by label values. Declaring takes a lock; counting through a handle does not.
class Registry : public filters::Stats {
 public:
  explicit Registry(unsigned workers) : workers_(workers) {}
  unsigned workers() const { return workers_; }

  // Main thread only. Returns the per-worker slots for a name, creating them once; they live as
  // long as the registry (a metric that disappears from the config keeps its last values).
  ListenerSlot* listener(const std::string& name) { return get(listeners_, name); }
  // One slot per worker, for the worker's own figures.
  WorkerSlot* workers() { return get(worker_slots_, std::string()); }
  RouteSlot* route(const std::string& name) { return get(routes_, name); }
  PoolSlot* pool(const std::string& name) { return get(pools_, name); }
  BackendSlot* backend(const std::string& pool, const std::string& address) {
    return get(backends_, pool + "\n" + address);
  }
  FilterSlot* filter(const std::string& name) { return get(filters_, name); }

  // filters::Stats (any thread)
  filters::Counter counter(std::string_view family, std::string_view help,
                           const filters::Labels& labels) override;
  filters::LatencyHistogram histogram(std::string_view family, std::string_view help,
                                      const filters::Labels& labels) override;
  filters::Gauge gauge(std::string_view family, std::string_view help,
                       const filters::Labels& labels) override;

  // Process-wide values, written on the main thread.
  Counter reloads_success;
  Counter reloads_failure;
  std::atomic<uint64_t> generation{0};

  // Sums for /api/status (main thread).
  int64_t listenerConnections(const std::string& name) const;
  // A route's counters since start, from which the status page computes rates.
  struct RouteTotals {
    uint64_t requests = 0;
    int64_t websockets = 0;               // open now
    uint64_t messages[2] = {};            // by filters::Direction
    std::map<uint16_t, uint64_t> closes;  // by close code, whoever closed
  };
  RouteTotals routeTotals(const std::string& name) const;
  std::pair<int64_t, int64_t> backendConnections(const std::string& pool,
                                                 const std::string& address) const;

  // Prometheus text exposition format (version 0.0.4). `backend_states` lists, per pool and
  // backend address, the current state name ("healthy", "unhealthy", "draining");
  // `certificates` the listeners' certificates. Process metrics (process_*, as Prometheus
  // clients name them) and sluice_build_info come last.
  std::string render(
      const std::vector<std::tuple<std::string, std::string, std::string>>& backend_states,
      const std::vector<CertificateExpiry>& certificates = {}) const;

 private:
  template <typename Slot>
  Slot* get(std::map<std::string, Slots<Slot>>& m, const std::string& name) {
    auto it = m.find(name);
    if (it == m.end()) {
      it = m.emplace(name, Slots<Slot>(new Slot[workers_])).first;
    }
    return it->second.get();
  }

  unsigned workers_;
  std::map<std::string, Slots<ListenerSlot>> listeners_;
  std::map<std::string, Slots<RouteSlot>> routes_;
  std::map<std::string, Slots<PoolSlot>> pools_;
  std::map<std::string, Slots<BackendSlot>> backends_;
  std::map<std::string, Slots<FilterSlot>> filters_;
  std::map<std::string, Slots<WorkerSlot>> worker_slots_;

  struct Family {
    std::string help;
    bool histogram = false;
    bool gauge = false;  // its `counters` cells hold changes, summed signed
    // rendered label pairs (`a="x",b="y"`) -> one cell per worker
    std::map<std::string, std::unique_ptr<filters::StatCell[]>> counters;
    std::map<std::string, std::unique_ptr<filters::HistogramCells[]>> histograms;
  };
  Family& family(std::string_view name, std::string_view help, bool histogram, bool gauge);
  void renderFamilies(std::string* out) const;
  void renderProcess(std::string* out) const;
  mutable std::mutex families_mutex_;
  std::map<std::string, Family, std::less<>> families_;
};

// What a snapshot resolves once: indices of the config -> slot arrays (one slot per worker).
// (Pools' and backends' slots are in the snapshot's PoolRuntime.)
struct Bound {
  std::vector<ListenerSlot*> listeners;
  std::vector<RouteSlot*> routes;
  std::vector<FilterSlot*> filters;  // by index in Config::filters
  RouteSlot* unrouted = nullptr;     // requests no route matched (route="")
};

}  // namespace sluice::metrics
