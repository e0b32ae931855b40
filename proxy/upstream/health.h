#pragma once

// Active health checks, run on the main thread's loop; results go to the shared BackendState
// that every worker's balancer reads. Per pool with [pools.health]: every `interval`, each
// backend gets a TCP connect (type "tcp") or an HTTP GET of `path` whose status must fall in
// `expect_status` (type "http"), within `timeout`. `unhealthy_threshold` failures in a row mark
// a backend unhealthy; `healthy_threshold` successes in a row mark it healthy again.

#include <sys/socket.h>

#include <string>
#include <vector>

#include <uv.h>

#include "conf/config.h"
#include "proxy/upstream/backend_state.h"

namespace sluice::upstream {

// One backend to check: what a check needs, copied so that a check outlives a reconfiguration.
struct HealthTarget {
  conf::HealthConfig health;
  std::string pool;
  std::string address;
  sockaddr_storage addr;
  BackendState* state;
};

class HealthChecker {
 public:
  explicit HealthChecker(uv_loop_t* loop) : loop_(loop) {}
  ~HealthChecker();
  // Replaces the checks with these (health state itself carries over).
  void configure(const std::vector<HealthTarget>& targets);
  void stop();

 private:
  struct Probe;
  uv_loop_t* loop_;
  std::vector<Probe*> probes_;
};

}  // namespace sluice::upstream
