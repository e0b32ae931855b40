#pragma once

// An asynchronous Redis client, as filters see it: commands go out pipelined on one connection
// per client, and each completes later on the worker that made the client, exactly once, never
// inside the call that sent it. The proxy implements it (proxy/redis/) over its own event loop;
// filters get one from Dispatcher::connectRedis(). Nothing here blocks.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sluice::filters {

struct RedisOptions {
  std::string address;   // "host:port", "[v6]:port"
  std::string username;  // ACL user (empty: AUTH with the password alone)
  std::string password;  // empty: no AUTH
  // TLS toward Redis: verified against `ca_file` (empty: the system's CAs) unless `verify` is
  // off; `sni` overrides the name sent and checked (default: the address's host).
  bool tls = false;
  std::string ca_file;
  bool verify = true;
  std::string sni;
  std::chrono::milliseconds connect_timeout{1000};
  // A call not answered within this fails, and the connection is dropped and made again (its
  // replies could no longer be matched to their calls).
  std::chrono::milliseconds timeout{250};
  // Calls waiting for the connection (while it connects) beyond this fail at once.
  uint32_t max_queued = 10000;
};

struct RedisReply {
  enum class Type : uint8_t {
    kFailed,  // no answer: not connected, timed out, connection lost (`str` says why)
    kError,   // Redis answered with an error ("-NOSCRIPT ...": `str` holds the text)
    kNil,
    kInteger,
    kString,  // a simple or bulk string
    kArray,
  };
  Type type = Type::kFailed;
  int64_t integer = 0;
  std::string str;
  std::vector<RedisReply> elements;

  bool failed() const { return type == Type::kFailed; }
  static RedisReply failure(std::string why) {
    RedisReply r;
    r.str = std::move(why);
    return r;
  }
};

class RedisClient {
 public:
  using Callback = std::function<void(RedisReply)>;
  // Destroying the client drops its calls: their callbacks never run.
  virtual ~RedisClient() = default;
  // Sends `args` (a command and its arguments); `done` runs on this worker with the reply.
  virtual void command(std::vector<std::string> args, Callback done) = 0;
  // The connection is up (authenticated). While it is down, calls fail at once and it is made
  // again in the background, with a growing delay between attempts.
  virtual bool connected() const = 0;
};

}  // namespace sluice::filters
