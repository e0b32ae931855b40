#include "proxy/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#ifndef SLUICE_COMMIT
#define SLUICE_COMMIT "unknown"
#endif

namespace sluice::metrics {

size_t tlsResultIndex(const char* result) {
  for (size_t i = 0; i < kTlsResultCount; ++i) {
    if (strcmp(kTlsResults[i], result) == 0) {
      return i;
    }
  }
  return 1;
}

void RouteSlot::countClose(uint16_t code, uint8_t by) {
  uint32_t key = static_cast<uint32_t>(code) << 2 | (by & 3);
  for (Close& c : closes) {
    uint32_t k = c.key.load(std::memory_order_relaxed);
    if (k == key) {
      c.count.inc();
      return;
    }
    if (k == 0) {
      c.key.store(key, std::memory_order_relaxed);
      c.count.inc();
      return;
    }
  }
  // More distinct codes than slots: count under code 0 ("other").
  closes.back().key.store(by & 3, std::memory_order_relaxed);
  closes.back().count.inc();
}

namespace {

const char* kByNames[] = {"downstream", "upstream", "sluice", "unknown"};
const char* kDirections[] = {"downstream_to_upstream", "upstream_to_downstream"};
const char* kDecisions[] = {"continue", "reject", "drop", "close"};

void escape(std::string* out, const std::string& v) {
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void family(const char* name, const char* type, const char* help) {
    out_->append("# HELP ").append(name).append(" ").append(help).append("\n");
    out_->append("# TYPE ").append(name).append(" ").append(type).append("\n");
  }
  // labels: alternating name, value
  void sample(const std::string& name, std::initializer_list<std::string> labels, double value) {
    out_->append(name);
    if (labels.size() > 0) {
      out_->push_back('{');
      bool first = true;
      for (auto it = labels.begin(); it != labels.end(); it += 2) {
        if (!first) {
          out_->push_back(',');
        }
        first = false;
        out_->append(*it).append("=\"");
        escape(out_, *(it + 1));
        out_->push_back('"');
      }
      out_->push_back('}');
    }
    char buf[40];
    if (value == static_cast<double>(static_cast<int64_t>(value))) {
      snprintf(buf, sizeof buf, " %lld\n", static_cast<long long>(value));
    } else {
      snprintf(buf, sizeof buf, " %.6f\n", value);
    }
    out_->append(buf);
  }
  template <size_t N>
  void histogram(const std::string& name, const std::string& label, const std::string& value,
                 const std::string& label2, const std::string& value2,
                 const std::vector<const Histogram<N>*>& parts) {
    const auto& bounds = parts.front()->bounds();
    uint64_t cumulative = 0;
    double sum = 0;
    for (size_t i = 0; i <= N; ++i) {
      for (const auto* h : parts) {
        cumulative += h->bucket(i);
      }
      char le[32];
      if (i < N) {
        snprintf(le, sizeof le, "%g", bounds[i]);
      } else {
        snprintf(le, sizeof le, "+Inf");
      }
      if (label2.empty()) {
        sample(name + "_bucket", {label, value, "le", le}, static_cast<double>(cumulative));
      } else {
        sample(name + "_bucket", {label, value, label2, value2, "le", le},
               static_cast<double>(cumulative));
      }
    }
    for (const auto* h : parts) {
      sum += h->sum();
    }
    if (label2.empty()) {
      sample(name + "_sum", {label, value}, sum);
      sample(name + "_count", {label, value}, static_cast<double>(cumulative));
    } else {
      sample(name + "_sum", {label, value, label2, value2}, sum);
      sample(name + "_count", {label, value, label2, value2}, static_cast<double>(cumulative));
    }
  }

 private:
  std::string* out_;
};

template <typename Slot, typename F>
double sum(const Slot* slots, unsigned workers, F f) {
  double total = 0;
  for (unsigned w = 0; w < workers; ++w) {
    total += static_cast<double>(f(slots[w]));
  }
  return total;
}

std::pair<std::string, std::string> splitBackendKey(const std::string& key) {
  size_t nl = key.find('\n');
  return {key.substr(0, nl), key.substr(nl + 1)};
}

std::string renderLabels(const filters::Labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    out.append(out.empty() ? "" : ",").append(k).append("=\"");
    escape(&out, v);
    out.push_back('"');
  }
  return out;
}

void appendNumber(std::string* out, double value) {
  char buf[40];
  if (value == static_cast<double>(static_cast<int64_t>(value))) {
    snprintf(buf, sizeof buf, " %lld\n", static_cast<long long>(value));
  } else {
    snprintf(buf, sizeof buf, " %.6f\n", value);
  }
  out->append(buf);
}

}  // namespace

Registry::Family& Registry::family(std::string_view name, std::string_view help, bool histogram,
                                   bool gauge) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{}).first;
    it->second.help = help;
    it->second.histogram = histogram;
    it->second.gauge = gauge;
  }
  return it->second;
}

filters::Counter Registry::counter(std::string_view name, std::string_view help,
                                   const filters::Labels& labels) {
  std::lock_guard lock(families_mutex_);
  Family& f = family(name, help, false, false);
  if (f.histogram || f.gauge) {
    return {};  // declared as another kind before: count nothing rather than mix them
  }
  auto& cells = f.counters[renderLabels(labels)];
  if (!cells) {
    cells.reset(new filters::StatCell[workers_]);
  }
  return filters::Counter(cells.get());
}

filters::Gauge Registry::gauge(std::string_view name, std::string_view help,
                               const filters::Labels& labels) {
  std::lock_guard lock(families_mutex_);
  Family& f = family(name, help, false, true);
  if (!f.gauge) {
    return {};
  }
  auto& cells = f.counters[renderLabels(labels)];
  if (!cells) {
    cells.reset(new filters::StatCell[workers_]);
  }
  return filters::Gauge(cells.get());
}

filters::LatencyHistogram Registry::histogram(std::string_view name, std::string_view help,
                                              const filters::Labels& labels) {
  std::lock_guard lock(families_mutex_);
  Family& f = family(name, help, true, false);
  if (!f.histogram) {
    return {};
  }
  auto& cells = f.histograms[renderLabels(labels)];
  if (!cells) {
    cells.reset(new filters::HistogramCells[workers_]);
  }
  return filters::LatencyHistogram(cells.get());
}

void Registry::renderFamilies(std::string* out) const {
  std::lock_guard lock(families_mutex_);
  auto series = [&](const std::string& name, const std::string& labels, std::string_view extra,
                    double value) {
    out->append(name);
    if (!labels.empty() || !extra.empty()) {
      out->push_back('{');
      out->append(labels);
      if (!extra.empty()) {
        out->append(labels.empty() ? "" : ",").append(extra);
      }
      out->push_back('}');
    }
    appendNumber(out, value);
  };
  for (const auto& [name, f] : families_) {
    out->append("# HELP ").append(name).append(" ").append(f.help).append("\n");
    out->append("# TYPE ").append(name).append(f.histogram ? " histogram\n"
                                               : f.gauge   ? " gauge\n"
                                                           : " counter\n");
    for (const auto& [labels, cells] : f.counters) {
      uint64_t total = 0;
      for (unsigned w = 0; w < workers_; ++w) {
        total += cells[w].get();
      }
      // A gauge's cells hold each worker's changes, which sum (modulo 2^64) to its value.
      series(
          name, labels, {},
          f.gauge ? static_cast<double>(static_cast<int64_t>(total)) : static_cast<double>(total));
    }
    for (const auto& [labels, cells] : f.histograms) {
      uint64_t cumulative = 0;
      uint64_t micros = 0;
      for (size_t i = 0; i <= filters::kFilterLatencyBounds.size(); ++i) {
        for (unsigned w = 0; w < workers_; ++w) {
          cumulative += cells[w].buckets[i].load(std::memory_order_relaxed);
        }
        char le[40] = "le=\"+Inf\"";
        if (i < filters::kFilterLatencyBounds.size()) {
          snprintf(le, sizeof le, "le=\"%g\"", filters::kFilterLatencyBounds[i]);
        }
        series(name + "_bucket", labels, le, static_cast<double>(cumulative));
      }
      for (unsigned w = 0; w < workers_; ++w) {
        micros += cells[w].sum_micros.load(std::memory_order_relaxed);
      }
      series(name + "_sum", labels, {}, static_cast<double>(micros) / 1e6);
      series(name + "_count", labels, {}, static_cast<double>(cumulative));
    }
  }
}

int64_t Registry::listenerConnections(const std::string& name) const {
  auto it = listeners_.find(name);
  return it == listeners_.end()
             ? 0
             : static_cast<int64_t>(sum(it->second.get(), workers_, [](const ListenerSlot& x) {
                 return x.connections_open.get();
               }));
}

Registry::RouteTotals Registry::routeTotals(const std::string& name) const {
  RouteTotals t;
  auto it = routes_.find(name);
  if (it == routes_.end()) {
    return t;
  }
  for (unsigned i = 0; i < workers_; ++i) {
    const RouteSlot& s = it->second[i];
    for (const Counter& c : s.requests_by_class) {
      t.requests += c.get();
    }
    t.websockets += s.ws_open.get();
    t.messages[0] += s.ws_messages[0].get();
    t.messages[1] += s.ws_messages[1].get();
    for (const RouteSlot::Close& c : s.closes) {
      uint32_t key = c.key.load(std::memory_order_relaxed);
      if (key != 0) {
        t.closes[static_cast<uint16_t>(key >> 2)] += c.count.get();
      }
    }
  }
  return t;
}

std::pair<int64_t, int64_t> Registry::backendConnections(const std::string& pool,
                                                         const std::string& address) const {
  auto it = backends_.find(pool + "\n" + address);
  if (it == backends_.end()) {
    return {0, 0};
  }
  const BackendSlot* s = it->second.get();
  return {static_cast<int64_t>(
              sum(s, workers_, [](const BackendSlot& x) { return x.connections_open.get(); })),
          static_cast<int64_t>(
              sum(s, workers_, [](const BackendSlot& x) { return x.websockets_open.get(); }))};
}

std::string Registry::render(
    const std::vector<std::tuple<std::string, std::string, std::string>>& backend_states,
    const std::vector<CertificateExpiry>& certificates) const {
  std::string out;
  out.reserve(size_t{16} * 1024);
  Writer w(&out);
  const unsigned n = workers_;

  w.family("sluice_connections_open", "gauge", "Open client connections.");
  for (const auto& [name, s] : listeners_) {
    w.sample("sluice_connections_open", {"listener", name},
             sum(s.get(), n, [](const ListenerSlot& x) { return x.connections_open.get(); }));
  }
  w.family("sluice_connections_accepted_total", "counter", "Accepted client connections.");
  for (const auto& [name, s] : listeners_) {
    w.sample("sluice_connections_accepted_total", {"listener", name},
             sum(s.get(), n, [](const ListenerSlot& x) { return x.connections_accepted.get(); }));
  }
  w.family("sluice_max_connections_reached_total", "counter",
           "Times a worker stopped accepting because server.max_connections was reached.");
  for (const auto& [name, s] : listeners_) {
    w.sample("sluice_max_connections_reached_total", {"listener", name},
             sum(s.get(), n, [](const ListenerSlot& x) { return x.accept_paused.get(); }));
  }

  w.family("sluice_http_requests_total", "counter", "HTTP requests by route and status class.");
  for (const auto& [name, s] : routes_) {
    for (size_t c = 1; c <= 5; ++c) {
      double v = sum(s.get(), n, [c](const RouteSlot& x) { return x.requests_by_class[c].get(); });
      if (v > 0) {
        w.sample("sluice_http_requests_total", {"route", name, "code", std::to_string(c) + "xx"},
                 v);
      }
    }
  }

  w.family("sluice_upstream_response_seconds", "histogram",
           "Time from sending a request upstream to the response head, by pool.");
  for (const auto& [name, s] : pools_) {
    std::vector<const LatencyHistogram*> parts;
    for (unsigned i = 0; i < n; ++i) {
      parts.push_back(&s[i].upstream_response);
    }
    w.histogram("sluice_upstream_response_seconds", "pool", name, "", "", parts);
  }

  w.family("sluice_ws_connections_open", "gauge", "Open WebSocket sessions by route.");
  for (const auto& [name, s] : routes_) {
    if (name.empty()) {
      continue;  // requests no route matched never become WebSockets
    }
    w.sample("sluice_ws_connections_open", {"route", name},
             sum(s.get(), n, [](const RouteSlot& x) { return x.ws_open.get(); }));
  }
  w.family("sluice_ws_messages_total", "counter", "WebSocket messages relayed.");
  for (const auto& [name, s] : routes_) {
    if (name.empty()) {
      continue;
    }
    for (size_t d = 0; d < 2; ++d) {
      w.sample("sluice_ws_messages_total", {"route", name, "direction", kDirections[d]},
               sum(s.get(), n, [d](const RouteSlot& x) { return x.ws_messages[d].get(); }));
    }
  }
  w.family("sluice_ws_bytes_total", "counter", "WebSocket payload bytes relayed.");
  for (const auto& [name, s] : routes_) {
    if (name.empty()) {
      continue;
    }
    for (size_t d = 0; d < 2; ++d) {
      w.sample("sluice_ws_bytes_total", {"route", name, "direction", kDirections[d]},
               sum(s.get(), n, [d](const RouteSlot& x) { return x.ws_bytes[d].get(); }));
    }
  }
  w.family("sluice_ws_message_bytes", "histogram", "WebSocket message sizes.");
  for (const auto& [name, s] : routes_) {
    if (name.empty()) {
      continue;
    }
    for (size_t d = 0; d < 2; ++d) {
      std::vector<const SizeHistogram*> parts;
      for (unsigned i = 0; i < n; ++i) {
        parts.push_back(&s[i].ws_message_bytes[d]);
      }
      w.histogram("sluice_ws_message_bytes", "route", name, "direction", kDirections[d], parts);
    }
  }
  w.family("sluice_ws_closes_total", "counter",
           "WebSocket sessions ended, by close code and by who closed.");
  for (const auto& [name, s] : routes_) {
    std::map<uint32_t, uint64_t> totals;
    for (unsigned i = 0; i < n; ++i) {
      for (const RouteSlot::Close& c : s[i].closes) {
        uint32_t key = c.key.load(std::memory_order_relaxed);
        if (key != 0) {
          totals[key] += c.count.get();
        }
      }
    }
    for (const auto& [key, count] : totals) {
      w.sample("sluice_ws_closes_total",
               {"route", name, "code", std::to_string(key >> 2), "by", kByNames[key & 3]},
               static_cast<double>(count));
    }
  }

  w.family("sluice_filter_decisions_total", "counter", "Filter decisions.");
  for (const auto& [name, s] : filters_) {
    for (size_t d = 0; d < 4; ++d) {
      double v = sum(s.get(), n, [d](const FilterSlot& x) { return x.decisions[d].get(); });
      if (v > 0) {
        w.sample("sluice_filter_decisions_total", {"filter", name, "decision", kDecisions[d]}, v);
      }
    }
  }

  w.family("sluice_backend_state", "gauge", "1 for the backend's current state.");
  for (const auto& [pool, backend, state] : backend_states) {
    for (const char* st : {"healthy", "unhealthy", "draining"}) {
      w.sample("sluice_backend_state", {"pool", pool, "backend", backend, "state", st},
               state == st ? 1 : 0);
    }
  }
  w.family("sluice_backend_connections_open", "gauge", "Open connections to a backend.");
  for (const auto& [key, s] : backends_) {
    auto [pool, backend] = splitBackendKey(key);
    w.sample("sluice_backend_connections_open", {"pool", pool, "backend", backend},
             sum(s.get(), n, [](const BackendSlot& x) { return x.connections_open.get(); }));
  }
  w.family("sluice_backend_websockets_open", "gauge", "Open WebSocket sessions to a backend.");
  for (const auto& [key, s] : backends_) {
    auto [pool, backend] = splitBackendKey(key);
    w.sample("sluice_backend_websockets_open", {"pool", pool, "backend", backend},
             sum(s.get(), n, [](const BackendSlot& x) { return x.websockets_open.get(); }));
  }

  w.family("sluice_held_bytes", "gauge",
           "Bytes held in WebSocket messages and buffered bodies (all workers).");
  w.family("sluice_memory_shed_total", "counter",
           "Connections closed because a worker held more than server.max_held_bytes.");
  for (const auto& [_, s] : worker_slots_) {
    w.sample("sluice_held_bytes", {},
             sum(s.get(), n, [](const WorkerSlot& x) { return x.held_bytes.get(); }));
    w.sample("sluice_memory_shed_total", {},
             sum(s.get(), n, [](const WorkerSlot& x) { return x.shed.get(); }));
  }

  w.family("sluice_config_reloads_total", "counter", "Config reloads by result.");
  w.sample("sluice_config_reloads_total", {"result", "success"},
           static_cast<double>(reloads_success.get()));
  w.sample("sluice_config_reloads_total", {"result", "failure"},
           static_cast<double>(reloads_failure.get()));
  w.family("sluice_config_generation", "gauge", "Generation of the running config (1 at start).");
  w.sample("sluice_config_generation", {}, static_cast<double>(generation.load()));
  w.family("sluice_tls_handshakes_total", "counter", "TLS handshakes by listener and result.");
  for (const auto& [name, s] : listeners_) {
    for (size_t r = 0; r < kTlsResultCount; ++r) {
      double v = sum(s.get(), n, [r](const ListenerSlot& x) { return x.tls_handshakes[r].get(); });
      if (v > 0) {
        w.sample("sluice_tls_handshakes_total", {"listener", name, "result", kTlsResults[r]}, v);
      }
    }
  }
  w.family("sluice_proxy_protocol_rejected_total", "counter",
           "Connections closed before their PROXY protocol header was read, by reason.");
  for (const auto& [name, s] : listeners_) {
    for (size_t r = 0; r < 3; ++r) {
      double v = sum(s.get(), n,
                     [r](const ListenerSlot& x) { return x.proxy_protocol_rejected[r].get(); });
      if (v > 0) {
        w.sample("sluice_proxy_protocol_rejected_total",
                 {"listener", name, "reason", kProxyRejections[r]}, v);
      }
    }
  }
  w.family("sluice_tls_certificate_expiry_seconds", "gauge",
           "Seconds until a listener's certificate expires (negative once it has).");
  const int64_t now = static_cast<int64_t>(time(nullptr));
  for (const CertificateExpiry& c : certificates) {
    w.sample("sluice_tls_certificate_expiry_seconds", {"listener", c.listener, "name", c.name},
             static_cast<double>(c.not_after - now));
  }
  renderFamilies(&out);
  renderProcess(&out);
  return out;
}

namespace {

// /proc/self/stat fields (after the command name): 14 utime, 15 stime, 20 num_threads,
// 22 starttime (clock ticks since boot), 23 vsize, 24 rss (pages).
struct ProcStat {
  double cpu_seconds = 0;
  double start_ticks = 0;
  double vsize = 0;
  double rss_pages = 0;
  double threads = 0;
  bool ok = false;
};

ProcStat readProcStat() {
  ProcStat st;
  FILE* f = fopen("/proc/self/stat", "r");
  if (f == nullptr) {
    return st;
  }
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');  // the command name may hold spaces
  if (p == nullptr) {
    return st;
  }
  std::vector<double> fields;  // fields[0] is field 3 (state), skipped as 0
  for (const char* tok = p + 2; *tok != '\0';) {
    char* end = nullptr;
    double v = strtod(tok, &end);
    fields.push_back(end == tok ? 0 : v);
    const char* space = strchr(tok, ' ');
    if (space == nullptr) {
      break;
    }
    tok = space + 1;
  }
  auto field = [&](size_t number) { return number - 3 < fields.size() ? fields[number - 3] : 0; };
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  st.cpu_seconds = (field(14) + field(15)) / ticks;
  st.threads = field(20);
  st.start_ticks = field(22);
  st.vsize = field(23);
  st.rss_pages = field(24);
  st.ok = fields.size() >= 22;
  return st;
}

double bootTime() {
  FILE* f = fopen("/proc/stat", "r");
  if (f == nullptr) {
    return 0;
  }
  char line[256];
  double btime = 0;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strncmp(line, "btime ", 6) == 0) {
      btime = strtod(line + 6, nullptr);
      break;
    }
  }
  fclose(f);
  return btime;
}

double openFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) {
    return 0;
  }
  double count = 0;
  while (const dirent* e = readdir(d)) {
    count += e->d_name[0] != '.' ? 1 : 0;
  }
  closedir(d);
  return count - 1;  // the directory's own descriptor
}

}  // namespace

void Registry::renderProcess(std::string* out) const {
  Writer w(out);
  ProcStat st = readProcStat();
  if (st.ok) {
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    w.family("process_cpu_seconds_total", "counter",
             "Total user and system CPU time spent in seconds.");
    w.sample("process_cpu_seconds_total", {}, st.cpu_seconds);
    w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    w.sample("process_resident_memory_bytes", {}, st.rss_pages * page);
    w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    w.sample("process_virtual_memory_bytes", {}, st.vsize);
    w.family("process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.");
    w.sample("process_start_time_seconds", {}, bootTime() + st.start_ticks / ticks);
    w.family("process_threads", "gauge", "Number of OS threads in the process.");
    w.sample("process_threads", {}, st.threads);
  }
  w.family("process_open_fds", "gauge", "Number of open file descriptors.");
  w.sample("process_open_fds", {}, openFds());
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    w.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    w.sample("process_max_fds", {}, static_cast<double>(rl.rlim_cur));
  }
  w.family("sluice_build_info", "gauge", "The version and commit sluice was built from.");
  w.sample("sluice_build_info", {"version", SLUICE_VERSION, "commit", SLUICE_COMMIT}, 1);
}

}  // namespace sluice::metrics
