#include "proxy/upstream/health.h"

#include <sys/un.h>

#include <cstring>
#include <string>

#include "proxy/log.h"

namespace sluice::upstream {

namespace {

// One check of one backend: connect, (for http) request and status line, then close.
class Attempt {
 public:
  Attempt(uv_loop_t* loop, const HealthTarget& spec) : spec_(spec) {
    unix_ = spec_.addr.ss_family == AF_UNIX;
    if (unix_) {
      uv_pipe_init(loop, &handle_.pipe, 0);
    } else {
      uv_tcp_init(loop, &handle_.tcp);
    }
    stream()->data = this;
    uv_timer_init(loop, &timer_);
    timer_.data = this;
  }

  void start() {
    connect_.data = this;
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<Attempt*>(t->data)->finish(false, "timed out"); },
        static_cast<uint64_t>(spec_.health.timeout.count()), 0);
    auto on_connect = [](uv_connect_t* req, int status) {
      static_cast<Attempt*>(req->data)->onConnect(status);
    };
    int rc = 0;
    if (unix_) {
      uv_pipe_connect(&connect_, &handle_.pipe,
                      reinterpret_cast<const sockaddr_un*>(&spec_.addr)->sun_path, on_connect);
    } else {
      rc = uv_tcp_connect(&connect_, &handle_.tcp, reinterpret_cast<const sockaddr*>(&spec_.addr),
                          on_connect);
    }
    if (rc != 0) {
      finish(false, uv_strerror(rc));
    }
  }

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&handle_); }

 private:
  void onConnect(int status) {
    if (done_) {
      return;
    }
    if (status < 0) {
      finish(false, uv_strerror(status));
      return;
    }
    if (spec_.health.type == "tcp") {
      finish(true, "connected");
      return;
    }
    request_ = "GET " + spec_.health.path +
               " HTTP/1.1\r\nHost: " + (unix_ ? std::string("localhost") : spec_.address) +
               "\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n";
    write_.data = this;
    uv_buf_t b = uv_buf_init(request_.data(), static_cast<unsigned>(request_.size()));
    uv_write(&write_, stream(), &b, 1, [](uv_write_t*, int) {});
    uv_read_start(
        stream(),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* self = static_cast<Attempt*>(h->data);
          *buf = uv_buf_init(self->buf_ + self->len_,
                             static_cast<unsigned>(sizeof self->buf_ - self->len_));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          static_cast<Attempt*>(s->data)->onRead(n);
        });
  }

  void onRead(ssize_t n) {
    if (done_) {
      return;
    }
    if (n > 0) {
      len_ += static_cast<size_t>(n);
    }
    // "HTTP/1.1 200 ..." : enough once the status code is in.
    if (len_ >= 12) {
      unsigned status = 0;
      if (memcmp(buf_, "HTTP/1.", 7) != 0 || sscanf(buf_ + 9, "%3u", &status) != 1) {
        finish(false, "not an HTTP response");
        return;
      }
      bool ok =
          status >= spec_.health.expect_status_min && status <= spec_.health.expect_status_max;
      status_text_ = "status " + std::to_string(status);
      finish(ok, status_text_.c_str());
      return;
    }
    if (n < 0 || len_ == sizeof buf_) {
      finish(false, n == UV_EOF ? "closed before answering" : "read failed");
    }
  }

  void finish(bool ok, const char* why) {
    if (done_) {
      return;
    }
    done_ = true;
    record(ok, why);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<Attempt*>(h->data);
      uv_close(reinterpret_cast<uv_handle_t*>(self->stream()),
               [](uv_handle_t* t) { delete static_cast<Attempt*>(t->data); });
    });
  }

  void record(bool ok, const char* why) {
    BackendState& st = *spec_.state;
    const conf::HealthConfig& h = spec_.health;
    if (ok) {
      st.check_failures = 0;
      uint32_t n = ++st.check_successes;
      if (!st.healthy() && n >= h.healthy_threshold) {
        st.health = static_cast<uint8_t>(Health::kHealthy);
        LOG_WARN("health: pool '%s' backend %s is healthy again (%s)", spec_.pool.c_str(),
                 spec_.address.c_str(), why);
      }
    } else {
      st.check_successes = 0;
      uint32_t n = ++st.check_failures;
      if (st.healthy() && n >= h.unhealthy_threshold) {
        st.health = static_cast<uint8_t>(Health::kUnhealthy);
        LOG_WARN("health: pool '%s' backend %s is unhealthy after %u failed checks (%s)",
                 spec_.pool.c_str(), spec_.address.c_str(), n, why);
      }
    }
  }

  HealthTarget spec_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle_;
  bool unix_ = false;
  uv_timer_t timer_;
  uv_connect_t connect_;
  uv_write_t write_;
  std::string request_;
  std::string status_text_;
  char buf_[256];
  size_t len_ = 0;
  bool done_ = false;
};

}  // namespace

struct HealthChecker::Probe {
  HealthTarget spec;
  uv_timer_t timer;
};

HealthChecker::~HealthChecker() {
  stop();
}

void HealthChecker::stop() {
  for (Probe* p : probes_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&p->timer),
             [](uv_handle_t* h) { delete static_cast<Probe*>(h->data); });
  }
  probes_.clear();
}

void HealthChecker::configure(const std::vector<HealthTarget>& targets) {
  stop();
  for (const HealthTarget& target : targets) {
    auto* probe = new Probe{target, {}};
    uv_timer_init(loop_, &probe->timer);
    probe->timer.data = probe;
    auto interval = static_cast<uint64_t>(target.health.interval.count());
    uv_timer_start(
        &probe->timer,
        [](uv_timer_t* t) {
          auto* pr = static_cast<Probe*>(t->data);
          (new Attempt(t->loop, pr->spec))->start();
        },
        0, interval);  // first check at once, then every interval
    probes_.push_back(probe);
  }
}

}  // namespace sluice::upstream
