#pragma once

// Counted allocations for the compression libraries (zlib, brotli), so that every codec can say
// how much memory it holds, and a z_stream that uses them and is ended when it goes.

#include <zlib.h>

#include <cstddef>

namespace sluice::http {

// Pass `this` as the library's opaque pointer and allocate()/release() as its functions: `bytes`
// then says what the library holds. Fits zlib's and brotli's allocation hooks alike.
class AllocationCounter {
 public:
  static void* allocate(void* opaque, size_t n);
  static void release(void* opaque, void* address);
  // zlib's form of allocate().
  static void* allocateItems(void* opaque, unsigned items, unsigned size) {
    return allocate(opaque, static_cast<size_t>(items) * size);
  }

  size_t bytes = 0;
};

// A z_stream with counted allocations, for raw deflate, zlib or gzip alike (the window bits say
// which); ended by the destructor.
class ZStream {
 public:
  ZStream();
  ~ZStream();
  ZStream(const ZStream&) = delete;
  ZStream& operator=(const ZStream&) = delete;

  // `window_bits` as zlib takes it: negative for raw deflate, +16 for gzip.
  bool initInflate(int window_bits);
  bool initDeflate(int level, int window_bits, int mem_level);
  size_t memoryBytes() const { return counter_.bytes; }

  z_stream s;

 private:
  AllocationCounter counter_;
  bool inflating_ = false;
  bool deflating_ = false;
};

}  // namespace sluice::http
