#include "filters/origin/origin.h"

namespace sluice::filters {

namespace {

class OriginStream : public StreamFilter {
 public:
  explicit OriginStream(const OriginFilter& filter) : filter_(filter) {}
  Status onRequestHead(RequestHead& head) override {
    if (!callbacks().info().websocket ||
        filter_.allowed(head.get("origin").value_or(std::string_view()))) {
      return Status::kContinue;
    }
    callbacks().sendLocalReply(403, "origin not allowed");
    return Status::kStop;
  }

 private:
  const OriginFilter& filter_;  // kept alive by the stream's FilterManager
};

}  // namespace

OriginFilter::OriginFilter(std::string name, std::vector<std::string> allow, bool allow_missing)
    : Filter(std::move(name)), allow_missing_(allow_missing) {
  for (const std::string& a : allow) {
    std::string n = normalize(a);
    size_t star = n.find("://*.");
    if (star != std::string::npos) {
      patterns_.push_back({n.substr(0, star + 3), n.substr(star + 4)});
    } else {
      patterns_.push_back({n, {}});
    }
  }
}

std::string OriginFilter::normalize(std::string_view origin) {
  size_t sep = origin.find("://");
  if (sep == std::string_view::npos || sep == 0) {
    return {};
  }
  std::string out;
  out.reserve(origin.size());
  for (char c : origin) {
    out.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c);
  }
  while (!out.empty() && out.back() == '/') {
    out.pop_back();
  }
  auto strip = [&](std::string_view scheme, std::string_view port) {
    if (out.starts_with(scheme) && out.ends_with(port) &&
        out.size() > scheme.size() + port.size()) {
      out.resize(out.size() - port.size());
    }
  };
  strip("https://", ":443");
  strip("http://", ":80");
  return out;
}

bool OriginFilter::allowed(std::string_view origin) const {
  if (origin.empty()) {
    return allow_missing_;
  }
  std::string n = normalize(origin);
  if (n.empty()) {
    return false;  // "null" (sandboxed pages, file://) and garbage
  }
  for (const Pattern& p : patterns_) {
    if (p.suffix.empty()) {
      if (n == p.scheme_host) {
        return true;
      }
    } else if (n.size() > p.scheme_host.size() + p.suffix.size() && n.starts_with(p.scheme_host) &&
               n.ends_with(p.suffix)) {
      // The part the '*' covers must be a host label run, not a path or a port.
      std::string_view middle(n.data() + p.scheme_host.size(),
                              n.size() - p.scheme_host.size() - p.suffix.size());
      if (middle.find_first_of("/:@") == std::string_view::npos) {
        return true;
      }
    }
  }
  return false;
}

std::unique_ptr<StreamFilter> OriginFilter::create() const {
  return std::make_unique<OriginStream>(*this);
}

}  // namespace sluice::filters
