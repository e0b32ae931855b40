#include "filters/api_key/api_key_filter.h"

#include <algorithm>
#include <fstream>

#include "filters/options.h"
#include "filters/request_key.h"

namespace sluice::filters::api_key {

namespace {

constexpr size_t kMaxKeysFileBytes = size_t{4} * 1024 * 1024;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool validName(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

class ApiKeyStream : public StreamFilter {
 public:
  explicit ApiKeyStream(const ApiKeyFilter& f) : f_(f), s_(f.settings()) {}

  Status onRequestHead(RequestHead& head) override {
    if (!s_.forward_name_header.empty()) {
      head.remove(s_.forward_name_header);  // only sluice says which key was used
    }
    std::vector<std::string_view> keys;
    if (s_.from_query) {
      keys = queryValues(head.url, s_.name);
      if (!keys.empty()) {
        callbacks().setLogField(LogField::kPath, rewriteQueryParam(head.url, s_.name, "REDACTED"));
      }
    } else {
      for (const Header& h : head.headers) {
        if (iequals(h.name, s_.name)) {
          std::string_view v = trim(h.value);
          if (v.size() > 7 && iequals(v.substr(0, 7), "bearer ")) {
            v = trim(v.substr(7));
          }
          keys.push_back(v);
        }
      }
    }
    const ApiKeyFilter::Counters& c = f_.counters();
    if (keys.empty() || keys.front().empty()) {
      return deny("missing_key", "no API key in " + s_.text, c.missing);
    }
    if (keys.size() > 1) {
      return deny("malformed", "more than one API key in " + s_.text, c.malformed);
    }
    std::optional<std::string_view> name = f_.store().lookup(keys.front());
    if (!name) {
      return deny("unknown_key", "unknown API key", c.unknown);
    }
    c.allow.inc(callbacks().dispatcher().workerId());
    callbacks().setLogField(LogField::kAuth, f_.name() + ":allow:" + std::string(*name));
    if (!s_.forward_name_header.empty()) {
      head.set(s_.forward_name_header, *name);
    }
    if (s_.strip_key) {
      if (s_.from_query) {
        head.url = rewriteQueryParam(head.url, s_.name, std::nullopt);
      } else {
        head.remove(s_.name);
      }
    }
    return Status::kContinue;
  }

 private:
  Status deny(std::string_view reason, const std::string& detail, const Counter& counter) {
    counter.inc(callbacks().dispatcher().workerId());
    callbacks().setLogField(LogField::kAuth, f_.name() + ":deny:" + std::string(reason));
    callbacks().sendLocalReply(401, "API key refused (" + std::string(reason) + "): " + detail,
                               "WWW-Authenticate: ApiKey\r\n");
    return Status::kStop;
  }

  const ApiKeyFilter& f_;  // kept alive by the stream's FilterManager
  const ApiKeyFilter::Settings& s_;
};

}  // namespace

ApiKeyFilter::ApiKeyFilter(std::string name, Settings settings, KeyStore store)
    : Filter(std::move(name)), settings_(std::move(settings)), store_(std::move(store)) {}

std::unique_ptr<StreamFilter> ApiKeyFilter::create() const {
  return std::make_unique<ApiKeyStream>(*this);
}

void ApiKeyFilter::bindStats(Stats& stats) {
  const char* family = "sluice_auth_decisions_total";
  const char* help = "Authentication decisions, by filter, result and reason.";
  auto c = [&](const char* result, const char* reason) {
    return stats.counter(family, help,
                         {{"filter", name()}, {"result", result}, {"reason", reason}});
  };
  counters_.allow = c("allow", "ok");
  counters_.missing = c("deny", "missing_key");
  counters_.unknown = c("deny", "unknown_key");
  counters_.malformed = c("deny", "malformed");
}

FilterPtr ApiKeyFilter::build(const conf::FilterConfig& config, conf::Diagnostics& diagnostics) {
  Options o(config, diagnostics);
  Settings s;
  std::optional<KeyStore> store;
  if (auto path = o.path("keys_file")) {
    std::ifstream in(*path, std::ios::binary);
    std::string text;
    char buf[8192];
    while (in && text.size() <= kMaxKeysFileBytes &&
           (in.read(buf, sizeof buf) || in.gcount() > 0)) {
      text.append(buf, static_cast<size_t>(in.gcount()));
    }
    if (!in.is_open() || in.bad()) {
      o.error("keys_file", "cannot read '" + *path + "'");
    } else if (text.size() > kMaxKeysFileBytes) {
      o.error("keys_file", "'" + *path + "' is larger than 4 MiB");
    } else {
      KeyStoreResult r = KeyStore::parse(text, *path);
      for (const std::string& e : r.errors) {
        o.error("keys_file", e);
      }
      store = std::move(r.store);
    }
  } else {
    o.error("type", "filter '" + config.name + "' (api_key) needs 'keys_file'");
  }
  if (auto from = o.string("key_from")) {
    std::string_view f = *from;
    size_t colon = f.find(':');
    std::string_view kind = f.substr(0, colon);
    std::string_view name = colon == std::string_view::npos ? "" : f.substr(colon + 1);
    if ((kind != "header" && kind != "query") || !validName(name) ||
        name.find('=') != std::string_view::npos) {
      o.error("key_from",
              "'key_from' must be \"header:NAME\" or \"query:NAME\", got '" + *from + "'");
    }
    s.from_query = kind == "query";
    s.name = name;
    s.text = *from;
  }
  if (auto h = o.string("forward_name_header")) {
    if (!h->empty() && !validName(*h)) {
      o.error("forward_name_header", "'forward_name_header' must be a header name (or \"\")");
    }
    s.forward_name_header = *h;
  }
  s.strip_key = o.boolean("strip_key").value_or(false);
  o.finish();
  if (!o.ok() || !store) {
    return nullptr;
  }
  return std::make_shared<ApiKeyFilter>(config.name, std::move(s), std::move(*store));
}

}  // namespace sluice::filters::api_key
