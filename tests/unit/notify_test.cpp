// The sd_notify protocol as sluice speaks it: datagrams to $NOTIFY_SOCKET, path or abstract.

#include "proxy/notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace sluice {
namespace {

// A datagram socket standing in for systemd's notify socket.
class Listener {
 public:
  // `name` starting with '@' binds in the abstract namespace, as systemd may.
  explicit Listener(const std::string& name) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') {
      addr.sun_path[0] = '\0';
    } else {
      unlink(name.c_str());
      path_ = name;
    }
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0;
    setenv("NOTIFY_SOCKET", name.c_str(), 1);
  }
  ~Listener() {
    unsetenv("NOTIFY_SOCKET");
    close(fd_);
    if (!path_.empty()) {
      unlink(path_.c_str());
    }
  }
  bool ok() const { return ok_; }
  std::string receive() {
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    return n < 0 ? std::string("<nothing>") : std::string(buf, static_cast<size_t>(n));
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string path_;
};

TEST(NotifyTest, MessagesCarryStateAndOneStatusLine) {
  EXPECT_EQ(notify::readyMessage("generation 1\nlive"), "READY=1\nSTATUS=generation 1 live");
  EXPECT_EQ(notify::reloadingMessage("reloading (SIGHUP)", 1234567),
            "RELOADING=1\nMONOTONIC_USEC=1234567\nSTATUS=reloading (SIGHUP)");
  EXPECT_EQ(notify::stoppingMessage("draining"), "STOPPING=1\nSTATUS=draining");
}

TEST(NotifyTest, SendsToAPathSocket) {
  std::string path = "/tmp/sluice-notify-test-" + std::to_string(getpid());
  Listener listener(path);
  ASSERT_TRUE(listener.ok());
  EXPECT_TRUE(notify::send("READY=1"));
  EXPECT_EQ(listener.receive(), "READY=1");
  notify::stopping("bye");
  EXPECT_EQ(listener.receive(), "STOPPING=1\nSTATUS=bye");
}

TEST(NotifyTest, SendsToAnAbstractSocket) {
  Listener listener("@sluice-notify-test-" + std::to_string(getpid()));
  ASSERT_TRUE(listener.ok());
  notify::reloading("r");
  std::string got = listener.receive();
  EXPECT_EQ(got.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << got;
  EXPECT_NE(got.find("\nSTATUS=r"), std::string::npos) << got;
}

TEST(NotifyTest, NothingWithoutOrWithABadSocket) {
  unsetenv("NOTIFY_SOCKET");
  EXPECT_FALSE(notify::send("READY=1"));
  setenv("NOTIFY_SOCKET", "relative/path", 1);
  EXPECT_FALSE(notify::send("READY=1"));
  setenv("NOTIFY_SOCKET", ("/" + std::string(200, 'x')).c_str(), 1);
  EXPECT_FALSE(notify::send("READY=1"));  // longer than sun_path
  setenv("NOTIFY_SOCKET", "/nonexistent/sluice-notify", 1);
  EXPECT_FALSE(notify::send("READY=1"));  // nobody listens
  unsetenv("NOTIFY_SOCKET");
}

}  // namespace
}  // namespace sluice
