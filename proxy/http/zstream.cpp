#include "proxy/http/zstream.h"

#include <cstdlib>
#include <cstring>

namespace sluice::http {

namespace {
// Each block carries its size in front, so that release() can count it back.
constexpr size_t kHeader = alignof(std::max_align_t);
}  // namespace

void* AllocationCounter::allocate(void* opaque, size_t n) {
  auto* p = static_cast<char*>(std::malloc(n + kHeader));
  if (p == nullptr) {
    return nullptr;
  }
  std::memcpy(p, &n, sizeof n);
  static_cast<AllocationCounter*>(opaque)->bytes += n;
  return p + kHeader;
}

void AllocationCounter::release(void* opaque, void* address) {
  if (address == nullptr) {
    return;
  }
  char* p = static_cast<char*>(address) - kHeader;
  size_t n = 0;
  std::memcpy(&n, p, sizeof n);
  static_cast<AllocationCounter*>(opaque)->bytes -= n;
  std::free(p);
}

ZStream::ZStream() {
  std::memset(&s, 0, sizeof s);
  s.zalloc = &AllocationCounter::allocateItems;
  s.zfree = &AllocationCounter::release;
  s.opaque = &counter_;
}

ZStream::~ZStream() {
  if (inflating_) {
    inflateEnd(&s);
  } else if (deflating_) {
    deflateEnd(&s);
  }
}

bool ZStream::initInflate(int window_bits) {
  inflating_ = inflateInit2(&s, window_bits) == Z_OK;
  return inflating_;
}

bool ZStream::initDeflate(int level, int window_bits, int mem_level) {
  deflating_ =
      deflateInit2(&s, level, Z_DEFLATED, window_bits, mem_level, Z_DEFAULT_STRATEGY) == Z_OK;
  return deflating_;
}

}  // namespace sluice::http
