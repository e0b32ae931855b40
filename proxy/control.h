#pragma once

// The control socket: an abstract Unix socket named after the config file, held by the sluice
// that runs it. Holding the name is the lock that keeps a second sluice off the same config (the
// kernel frees it when the process ends, however it ends), and it is how a new binary takes the
// listening sockets over from the running one (SCM_RIGHTS, as HAProxy and Envoy do):
//
//   new -> old  "takeover"
//   old -> new  "sockets L 0.0.0.0:443 L 0.0.0.0:443 A 127.0.0.1:9901" + those descriptors
//               (as many such messages as needed), then "end <pid>"
//   new -> old  "ready"        (the new process accepts on them now)
//   old -> new  "bye"          (the old one has stopped accepting and released the name; it
//                               drains its connections as on SIGTERM)
//
// A new process that fails before "ready" changes nothing: the old one keeps serving. Other
// requests: "addresses" (what the running sluice listens on, for --check). SOCK_SEQPACKET keeps
// each message whole. "takeover" is refused unless the peer runs as root or as the user who
// started this sluice.

#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sluice::control {

// The abstract socket name for `config_path` (leading NUL included): the canonical path's
// SHA-256, so that every way of naming the same file gives the same name.
std::string socketName(const std::string& config_path);

// A listening socket handed over: its kind ('L' a data listener, 'A' the admin listener), the
// address it is bound to (as the config wrote it) and the descriptor.
struct Socket {
  char kind = 'L';
  std::string address;
  int fd = -1;
};

class Server {
 public:
  struct Callbacks {
    // Every listening socket, for a takeover (the descriptors stay this process's).
    std::function<std::vector<Socket>()> sockets;
    // Refuses a takeover (shutting down already, say) with a reason.
    std::function<bool(std::string* why)> can_hand_over;
    // The new process accepts on the sockets now: stop accepting and drain.
    std::function<void(pid_t new_pid)> hand_over;
  };

  Server(uv_loop_t* loop, Callbacks callbacks);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the name. 0, EADDRINUSE (a sluice runs this config), or another errno value.
  int listen(const std::string& name);
  // Releases the name (after a hand-over, at exit). Requests under way go on.
  void close();
  // Ends the requests under way (at exit, so that the loop can end).
  void closeConnections();

 private:
  class Connection;
  static void onReadable(uv_poll_t* poll, int status, int events);

  uv_loop_t* loop_;
  Callbacks callbacks_;
  int fd_ = -1;
  uv_poll_t poll_;
  bool open_ = false;
  uid_t owner_;  // the real uid at start: it may take over, and root
  std::vector<Connection*> connections_;
};

// --- the other side (blocking, bounded by timeouts; used before the event loop runs) ---

// The pid of the sluice holding `name`, if one does.
std::optional<pid_t> runningPid(const std::string& name);

// The addresses the sluice holding `name` listens on. False when none runs (or it did not say).
bool queryAddresses(const std::string& name, std::vector<std::string>* addresses);

class Takeover {
 public:
  ~Takeover();
  // Asks the sluice holding `name` for its listening sockets.
  bool begin(const std::string& name, std::string* error);
  // Every socket received (owned by the caller from now on).
  std::vector<Socket>& sockets() { return sockets_; }
  pid_t oldPid() const { return old_pid_; }
  // "ready", then waits for "bye": the old process has stopped accepting and released the name.
  bool finish(std::string* error);
  // Gives up: the old process goes on as before.
  void abort();

 private:
  int fd_ = -1;
  pid_t old_pid_ = 0;
  std::vector<Socket> sockets_;
};

}  // namespace sluice::control
