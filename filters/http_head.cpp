#include "filters/http_head.h"

#include <algorithm>

namespace sluice::filters {

namespace {
char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
}  // namespace

bool iequalsBytes(const char* a, const char* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

const Header* HeaderFields::find(std::string_view name) const {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) {
      return &h;
    }
  }
  return nullptr;
}

std::optional<std::string_view> HeaderFields::get(std::string_view name) const {
  const Header* h = find(name);
  if (h == nullptr) {
    return std::nullopt;
  }
  return std::string_view(h->value);
}

size_t HeaderFields::count(std::string_view name) const {
  size_t n = 0;
  for (const Header& h : headers) {
    n += iequals(h.name, name) ? 1 : 0;
  }
  return n;
}

void HeaderFields::add(std::string_view name, std::string_view value) {
  headers.push_back({std::string(name), std::string(value)});
}

void HeaderFields::set(std::string_view name, std::string_view value) {
  bool done = false;
  std::erase_if(headers, [&](Header& h) {
    if (!iequals(h.name, name)) {
      return false;
    }
    if (done) {
      return true;
    }
    h.value.assign(value);
    done = true;
    return false;
  });
  if (!done) {
    add(name, value);
  }
}

size_t HeaderFields::remove(std::string_view name) {
  return std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
}

void RequestHead::clear() {
  method.clear();
  url.clear();
  headers.clear();
  major = minor = 1;
}

void ResponseHead::clear() {
  status = 0;
  reason.clear();
  headers.clear();
  major = minor = 1;
}

}  // namespace sluice::filters
