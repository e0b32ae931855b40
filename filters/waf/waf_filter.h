#pragma once

// type "waf": ModSecurity v3 with the OWASP Core Rule Set (or any SecLang the operator names) on
// HTTP requests and on WebSocket messages (docs/filters/waf.md).
//
// Every evaluation runs on a WafPool, never on an event loop: the stream stops (an HTTP request
// before it goes upstream, a WebSocket message with its direction's reading paused) and resumes
// with the verdict, posted back to its worker. ModSecurity cannot be interrupted, so the stream
// arms its own timer for the time budget: whichever comes first, the verdict or the timer, decides
// (a verdict that comes late is counted and logged, and changes nothing). A full queue or a passed
// budget is an overload, answered per on_overload.
//
// The WebSocket handshake is judged like any request (a bogus Upgrade header bypasses nothing);
// after a real 101 the same instance judges messages with the handshake's context: its URI,
// headers and client, and the outcome of its phase 1 (evaluateHandshake).
//
// The pool belongs to the process, not to a config snapshot: filters of the same name and pool
// shape share one across reloads (WebSocket sessions outlive them), and it is made on first use,
// so `--check` and config validation start no threads.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "filters/audit_log.h"
#include "filters/filter.h"
#include "filters/waf/waf_pool.h"
#include "filters/waf/waf_rules.h"

namespace sluice::filters::waf {

enum class OnMatch : uint8_t { kClose, kDrop };
enum class OnOverload : uint8_t { kAllow, kDeny };

struct WafFilterSettings {
  WafSettings engine;  // rules, paranoia level, threshold, mode, body limits, allowed methods
  // inspect = [...]
  bool request_headers = true;  // every request's head (phases 1 and 2 without a body)
  bool request_body = true;     // and its body (phase 2 with the body processors)
  bool client_messages = true;  // WebSocket messages from the client
  bool backend_messages = false;
  OnMatch on_match = OnMatch::kClose;
  OnOverload on_overload = OnOverload::kDeny;
  std::chrono::milliseconds time_budget{500};  // from submission to verdict, queueing included
  size_t pool_threads = 0;                     // 0: one per CPU
  size_t queue_size = 1024;
  int pool_nice = 10;
};

class WafFilter : public Filter {
 public:
  struct Core;  // what streams and pool jobs share (settings, rules, metrics, audit log)

  WafFilter(std::string name, WafFilterSettings settings, std::shared_ptr<const WafRules> rules,
            std::shared_ptr<const AuditLog> audit);
  ~WafFilter() override;
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);

  uint8_t phases() const override;
  std::unique_ptr<StreamFilter> create() const override;
  void bindStats(Stats& stats) override;

  const WafFilterSettings& settings() const;
  // The pool evaluations run on (made on first use; shared by name across reloads).
  WafPool& pool() const;

 private:
  std::shared_ptr<Core> core_;
  mutable std::once_flag pool_once_;
  mutable std::shared_ptr<WafPool> pool_;
};

}  // namespace sluice::filters::waf
