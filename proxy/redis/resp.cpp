#include "proxy/redis/resp.h"

#include <charconv>

namespace sluice::redis {

using filters::RedisReply;

void appendCommand(std::string* out, const std::vector<std::string>& args) {
  char num[24];
  auto put = [&](char kind, size_t n) {
    out->push_back(kind);
    char* end = std::to_chars(num, num + sizeof num, n).ptr;
    out->append(num, end);
    out->append("\r\n");
  };
  put('*', args.size());
  for (const std::string& a : args) {
    put('$', a.size());
    out->append(a);
    out->append("\r\n");
  }
}

void ReplyParser::reset() {
  buffer_.clear();
  pos_ = 0;
  error_.clear();
}

bool ReplyParser::feed(const char* data, size_t len, std::vector<RedisReply>* out) {
  if (!error_.empty()) {
    return false;
  }
  buffer_.append(data, len);
  for (;;) {
    size_t at = pos_;
    RedisReply r;
    Step s = parse(at, 0, &r);
    if (s == Step::kBad) {
      return false;
    }
    if (s == Step::kMore) {
      break;
    }
    out->push_back(std::move(r));
    pos_ = at;
  }
  // Keep only the unparsed tail (replies are small: the copy is cheap and rare).
  if (pos_ > 0) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  // A reply that cannot fit the bounds is refused before it is buffered whole.
  if (buffer_.size() > kMaxBulk + kMaxLine) {
    error_ = "reply larger than the client accepts";
    return false;
  }
  return true;
}

ReplyParser::Step ReplyParser::line(size_t& at, std::string_view* out) {
  size_t cr = buffer_.find("\r\n", at);
  if (cr == std::string::npos) {
    // A line longer than any RESP header or simple reply could be is not RESP.
    if (buffer_.size() - at > kMaxLine) {
      error_ = "line too long";
      return Step::kBad;
    }
    return Step::kMore;
  }
  *out = std::string_view(buffer_).substr(at, cr - at);
  at = cr + 2;
  return Step::kDone;
}

bool ReplyParser::integer(std::string_view text, int64_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    error_ = "bad integer";
    return false;
  }
  return true;
}

ReplyParser::Step ReplyParser::parse(size_t& at, int depth, RedisReply* out) {
  if (at >= buffer_.size()) {
    return Step::kMore;
  }
  char kind = buffer_[at];
  size_t p = at + 1;
  std::string_view text;
  Step s = line(p, &text);
  if (s != Step::kDone) {
    return s;
  }
  switch (kind) {
    case '+':
      out->type = RedisReply::Type::kString;
      out->str = text;
      break;
    case '-':
      out->type = RedisReply::Type::kError;
      out->str = text;
      break;
    case ':':
      out->type = RedisReply::Type::kInteger;
      if (!integer(text, &out->integer)) {
        return Step::kBad;
      }
      break;
    case '$': {
      int64_t n = 0;
      if (!integer(text, &n)) {
        return Step::kBad;
      }
      if (n == -1) {
        out->type = RedisReply::Type::kNil;
        break;
      }
      if (n < 0 || static_cast<uint64_t>(n) > kMaxBulk) {
        error_ = "bad bulk length";
        return Step::kBad;
      }
      size_t len = static_cast<size_t>(n);
      if (buffer_.size() - p < len + 2) {
        return Step::kMore;
      }
      if (buffer_[p + len] != '\r' || buffer_[p + len + 1] != '\n') {
        error_ = "bulk string without CRLF";
        return Step::kBad;
      }
      out->type = RedisReply::Type::kString;
      out->str.assign(buffer_, p, len);
      p += len + 2;
      break;
    }
    case '*': {
      int64_t n = 0;
      if (!integer(text, &n)) {
        return Step::kBad;
      }
      if (n == -1) {
        out->type = RedisReply::Type::kNil;
        break;
      }
      if (n < 0 || n > kMaxElements) {
        error_ = "bad array length";
        return Step::kBad;
      }
      if (depth + 1 > kMaxDepth) {
        error_ = "arrays nested too deep";
        return Step::kBad;
      }
      out->type = RedisReply::Type::kArray;
      out->elements.clear();
      // Each element takes at least 3 bytes: a count beyond what has arrived waits for more
      // rather than reserving memory on the server's word.
      out->elements.reserve(std::min<size_t>(static_cast<size_t>(n), (buffer_.size() - p) / 3 + 1));
      for (int64_t i = 0; i < n; ++i) {
        RedisReply e;
        Step es = parse(p, depth + 1, &e);
        if (es != Step::kDone) {
          return es;
        }
        out->elements.push_back(std::move(e));
      }
      break;
    }
    default:
      error_ = "unknown reply type";
      return Step::kBad;
  }
  at = p;
  return Step::kDone;
}

}  // namespace sluice::redis
