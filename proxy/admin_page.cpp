#include "proxy/admin_page.h"

#include "proxy/access_log.h"

namespace sluice {

namespace {

// The offered subprotocols, one at a time (comma-separated, on any number of lines).
template <typename F>
void forEachProtocol(const http::RequestHead& req, F f) {
  for (const http::Header& h : req.headers) {
    if (!http::iequals(h.name, "sec-websocket-protocol")) {
      continue;
    }
    std::string_view rest = h.value;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) {
        item.remove_prefix(1);
      }
      while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) {
        item.remove_suffix(1);
      }
      if (!item.empty()) {
        f(item);
      }
    }
  }
}

}  // namespace

const AdminAsset* findAdminAsset(std::string_view path) {
  if (path == "/index.html") {
    path = "/";
  }
  for (size_t i = 0; i < kAdminAssetCount; ++i) {
    if (path == kAdminAssets[i].path) {
      return &kAdminAssets[i];
    }
  }
  return nullptr;
}

AdminResponse adminAssetResponse(const AdminAsset& asset) {
  AdminResponse r;
  r.content_type = asset.content_type;
  r.body.assign(reinterpret_cast<const char*>(asset.data), asset.size);
  r.headers =
      "X-Content-Type-Options: nosniff\r\n"
      "X-Frame-Options: DENY\r\n"
      "Referrer-Policy: no-referrer\r\n"
      "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
      "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
      "frame-ancestors 'none'\r\n";
  return r;
}

std::string_view liveOfferedToken(const http::RequestHead& request) {
  std::string_view token;
  forEachProtocol(request, [&](std::string_view p) {
    if (p.size() > 7 && p.substr(0, 7) == "bearer.") {
      token = p.substr(7);
    }
  });
  return token;
}

bool liveProtocolOffered(const http::RequestHead& request) {
  bool offered = false;
  forEachProtocol(request, [&](std::string_view p) { offered = offered || p == kLiveProtocol; });
  return offered;
}

std::string routeTotalsJson(const metrics::Registry::RouteTotals& t) {
  std::string o = "\"requests\":" + std::to_string(t.requests) +
                  ",\"websockets\":" + std::to_string(t.websockets) +
                  ",\"messages\":{\"downstream_to_upstream\":" + std::to_string(t.messages[0]) +
                  ",\"upstream_to_downstream\":" + std::to_string(t.messages[1]) + "},\"closes\":{";
  bool first = true;
  for (const auto& [code, count] : t.closes) {
    o += (first ? "\"" : ",\"") + std::to_string(code) + "\":" + std::to_string(count);
    first = false;
  }
  return o + "}";
}

std::string problemsJson(const std::vector<log::Problem>& problems) {
  std::string o = "\"last_errors\":[";
  for (size_t i = 0; i < problems.size(); ++i) {
    o += i ? ",{\"time\":" : "{\"time\":";
    appendJsonString(&o, problems[i].time);
    o += ",\"level\":";
    appendJsonString(&o, problems[i].level);
    o += ",\"message\":";
    appendJsonString(&o, problems[i].message);
    o += "}";
  }
  return o + "]";
}

}  // namespace sluice
