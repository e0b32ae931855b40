#pragma once

// RESP2, the Redis serialization protocol: commands encoded as arrays of bulk strings, and an
// incremental parser for replies. The parser takes bytes as they arrive, in any pieces, and
// yields whole replies; what it accepts is bounded (string length, element count, nesting), so a
// broken or hostile server costs an error, never unbounded memory.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "filters/redis.h"

namespace sluice::redis {

// Appends `args` as one command ("*N\r\n$len\r\narg\r\n...").
void appendCommand(std::string* out, const std::vector<std::string>& args);

class ReplyParser {
 public:
  static constexpr size_t kMaxBulk = size_t{8} << 20;   // bytes in one string
  static constexpr int64_t kMaxElements = 1 << 20;      // in one array
  static constexpr int kMaxDepth = 8;                   // arrays within arrays
  static constexpr size_t kMaxLine = size_t{64} << 10;  // a header or simple reply line

  // Appends what arrives; returns false once the input is not RESP (error() says why). Whole
  // replies go to `out`, in order.
  bool feed(const char* data, size_t len, std::vector<filters::RedisReply>* out);
  const std::string& error() const { return error_; }
  // Bytes kept for a reply not complete yet.
  size_t buffered() const { return buffer_.size() - pos_; }
  void reset();

 private:
  enum class Step { kDone, kMore, kBad };
  // Parses one reply at `at`; on kDone moves `at` past it.
  Step parse(size_t& at, int depth, filters::RedisReply* out);
  // The line at `at` (without CRLF); kMore when it has not all arrived.
  Step line(size_t& at, std::string_view* out);
  bool integer(std::string_view text, int64_t* out);

  std::string buffer_;
  size_t pos_ = 0;  // start of the first unparsed reply in buffer_
  std::string error_;
};

}  // namespace sluice::redis
