#include "filters/waf/waf_filter.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "filters/options.h"
#include "filters/waf/waf_audit.h"
#include "filters/waf/waf_eval.h"

namespace sluice::filters::waf {

namespace {

enum Subject : uint8_t { kSubjectRequest, kSubjectHandshake, kSubjectMessage, kSubjects };
const char* const kSubjectNames[kSubjects] = {"request", "handshake", "message"};

enum VerdictKind : uint8_t { kPass, kMatch, kBlock, kVerdictKinds };
const char* const kVerdictNames[kVerdictKinds] = {"pass", "match", "block"};

enum OverloadReason : uint8_t { kQueueFull, kBudget, kReasons };
const char* const kReasonNames[kReasons] = {"queue_full", "budget"};

VerdictKind kindOf(const WafVerdict& v) {
  return v.intervention ? kBlock : (v.matched() ? kMatch : kPass);
}

// A request as the pool thread needs it: owned, since the stream may end while it is evaluated.
struct OwnedRequest {
  std::string id;
  std::string client_ip;
  std::string method;
  std::string uri;
  std::string version;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool inspect_body = false;

  // Views into this request; `scratch` holds the header views.
  HttpRequest view(std::vector<Header>& scratch) const {
    scratch.clear();
    scratch.reserve(headers.size());
    for (const auto& [name, value] : headers) {
      scratch.push_back({name, value});
    }
    HttpRequest r;
    r.id = id;
    r.client_ip = client_ip;
    r.method = method;
    r.uri = uri;
    r.http_version = version;
    r.headers = scratch;
    r.body = body;
    r.inspect_body = inspect_body;
    return r;
  }
};

// Who decides one evaluation: the verdict from the pool or the stream's budget timer, whichever
// claims it first. The loser changes nothing.
struct Ticket {
  std::atomic<bool> claimed{false};
  bool claim() { return !claimed.exchange(true, std::memory_order_acq_rel); }
};

}  // namespace

// ---- the filter's shared core ------------------------------------------------------------------

struct WafFilter::Core {
  std::string name;
  WafFilterSettings settings;
  std::shared_ptr<const WafRules> rules;
  std::shared_ptr<const AuditLog> audit;

  // Bound by bindStats (empty handles count nothing).
  Stats* stats = nullptr;
  Counter evaluations[kSubjects][kVerdictKinds];
  Counter overloads[kReasons];
  LatencyHistogram seconds[kSubjects];
  // sluice_waf_matches_total by (rule, action): rule ids are learnt as they match.
  mutable std::mutex matches_mutex;
  mutable std::map<std::pair<int, std::string>, Counter> matches;

  // What sluice does about a verdict: the `action` of the audit line and of the match counter.
  std::string_view action(const WafVerdict& v, Subject subject, bool late) const {
    if (late) {
      return "late";  // on_overload decided when the budget passed
    }
    if (settings.engine.mode == WafMode::kDetect) {
      return "log";
    }
    if (!v.intervention) {
      return "pass";  // matches under the anomaly threshold
    }
    if (subject != kSubjectMessage) {
      return "deny";
    }
    return settings.on_match == OnMatch::kClose ? "close" : "drop";
  }

  void countMatches(unsigned worker, const WafVerdict& v, std::string_view action) const {
    if (stats == nullptr) {
      return;
    }
    for (const WafMatch& m : v.matches) {
      Counter c;
      {
        std::lock_guard<std::mutex> lock(matches_mutex);
        auto key = std::make_pair(m.rule_id, std::string(action));
        auto it = matches.find(key);
        if (it == matches.end()) {
          Counter made =
              stats->counter("sluice_waf_matches_total", "WAF rule matches, by rule and action.",
                             {{"filter", name},
                              {"rule", std::to_string(m.rule_id)},
                              {"action", std::string(action)}});
          it = matches.emplace(std::move(key), made).first;
        }
        c = it->second;
      }
      c.inc(worker);
    }
  }
};

namespace {

using Core = WafFilter::Core;

// What a finished evaluation hands back to its stream's worker.
struct Outcome {
  Subject subject = kSubjectRequest;
  Direction direction = Direction::kDownstreamToUpstream;
  WafVerdict verdict;
  std::shared_ptr<const WafWsContext> context;  // a handshake's, when it passed
  double seconds = 0;                           // time in the engine
  bool late = false;                            // the budget passed first
};

class WafStream;

// A stream's link with its jobs on the pool: they post back to the stream's worker only while the
// stream lives. `gone` is written on the worker (onDestroy) under the mutex; a posting pool thread
// holds the mutex too, so no post reaches a worker after its stream has ended.
struct Link {
  std::mutex mutex;
  bool gone = false;
  Dispatcher* dispatcher = nullptr;
  WafStream* stream = nullptr;
};

void postOutcome(const std::shared_ptr<Link>& link, Outcome outcome);

class WafStream final : public StreamFilter {
 public:
  WafStream(std::shared_ptr<const Core> core, const WafFilter& filter)
      : core_(std::move(core)), filter_(filter), s_(core_->settings) {}

  Status onRequestHead(RequestHead& head) override {
    const StreamInfo& info = callbacks().info();
    websocket_ = info.websocket;
    const bool messages = s_.client_messages || s_.backend_messages;
    // The handshake is a request like any other: judged whenever requests are, and also when
    // only messages are (its phase 1 is their context).
    if (!s_.request_headers && !(websocket_ && messages)) {
      return Status::kContinue;
    }
    link_ = std::make_shared<Link>();
    link_->dispatcher = &callbacks().dispatcher();
    link_->stream = this;
    request_ = std::make_unique<OwnedRequest>();
    OwnedRequest& r = *request_;
    r.id = info.request_id;
    r.client_ip = info.client_ip;
    r.method = head.method;
    r.uri = head.url;
    r.version = std::to_string(head.major) + "." + std::to_string(head.minor);
    r.headers.reserve(head.headers.size());
    for (const filters::Header& h : head.headers) {
      r.headers.emplace_back(h.name, h.value);
    }
    // An upgrade has no body (the proxy refuses one with a body).
    r.inspect_body = s_.request_body && !websocket_;
    if (r.inspect_body) {
      return Status::kStopAndBuffer;
    }
    submitRequest();
    return Status::kStop;
  }

  Status onRequestBody(std::string_view data, bool end) override {
    if (!end) {
      return Status::kContinue;
    }
    if (!request_) {
      // The end may be announced twice for a request without a body (once when the head phase
      // starts buffering, once when the codec completes the request): still waiting is still
      // waiting.
      return in_flight_[0].ticket ? Status::kStop : Status::kContinue;
    }
    request_->body.assign(data);
    submitRequest();
    return in_flight_[0].ticket ? Status::kStop : Status::kContinue;
  }

  Status onMessage(Message& m) override {
    const bool from_client = m.direction() == Direction::kDownstreamToUpstream;
    if (!(from_client ? s_.client_messages : s_.backend_messages) || !context_) {
      return Status::kContinue;
    }
    const size_t d = from_client ? 0 : 1;
    const uint64_t number = ++messages_[d];
    WsPayload kind = WsPayload::kBinary;
    if (m.type() == MessageType::kText) {
      kind = looksLikeJson(m.payload()) ? WsPayload::kJson : WsPayload::kText;
    }
    Job job;
    job.subject = kSubjectMessage;
    job.direction = m.direction();
    job.number = number;
    job.fn = [context = context_, payload = std::string(m.payload()), kind,
              id = requestId() + (from_client ? ":c" : ":b") + std::to_string(number)]() {
      WafVerdict v = evaluateMessage(*context, payload, kind, id);
      // Text that only looks like JSON ("[citation needed] ..."): judged as the text it is
      // rather than refused for failing to parse (rule 200002 of the base rules).
      if (kind == WsPayload::kJson && v.intervention) {
        auto ids = v.ruleIds();
        if (std::find(ids.begin(), ids.end(), 200002) != ids.end()) {
          v = evaluateMessage(*context, payload, WsPayload::kText, id);
        }
      }
      return Outcome{
          kSubjectMessage, Direction::kDownstreamToUpstream, std::move(v), nullptr, 0, false};
    };
    submit(std::move(job));
    return Status::kStop;
  }

  ~WafStream() override { cutLink(); }

  void onDestroy() override {
    cutLink();
    for (InFlight& f : in_flight_) {
      f.timer.reset();
      f.ticket.reset();
    }
  }

  // On the worker, from a posted task (the stream is alive).
  void onOutcome(Outcome& o) {
    const unsigned worker = callbacks().dispatcher().workerId();
    core_->evaluations[o.subject][kindOf(o.verdict)].inc(worker);
    core_->seconds[o.subject].observe(worker, o.seconds);
    core_->countMatches(worker, o.verdict, core_->action(o.verdict, o.subject, o.late));
    if (o.late) {
      return;  // the timer's overload decision stands
    }
    InFlight& f = slot(o.subject, o.direction);
    f.timer->disarm();
    f.ticket.reset();
    if (o.subject == kSubjectMessage) {
      MessageVerdict mv = MessageVerdict::forward();
      if (o.verdict.intervention) {
        mv = s_.on_match == OnMatch::kClose
                 ? MessageVerdict::close(1008, "message refused by the WAF")
                 : MessageVerdict::drop("message refused by the WAF");
      }
      callbacks().resumeMessage(o.direction, std::move(mv));
      return;
    }
    if (o.verdict.intervention) {
      callbacks().sendLocalReply(static_cast<uint16_t>(o.verdict.status),
                                 "request refused by the WAF");
      return;
    }
    if (o.context) {
      context_ = std::move(o.context);
    }
    handshake_.reset();
    callbacks().resume();
  }

 private:
  void cutLink() {
    if (link_) {
      std::lock_guard<std::mutex> lock(link_->mutex);
      link_->gone = true;
    }
  }

  // One evaluation in flight: the request's, or one message direction's.
  struct InFlight {
    std::shared_ptr<Ticket> ticket;
    std::unique_ptr<Timer> timer;
  };

  struct Job {
    Subject subject = kSubjectRequest;
    Direction direction = Direction::kDownstreamToUpstream;
    uint64_t number = 0;          // a message's, per direction
    std::function<Outcome()> fn;  // the evaluation, on a pool thread
  };

  InFlight& slot(Subject subject, Direction d) {
    if (subject != kSubjectMessage) {
      return in_flight_[0];
    }
    return in_flight_[d == Direction::kDownstreamToUpstream ? 1 : 2];
  }

  std::string requestId() { return std::string(callbacks().info().request_id); }

  void submitRequest() {
    Job job;
    job.subject = websocket_ ? kSubjectHandshake : kSubjectRequest;
    std::shared_ptr<const OwnedRequest> request = std::move(request_);
    std::shared_ptr<const WafRules> rules = core_->rules;
    if (websocket_) {
      job.fn = [request, rules]() {
        std::vector<Header> scratch;
        WafHandshake h = evaluateHandshake(rules, request->view(scratch));
        return Outcome{kSubjectHandshake,
                       Direction::kDownstreamToUpstream,
                       std::move(h.verdict),
                       std::move(h.context),
                       0,
                       false};
      };
      handshake_ = request;  // for a context of its own, should the pool be overloaded
    } else {
      job.fn = [request, rules]() {
        std::vector<Header> scratch;
        WafVerdict v = evaluateHttp(*rules, request->view(scratch));
        return Outcome{
            kSubjectRequest, Direction::kDownstreamToUpstream, std::move(v), nullptr, 0, false};
      };
    }
    submit(std::move(job));
  }

  // Queues `job` with its budget; on a full queue, applies on_overload at once (possibly from
  // inside the phase that called this: the filter API takes a resume or a verdict given there).
  void submit(Job job) {
    InFlight& f = slot(job.subject, job.direction);
    auto ticket = std::make_shared<Ticket>();
    f.ticket = ticket;
    if (!f.timer) {
      const Subject subject = job.subject;
      const Direction direction = job.direction;
      f.timer = callbacks().dispatcher().createTimer([this, subject, direction] {
        InFlight& g = slot(subject, direction);
        if (g.ticket && g.ticket->claim()) {
          g.ticket.reset();
          overload(kBudget, subject, direction);
        }
      });
    }
    const StreamInfo& info = callbacks().info();
    WafPool::Job pj;
    pj.deadline = WafPool::Clock::now() + s_.time_budget;
    pj.fn = [core = core_, link = link_, ticket, fn = std::move(job.fn), subject = job.subject,
             direction = job.direction, number = job.number,
             audit = AuditFields{std::string(info.request_id), std::string(info.client_ip),
                                 std::string(info.route)}](WafPool::Outcome outcome) {
      if (outcome != WafPool::Outcome::kRun) {
        return;  // expired in the queue, or the pool shut down: the stream's timer decides
      }
      const auto start = std::chrono::steady_clock::now();
      Outcome o = fn();
      o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      o.subject = subject;
      o.direction = direction;
      o.late = !ticket->claim();
      if (o.verdict.matched()) {
        writeAudit(*core, o, number, audit);
      }
      postOutcome(link, std::move(o));
    };
    if (!filter_.pool().submit(std::move(pj))) {
      f.ticket.reset();
      overload(kQueueFull, job.subject, job.direction);
      return;
    }
    f.timer->arm(s_.time_budget);
  }

  void overload(OverloadReason reason, Subject subject, Direction d) {
    core_->overloads[reason].inc(callbacks().dispatcher().workerId());
    const bool allow = s_.on_overload == OnOverload::kAllow;
    if (subject == kSubjectMessage) {
      callbacks().resumeMessage(
          d, allow ? MessageVerdict::forward() : MessageVerdict::close(1013, "WAF overloaded"));
      return;
    }
    if (!allow) {
      callbacks().sendLocalReply(503, "WAF overloaded", "Retry-After: 1\r\n");
      return;
    }
    if (subject == kSubjectHandshake && handshake_) {
      // Its messages are still judged, with phase 1 evaluated again for each.
      std::vector<Header> scratch;
      context_ = unjudgedHandshake(core_->rules, handshake_->view(scratch));
    }
    callbacks().resume();
  }

  struct AuditFields {
    std::string request_id;
    std::string client_ip;
    std::string route;
  };

  static void writeAudit(const Core& core, const Outcome& o, uint64_t number,
                         const AuditFields& a) {
    if (!core.audit->enabled()) {
      return;
    }
    const std::string time = AuditLog::now();
    WafAuditContext c;
    c.filter = core.name;
    c.request_id = a.request_id;
    c.subject = kSubjectNames[o.subject];
    c.action = core.action(o.verdict, o.subject, o.late);
    c.time = time;
    c.client_ip = a.client_ip;
    c.route = a.route;
    if (o.subject == kSubjectMessage) {
      c.direction = o.direction == Direction::kDownstreamToUpstream ? "client" : "backend";
      c.message = number;
    }
    core.audit->write(wafAuditLine(o.verdict, c));
  }

  std::shared_ptr<const Core> core_;
  const WafFilter& filter_;  // kept alive by the stream's FilterManager
  const WafFilterSettings& s_;
  bool websocket_ = false;
  std::shared_ptr<Link> link_;
  std::unique_ptr<OwnedRequest> request_;          // until it is submitted
  std::shared_ptr<const OwnedRequest> handshake_;  // a WebSocket's upgrade request
  std::shared_ptr<const WafWsContext> context_;    // after the handshake passed
  InFlight in_flight_[3];
  uint64_t messages_[2] = {0, 0};
};

void postOutcome(const std::shared_ptr<Link>& link, Outcome outcome) {
  std::lock_guard<std::mutex> lock(link->mutex);
  if (link->gone) {
    return;
  }
  // std::function needs a copyable task: the outcome travels in a shared_ptr.
  auto o = std::make_shared<Outcome>(std::move(outcome));
  link->dispatcher->post([link, o] {
    if (!link->gone) {  // read on the worker, the only thread that writes it
      link->stream->onOutcome(*o);
    }
  });
}

// The pools of the process, by filter name and shape: a reload's new filter takes over its
// predecessor's pool while the predecessor's streams still use it.
std::shared_ptr<WafPool> sharedPool(const std::string& name, size_t threads, size_t queue,
                                    int nice) {
  static std::mutex mutex;
  static auto* pools = new std::map<std::string, std::weak_ptr<WafPool>>();  // never freed
  const std::string key = name + "|" + std::to_string(threads) + "|" + std::to_string(queue) + "|" +
                          std::to_string(nice);
  std::lock_guard<std::mutex> lock(mutex);
  std::erase_if(*pools, [](const auto& p) { return p.second.expired(); });
  if (auto pool = (*pools)[key].lock()) {
    return pool;
  }
  auto pool = std::make_shared<WafPool>(threads, queue, nice);
  (*pools)[key] = pool;
  return pool;
}

}  // namespace

// ---- the filter --------------------------------------------------------------------------------

WafFilter::WafFilter(std::string name, WafFilterSettings settings,
                     std::shared_ptr<const WafRules> rules, std::shared_ptr<const AuditLog> audit)
    : Filter(std::move(name)), core_(std::make_shared<Core>()) {
  core_->name = this->name();
  core_->settings = std::move(settings);
  core_->rules = std::move(rules);
  core_->audit = std::move(audit);
}

// The pool, when this filter held it last, joins its threads here: on the thread that drops the
// filter (the main thread at a reload, or a worker whose last stream of an old snapshot ends),
// waiting at most for the evaluations running then.
WafFilter::~WafFilter() = default;

const WafFilterSettings& WafFilter::settings() const {
  return core_->settings;
}

uint8_t WafFilter::phases() const {
  const WafFilterSettings& s = core_->settings;
  uint8_t p = kRequestHead;
  if (s.request_body) {
    p |= kRequestBody;
  }
  if (s.client_messages || s.backend_messages) {
    p |= kMessage;
  }
  return p;
}

std::unique_ptr<StreamFilter> WafFilter::create() const {
  return std::make_unique<WafStream>(core_, *this);
}

WafPool& WafFilter::pool() const {
  std::call_once(pool_once_, [this] {
    const WafFilterSettings& s = core_->settings;
    size_t threads = s.pool_threads;
    if (threads == 0) {
      threads = std::max(1u, std::thread::hardware_concurrency());
    }
    pool_ = sharedPool(name(), threads, s.queue_size, s.pool_nice);
  });
  return *pool_;
}

void WafFilter::bindStats(Stats& stats) {
  Core& c = *core_;
  c.stats = &stats;
  for (int s = 0; s < kSubjects; ++s) {
    for (int v = 0; v < kVerdictKinds; ++v) {
      c.evaluations[s][v] = stats.counter(
          "sluice_waf_evaluations_total", "WAF evaluations, by subject and verdict.",
          {{"filter", name()}, {"subject", kSubjectNames[s]}, {"verdict", kVerdictNames[v]}});
    }
    c.seconds[s] = stats.histogram("sluice_waf_evaluation_seconds",
                                   "Time in the WAF engine per evaluation (on its pool).",
                                   {{"filter", name()}, {"subject", kSubjectNames[s]}});
  }
  const char* action = c.settings.on_overload == OnOverload::kAllow ? "allow" : "deny";
  for (int r = 0; r < kReasons; ++r) {
    c.overloads[r] = stats.counter(
        "sluice_waf_overload_total",
        "WAF evaluations not made in time (queue full, budget passed), by the action taken.",
        {{"filter", name()}, {"reason", kReasonNames[r]}, {"action", action}});
  }
}

FilterPtr WafFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  WafFilterSettings s;
  WafSettings& e = s.engine;
  const std::filesystem::path& dir = o.file().dir;
  if (auto files = o.strings("rules")) {
    for (const std::string& f : *files) {
      // Relative to the config file, like every path in it (globs included).
      e.rules.push_back(f.empty() || f[0] == '/' ? f : (dir / f).lexically_normal().string());
    }
    if (files->empty()) {
      o.error("rules", "'rules' names no file (leave it out for Debian's Core Rule Set)");
    }
  } else {
    e.rules = debianCrs();
  }
  e.paranoia_level = o.integer<int>("paranoia_level", 1, 4).value_or(1);
  e.inbound_threshold = o.integer<int>("anomaly_threshold", 1, 100000).value_or(5);
  if (auto methods = o.strings("allowed_methods")) {
    for (const std::string& m : *methods) {
      if (m.empty() || !std::all_of(m.begin(), m.end(), [](char c) {
            return (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
          })) {
        o.error("allowed_methods", "'" + m + "' is not a method (upper-case letters)");
      }
      e.allowed_methods += (e.allowed_methods.empty() ? "" : " ") + m;
    }
  }
  e.request_body_limit = o.size("request_body_limit").value_or(e.request_body_limit);
  e.request_body_no_files_limit =
      o.size("request_body_no_files_limit").value_or(e.request_body_no_files_limit);
  e.base_rules = o.boolean("base_rules").value_or(true);
  if (auto mode = o.oneOf("mode", {"block", "detect"})) {
    e.mode = *mode == "detect" ? WafMode::kDetect : WafMode::kBlock;
  }
  if (auto inspect = o.strings("inspect")) {
    s.request_headers = s.request_body = s.client_messages = s.backend_messages = false;
    for (const std::string& i : *inspect) {
      if (i == "request_headers") {
        s.request_headers = true;
      } else if (i == "request_body") {
        s.request_body = true;
      } else if (i == "ws_client_messages") {
        s.client_messages = true;
      } else if (i == "ws_backend_messages") {
        s.backend_messages = true;
      } else {
        o.error("inspect", "unknown part '" + i +
                               "' (known: request_headers, request_body, ws_client_messages, "
                               "ws_backend_messages)");
      }
    }
    if (s.request_body && !s.request_headers) {
      o.error("inspect",
              "\"request_body\" needs \"request_headers\" (a body is judged with its "
              "request's head)");
    }
    if (!s.request_headers && !s.client_messages && !s.backend_messages) {
      o.error("inspect", "'inspect' lists nothing to inspect");
    }
  }
  if (auto m = o.oneOf("on_match", {"close", "drop"})) {
    s.on_match = *m == "drop" ? OnMatch::kDrop : OnMatch::kClose;
  }
  if (auto m = o.oneOf("on_overload", {"allow", "deny"})) {
    s.on_overload = *m == "allow" ? OnOverload::kAllow : OnOverload::kDeny;
  }
  if (auto b = o.duration("time_budget")) {
    if (b->count() <= 0) {
      o.error("time_budget", "'time_budget' must be more than 0");
    }
    s.time_budget = std::chrono::duration_cast<std::chrono::milliseconds>(*b);
  }
  s.pool_threads = o.integer<size_t>("pool_threads", 0, 256).value_or(0);
  s.queue_size = o.integer<size_t>("queue_size", 1, 1000000).value_or(1024);
  s.pool_nice = o.integer<int>("pool_nice", 0, 19).value_or(10);
  std::string audit_where = AuditLog::where(o.string("audit_log"), dir);
  o.finish();
  if (!o.ok()) {
    return nullptr;
  }
  std::string why;
  std::shared_ptr<const AuditLog> audit = AuditLog::open(audit_where, &why);
  if (!audit) {
    o.error("audit_log", why);
    return nullptr;
  }
  WafLoadResult loaded = WafRules::load(e);
  if (!loaded.rules) {
    o.error("rules", "the WAF rules do not load: " + loaded.error);
    return nullptr;
  }
  return std::make_shared<WafFilter>(config.name, std::move(s), std::move(loaded.rules),
                                     std::move(audit));
}

}  // namespace sluice::filters::waf
