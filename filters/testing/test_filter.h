#pragma once

// type "test": a filter for the test suite only (compiled into test builds, never shipped). It
// exercises every part of the filter API through the real binary: it pauses the request head on
// a timer, changes request and response heads, waits for whole request bodies, judges messages
// asynchronously, rewrites, drops and closes on message contents, and counts its instances'
// lives in its own metrics (made, onDestroy calls, destructor runs), so that tests can show that
// every stream's filters end exactly once, whatever ends the stream.
//
// Keys (all optional):
//   pause_head = "50ms"          stop in the request head, resume after this long
//   request_header = "X-A: 1"    add this header line to every request head
//   response_header = "X-B: 2"   set this header line on every response head
//   pause_response = "50ms"      stop in the response head, resume after this long
//   buffer_body = true           wait for the whole request body, then add X-Body-Bytes: N
//   reject_path = "/forbidden"   answer 451 to requests whose target starts with this
//   pause_message = "20ms"       judge each WebSocket message after this long (asynchronously)
//   rewrite = "upper"            upper-case text messages ("upper"), or prefix them ("prefix:X")
//   drop_containing = "x"        drop messages that contain this
//   close_containing = "y"       close the session with 1008 on messages that contain this

#include <string>

#include "filters/filter.h"

namespace sluice::filters {

class TestFilter : public Filter {
 public:
  struct Settings {
    conf::Duration pause_head{0};
    conf::Duration pause_response{0};
    conf::Duration pause_message{0};
    std::string request_header_name, request_header_value;
    std::string response_header_name, response_header_value;
    bool buffer_body = false;
    std::string reject_path;
    std::string rewrite;
    std::string drop_containing;
    std::string close_containing;
  };

  TestFilter(std::string name, Settings settings);
  static FilterPtr build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics);
  uint8_t phases() const override;
  std::unique_ptr<StreamFilter> create() const override;
  void bindStats(Stats& stats) override;

  const Settings& settings() const { return settings_; }
  Counter made, destroyed, destructed;

 private:
  Settings settings_;
};

}  // namespace sluice::filters
