#include "proxy/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "proxy/log.h"

namespace sluice::control {

namespace {

constexpr size_t kMaxMessage = size_t{16} * 1024;
constexpr size_t kMaxFdsPerMessage = 200;  // below the kernel's SCM_MAX_FD (253)
constexpr uint64_t kCommandTimeoutMs = 5000;
// The new process builds its workers between "end" and "ready": generous, since nothing changes
// for the old one while it waits.
constexpr uint64_t kReadyTimeoutMs = 30000;
constexpr int kClientTimeoutMs = 10000;

sockaddr_un abstractAddress(const std::string& name, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof addr.sun_path);
  memcpy(addr.sun_path, name.data(), n);
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n);
  return addr;
}

// Sends one message, with descriptors when `fds` is not empty.
bool sendMessage(int fd, const std::string& text, const std::vector<int>& fds = {}) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(text.size());
}

// Receives one message (waiting up to `timeout_ms`); descriptors that came with it are appended
// to `fds`. False on timeout, EOF or error.
bool receiveMessage(int fd, std::string* text, std::vector<int>* fds, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc <= 0) {
    return false;
  }
  std::vector<char> buf(kMaxMessage);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * 253));
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && fds != nullptr) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds->push_back(received);
      }
    }
  }
  if (n <= 0) {
    return false;
  }
  text->assign(buf.data(), static_cast<size_t>(n));
  return true;
}

int connectTo(const std::string& name) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  socklen_t len;
  sockaddr_un addr = abstractAddress(name, &len);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    if (end > i) {
      out.emplace_back(text.substr(i, end - i));
    }
    i = end + 1;
  }
  return out;
}

}  // namespace

std::string socketName(const std::string& config_path) {
  std::error_code ec;
  std::string canonical = std::filesystem::weakly_canonical(config_path, ec).string();
  if (ec || canonical.empty()) {
    canonical = config_path;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(canonical.data()), canonical.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name("\0sluice/", 8);
  for (int i = 0; i < 12; ++i) {
    name.push_back(kHex[digest[i] >> 4]);
    name.push_back(kHex[digest[i] & 15]);
  }
  return name;
}

// ---- the running process's side ------------------------------------------------------------

class Server::Connection {
 public:
  Connection(Server* server, int fd) : server_(server), fd_(fd) {
    uv_poll_init(server->loop_, &poll_, fd);
    poll_.data = this;
    uv_timer_init(server->loop_, &timer_);
    timer_.data = this;
    uv_poll_start(&poll_, UV_READABLE, [](uv_poll_t* p, int status, int) {
      static_cast<Connection*>(p->data)->onReadable(status);
    });
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->finish(); },
        kCommandTimeoutMs, 0);
    server_->connections_.push_back(this);
  }

  void finish() {
    if (closing_) {
      return;
    }
    closing_ = true;
    if (awaiting_ready_) {
      LOG_WARN("control: the new process went away before taking over; serving on");
    }
    std::erase(server_->connections_, this);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      auto* self = static_cast<Connection*>(h->data);
      uv_close(reinterpret_cast<uv_handle_t*>(&self->poll_), [](uv_handle_t* p) {
        auto* c = static_cast<Connection*>(p->data);
        ::close(c->fd_);
        delete c;
      });
    });
  }

 private:
  void onReadable(int status) {
    if (closing_) {
      return;
    }
    char buf[512];
    ssize_t n = status < 0 ? -1 : recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    }
    if (n <= 0) {
      finish();
      return;
    }
    handle(std::string_view(buf, static_cast<size_t>(n)));
  }

  void handle(std::string_view command) {
    ucred cred{};
    socklen_t len = sizeof cred;
    getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    if (command == "addresses") {
      std::string reply = "addresses";
      for (const Socket& s : server_->callbacks_.sockets()) {
        if (reply.find(" " + s.address) == std::string::npos) {
          reply += " " + s.address;
        }
      }
      sendMessage(fd_, reply);
      finish();
    } else if (command == "takeover" && !awaiting_ready_) {
      takeover(cred);
    } else if (command == "ready" && awaiting_ready_) {
      awaiting_ready_ = false;
      LOG_INFO("control: pid %d has taken the listening sockets over; draining",
               static_cast<int>(cred.pid));
      server_->callbacks_.hand_over(cred.pid);
      sendMessage(fd_, "bye");
      finish();
    } else {
      sendMessage(fd_, "error unknown request");
      finish();
    }
  }

  void takeover(const ucred& cred) {
    if (cred.uid != 0 && cred.uid != server_->owner_) {
      LOG_WARN("control: refused a takeover by uid %u (pid %d): only root or uid %u may",
               static_cast<unsigned>(cred.uid), static_cast<int>(cred.pid),
               static_cast<unsigned>(server_->owner_));
      sendMessage(fd_, "error permission denied");
      finish();
      return;
    }
    std::string why;
    if (!server_->callbacks_.can_hand_over(&why)) {
      sendMessage(fd_, "error " + why);
      finish();
      return;
    }
    std::vector<Socket> sockets = server_->callbacks_.sockets();
    for (size_t i = 0; i < sockets.size(); i += kMaxFdsPerMessage) {
      std::string text = "sockets";
      std::vector<int> fds;
      for (size_t j = i; j < std::min(sockets.size(), i + kMaxFdsPerMessage); ++j) {
        text += std::string(" ") + sockets[j].kind + " " + sockets[j].address;
        fds.push_back(sockets[j].fd);
      }
      if (!sendMessage(fd_, text, fds)) {
        LOG_WARN("control: sending the listening sockets to pid %d failed: %s",
                 static_cast<int>(cred.pid), strerror(errno));
        finish();
        return;
      }
    }
    sendMessage(fd_, "end " + std::to_string(getpid()));
    LOG_INFO("control: sent %zu listening sockets to pid %d; waiting for it to take over",
             sockets.size(), static_cast<int>(cred.pid));
    awaiting_ready_ = true;
    uv_timer_start(
        &timer_, [](uv_timer_t* t) { static_cast<Connection*>(t->data)->finish(); },
        kReadyTimeoutMs, 0);
  }

  Server* server_;
  int fd_;
  uv_poll_t poll_;
  uv_timer_t timer_;
  bool closing_ = false;
  bool awaiting_ready_ = false;
};

Server::Server(uv_loop_t* loop, Callbacks callbacks)
    : loop_(loop), callbacks_(std::move(callbacks)), owner_(getuid()) {}

Server::~Server() = default;

int Server::listen(const std::string& name) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return errno;
  }
  socklen_t len;
  sockaddr_un addr = abstractAddress(name, &len);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 8) != 0) {
    int e = errno;
    ::close(fd);
    return e;
  }
  fd_ = fd;
  uv_poll_init(loop_, &poll_, fd_);
  poll_.data = this;
  uv_poll_start(&poll_, UV_READABLE, &Server::onReadable);
  open_ = true;
  return 0;
}

void Server::close() {
  if (open_) {
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_), [](uv_handle_t* h) {
      auto* self = static_cast<Server*>(h->data);
      ::close(self->fd_);  // the name is free from here on
      self->fd_ = -1;
    });
  }
}

void Server::closeConnections() {
  std::vector<Connection*> all = connections_;
  for (Connection* c : all) {
    c->finish();
  }
}

void Server::onReadable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<Server*>(poll->data);
  if (status < 0 || !self->open_) {
    return;
  }
  for (int i = 0; i < 8; ++i) {
    int fd = accept4(self->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    new Connection(self, fd);
  }
}

// ---- the other side ------------------------------------------------------------------------

std::optional<pid_t> runningPid(const std::string& name) {
  int fd = connectTo(name);
  if (fd < 0) {
    return std::nullopt;
  }
  ucred cred{};
  socklen_t len = sizeof cred;
  bool ok = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  ::close(fd);
  return ok ? std::optional<pid_t>(cred.pid) : std::nullopt;
}

bool queryAddresses(const std::string& name, std::vector<std::string>* addresses) {
  int fd = connectTo(name);
  if (fd < 0) {
    return false;
  }
  std::string reply;
  bool ok = sendMessage(fd, "addresses") && receiveMessage(fd, &reply, nullptr, kClientTimeoutMs);
  ::close(fd);
  std::vector<std::string> w = words(reply);
  if (!ok || w.empty() || w[0] != "addresses") {
    return false;
  }
  addresses->assign(w.begin() + 1, w.end());
  return true;
}

Takeover::~Takeover() {
  abort();
}

bool Takeover::begin(const std::string& name, std::string* error) {
  fd_ = connectTo(name);
  if (fd_ < 0) {
    *error = "no sluice is running with this config (nothing to take over from)";
    return false;
  }
  if (!sendMessage(fd_, "takeover")) {
    *error = std::string("cannot ask the running sluice: ") + strerror(errno);
    return false;
  }
  for (;;) {
    std::string text;
    std::vector<int> fds;
    if (!receiveMessage(fd_, &text, &fds, kClientTimeoutMs)) {
      for (int fd : fds) {
        ::close(fd);
      }
      *error = "the running sluice did not hand its sockets over";
      return false;
    }
    std::vector<std::string> w = words(text);
    if (w.empty() || w[0] == "error") {
      for (int fd : fds) {
        ::close(fd);
      }
      *error = "the running sluice refused: " + (text.size() > 6 ? text.substr(6) : text);
      return false;
    }
    if (w[0] == "end") {
      old_pid_ = w.size() > 1 ? static_cast<pid_t>(atoi(w[1].c_str())) : 0;
      return true;
    }
    // "sockets K ADDR K ADDR ...", one descriptor per pair.
    size_t pairs = (w.size() - 1) / 2;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (i < pairs && w[0] == "sockets") {
        sockets_.push_back({w[1 + 2 * i].empty() ? 'L' : w[1 + 2 * i][0], w[2 + 2 * i], fds[i]});
      } else {
        ::close(fds[i]);
      }
    }
  }
}

bool Takeover::finish(std::string* error) {
  std::string reply;
  if (!sendMessage(fd_, "ready") || !receiveMessage(fd_, &reply, nullptr, kClientTimeoutMs) ||
      reply != "bye") {
    *error = "the old process did not confirm the hand-over";
    return false;
  }
  ::close(fd_);
  fd_ = -1;
  return true;
}

void Takeover::abort() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  for (Socket& s : sockets_) {
    if (s.fd >= 0) {
      ::close(s.fd);
      s.fd = -1;
    }
  }
}

}  // namespace sluice::control
