#include "proxy/router.h"

#include <algorithm>

namespace sluice {

Router::Router(const conf::Config& config) : config_(config), listeners_(config.listeners.size()) {
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const conf::RouteConfig& r = config.routes[i];
    if (r.listener_index >= listeners_.size()) {
      continue;
    }
    ListenerRoutes& lr = listeners_[r.listener_index];
    HostRoutes* hr;
    if (r.host == "*") {
      hr = &lr.any;
      lr.has_any = true;
    } else if (r.host.size() > 2 && r.host[0] == '*' && r.host[1] == '.') {
      std::string suffix = r.host.substr(1);
      auto it = std::find_if(lr.suffixes.begin(), lr.suffixes.end(),
                             [&](const auto& p) { return p.first == suffix; });
      if (it == lr.suffixes.end()) {
        lr.suffixes.emplace_back(suffix, HostRoutes{});
        it = lr.suffixes.end() - 1;
      }
      hr = &it->second;
    } else {
      hr = &lr.exact[r.host];
    }
    hr->routes.push_back(static_cast<int>(i));
  }
  auto by_prefix = [&](HostRoutes& hr) {
    std::stable_sort(hr.routes.begin(), hr.routes.end(), [&](int a, int b) {
      return config_.routes[a].path_prefix.size() > config_.routes[b].path_prefix.size();
    });
  };
  for (ListenerRoutes& lr : listeners_) {
    for (auto& [_, hr] : lr.exact) {
      by_prefix(hr);
    }
    std::stable_sort(lr.suffixes.begin(), lr.suffixes.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (auto& [_, hr] : lr.suffixes) {
      by_prefix(hr);
    }
    by_prefix(lr.any);
  }
}

std::string Router::normalizeHost(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    // IPv6 literal: keep the brackets' content, drop the port.
    size_t end = host.find(']');
    host = end == std::string_view::npos ? host.substr(1) : host.substr(1, end - 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) {
      host = host.substr(0, colon);
    }
  }
  if (!host.empty() && host.back() == '.') {
    host.remove_suffix(1);
  }
  std::string out(host);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

const Router::HostRoutes* Router::hostRoutes(const ListenerRoutes& lr,
                                             std::string_view host) const {
  if (!lr.exact.empty()) {
    auto it = lr.exact.find(std::string(host));
    if (it != lr.exact.end()) {
      return &it->second;
    }
  }
  for (const auto& [suffix, hr] : lr.suffixes) {
    // "*.example.com" matches "a.example.com" but not "example.com".
    if (host.size() > suffix.size() && host.ends_with(suffix)) {
      return &hr;
    }
  }
  return lr.has_any ? &lr.any : nullptr;
}

int Router::match(size_t listener_index, std::string_view host, std::string_view path) const {
  if (listener_index >= listeners_.size()) {
    return -1;
  }
  const HostRoutes* hr = hostRoutes(listeners_[listener_index], normalizeHost(host));
  if (hr == nullptr) {
    return -1;
  }
  size_t q = path.find('?');
  if (q != std::string_view::npos) {
    path = path.substr(0, q);
  }
  for (int idx : hr->routes) {
    if (path.starts_with(config_.routes[idx].path_prefix)) {
      return idx;
    }
  }
  return -1;
}

}  // namespace sluice
