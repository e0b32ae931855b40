// The HTTP/1.1 codec's state machine (ServerConnection) on a real worker, without the network:
// the client end is one half of a Unix socket pair, the connection is handed the other half.
// Pipelining and response order, keep-alive after local answers and close after unread bodies,
// HEAD, bad requests, the head timeout, and a shutdown.

#include "proxy/http/server_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "proxy/worker.h"

namespace sluice::http {
namespace {

// Routes: "fail.example" goes to a backend nothing listens on (a quick 502); everything else has
// no route (404). `max_body_bytes` 16 on the failing route.
constexpr const char* kConfig = R"(
[server]
workers = 1
access_log = "off"
[[listeners]]
name = "public"
listen = "127.0.0.1:1"
header_timeout = "300ms"
idle_timeout = "2s"
[[pools]]
name = "gone"
backends = [{ address = "127.0.0.1:1" }]
connect_timeout = "1s"
[[routes]]
listener = "public"
host = "fail.example"
path_prefix = "/"
pool = "gone"
max_body_bytes = 16
[[routes]]
listener = "public"
host = "ws.example"
path_prefix = "/"
pool = "gone"
[routes.websocket]
enabled = true
)";

class Codec : public ::testing::Test {
 protected:
  void SetUp() override {
    conf::LoadResult r = conf::loadString(kConfig, "codec.toml");
    ASSERT_TRUE(r.config) << (r.diagnostics.empty() ? "" : r.diagnostics[0].format());
    auto snap = std::make_shared<Snapshot>(r.config, 1);
    conf::Diagnostics d;
    ASSERT_TRUE(snap->buildFilters(&d) && snap->resolveBackends(&d) && snap->buildTls(&d));
    registry_ = std::make_unique<metrics::Registry>(1);
    snap->bindMetrics(*registry_);
    snap->buildBalancers(&states_);
    std::string error;
    ASSERT_TRUE(log_.configure("off", "json", &error));
    worker_ = std::make_unique<Worker>(
        0, snap, std::vector<std::pair<size_t, int>>{}, &shared_, &log_,
        [](Worker&, size_t, int fd, const sockaddr_storage&) { ::close(fd); });
    worker_->start();
  }

  void TearDown() override {
    for (int fd : clients_) {
      ::close(fd);
    }
    worker_->requestShutdown(std::chrono::milliseconds(500));
    worker_->join();
  }

  // A new connection: returns the client's end.
  int connect() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    int server = fds[0];
    Worker* w = worker_.get();
    auto accepted = std::make_shared<std::atomic<bool>>(false);
    worker_->post([w, server, accepted] {
      sockaddr_storage peer{};
      peer.ss_family = AF_UNIX;
      (new ServerConnection(w, 0))->accept(server, peer);
      accepted->store(true);
    });
    clients_.push_back(fds[1]);
    // Returns once the worker has it (a loaded machine may take its time), so that what a test
    // does next (a shutdown, say) happens to an accepted connection.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!accepted->load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(accepted->load()) << "the worker did not take the connection within 10 s";
    return fds[1];
  }

  static void send(int fd, std::string_view data) {
    ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }

  // Everything the connection sends within `ms` or until it closes; `closed` says which.
  static std::string read(int fd, int ms, bool* closed = nullptr, size_t want = SIZE_MAX) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    bool eof = false;
    while (out.size() < want) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) {
        break;
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left)) <= 0) {
        break;
      }
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        eof = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    if (closed != nullptr) {
      *closed = eof;
    }
    return out;
  }

  static int count(const std::string& text, std::string_view what) {
    int n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
      ++n;
    }
    return n;
  }

  SharedState shared_;
  AccessLog log_{1};
  upstream::BackendStates states_;
  std::unique_ptr<metrics::Registry> registry_;
  std::unique_ptr<Worker> worker_;
  std::vector<int> clients_;
};

TEST_F(Codec, PipelinedRequestsAreAnsweredInOrder) {
  int c = connect();
  send(c,
       "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
       "GET /b HTTP/1.1\r\nHost: fail.example\r\n\r\n"
       "GET /c HTTP/1.1\r\nHost: y\r\n\r\n");
  std::string out = read(c, 3000, nullptr, 1);
  out += read(c, 500);
  size_t a = out.find("404");
  size_t b = out.find("502");
  size_t c3 = out.rfind("404");
  ASSERT_NE(a, std::string::npos) << out;
  ASSERT_NE(b, std::string::npos) << out;
  EXPECT_LT(a, b);
  EXPECT_LT(b, c3);
  EXPECT_EQ(count(out, "HTTP/1.1 "), 3) << out;
}

TEST_F(Codec, KeepAliveAfterALocalAnswerWithoutBody) {
  int c = connect();
  send(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
  bool closed = true;
  std::string out = read(c, 1000, &closed, 1);
  out += read(c, 200, &closed);
  EXPECT_NE(out.find("404 Not Found"), std::string::npos) << out;
  EXPECT_FALSE(closed);
  send(c, "GET /two HTTP/1.1\r\nHost: x\r\n\r\n");
  out = read(c, 1000, &closed, 1);
  EXPECT_NE(out.find("404 Not Found"), std::string::npos) << out;
}

TEST_F(Codec, UnreadBodyClosesAfterTheAnswer) {
  int c = connect();
  // No route: the body is never read, so the connection cannot go on.
  send(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
  bool closed = false;
  std::string out = read(c, 3000, &closed);
  EXPECT_NE(out.find("404"), std::string::npos) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  EXPECT_TRUE(closed);
}

TEST_F(Codec, BodyLimitAnswers413AndCloses) {
  int c = connect();
  send(c, "POST /x HTTP/1.1\r\nHost: fail.example\r\nContent-Length: 17\r\n\r\n");
  bool closed = false;
  std::string out = read(c, 3000, &closed);
  EXPECT_NE(out.find("413"), std::string::npos) << out;
  EXPECT_TRUE(closed);
}

TEST_F(Codec, HeadAnswersHaveNoBody) {
  int c = connect();
  send(c, "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string out = read(c, 1000, nullptr, 1);
  out += read(c, 300);
  // Two heads; only the GET's answer carries its small body.
  EXPECT_EQ(count(out, "HTTP/1.1 404"), 2) << out;
  EXPECT_EQ(count(out, "404 Not Found: no route\n"), 1) << out;
}

TEST_F(Codec, BadRequestIs400AndCloses) {
  int c = connect();
  send(c, "GET /x HTTP/1.1 extra\r\nHost: x\r\n\r\n");
  bool closed = false;
  std::string out = read(c, 2000, &closed);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << out;
  EXPECT_TRUE(closed);
}

TEST_F(Codec, HeadTimeoutAnswers408OnlyAfterABytesCame) {
  int quiet = connect();
  int slow = connect();
  send(slow, "GET /x HTTP/1.1\r\nHo");
  bool closed = false;
  std::string out = read(slow, 2000, &closed);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 408")) << out;
  EXPECT_TRUE(closed);
  out = read(quiet, 2000, &closed);
  EXPECT_EQ(out, "");  // a connection that never sent a byte gets no answer, only the close
  EXPECT_TRUE(closed);
}

TEST_F(Codec, ShutdownClosesIdleConnections) {
  int c = connect();
  send(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  read(c, 1000, nullptr, 1);
  worker_->requestShutdown(std::chrono::milliseconds(500));
  bool closed = false;
  read(c, 2000, &closed);
  EXPECT_TRUE(closed);
}

// A connection accepted a moment before the shutdown has not sent its request yet: it gets a
// short grace to send it (answered, with Connection: close) instead of a close that fails it.
TEST_F(Codec, ShutdownLetsAFreshConnectionSendItsFirstRequest) {
  int c = connect();
  worker_->requestShutdown(std::chrono::milliseconds(3000));
  bool closed = false;
  // The grace is the header timeout (300 ms here) at most: well inside it, still open.
  EXPECT_EQ(read(c, 100, &closed), "");
  EXPECT_FALSE(closed) << "closed before it could send its request";
  send(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string out = read(c, 2000, &closed);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 404")) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  EXPECT_TRUE(closed);
}

// The handshake's Sec-WebSocket-Key and Sec-WebSocket-Version checks (one line of each, any
// case): a good handshake gets as far as the backend (gone: 502, then 503 once it is marked down).
TEST_F(Codec, WebSocketHandshakeKeyAndVersionLines) {
  const std::string head =
      "GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n";
  const std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  const std::string version = "Sec-WebSocket-Version: 13\r\n";
  struct Case {
    std::string headers;
    const char* status;
  };
  const Case cases[] = {
      {key + version, "HTTP/1.1 50"},
      {"sec-websocket-version: 13\r\nSEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\n",
       "HTTP/1.1 50"},
      {version, "HTTP/1.1 400"},
      {key + key + version, "HTTP/1.1 400"},
      {"Sec-WebSocket-Key: short\r\n" + version, "HTTP/1.1 400"},
      {key, "HTTP/1.1 426"},
      {key + version + version, "HTTP/1.1 426"},
      {key + "Sec-WebSocket-Version: 12\r\n", "HTTP/1.1 426"},
  };
  for (const Case& k : cases) {
    int c = connect();
    send(c, head + k.headers + "\r\n");
    std::string out = read(c, 3000, nullptr, 12);
    EXPECT_TRUE(out.starts_with(k.status)) << k.headers << "\n" << out;
  }
}

// A freed connection's block is reused by the next connection on the thread; while cached it is
// off limits to AddressSanitizer as freed memory is.
TEST(ServerConnectionBlocks, FreedBlockIsReused) {
  void* a = ServerConnection::operator new(sizeof(ServerConnection));
  ServerConnection::operator delete(a, sizeof(ServerConnection));
  void* b = ServerConnection::operator new(sizeof(ServerConnection));
  EXPECT_EQ(a, b);
  void* c = ServerConnection::operator new(sizeof(ServerConnection));
  EXPECT_NE(b, c);
  ServerConnection::operator delete(c, sizeof(ServerConnection));
  ServerConnection::operator delete(b, sizeof(ServerConnection));
}

#if defined(__SANITIZE_ADDRESS__)
TEST(ServerConnectionBlocksDeathTest, CachedBlockIsPoisoned) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto* p =
            static_cast<volatile char*>(ServerConnection::operator new(sizeof(ServerConnection)));
        ServerConnection::operator delete(const_cast<char*>(p), sizeof(ServerConnection));
        p[8] = 1;
      },
      "use-after-poison");
}
#endif

}  // namespace
}  // namespace sluice::http
