// Fuzzes permessage-deflate: the Sec-WebSocket-Extensions parser and negotiation (whatever sluice
// answers must be an answer a strict client accepts, on the same terms; offers survive a format
// and parse round trip), a bounded inflate of arbitrary bytes split at an input-chosen point, and
// a deflate/inflate round trip of the input.
//
// Input: one byte of flags (window, context takeover, mem level), one byte choosing a split point,
// then the rest: as header lines (split at '\n') and as compressed or plain message bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/ws/deflate.h"

namespace {

using namespace sluice::ws;

constexpr uint64_t kBound = uint64_t{64} * 1024;

void negotiate(std::string_view text, uint8_t flags) {
  std::vector<std::string_view> lines;
  while (!text.empty() && lines.size() < 4) {
    size_t nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  }
  std::vector<DeflateParams> offers = parseDeflateOffers(lines);

  std::string formatted = formatDeflateOffers(offers);
  std::vector<std::string_view> again = {formatted};
  if (!offers.empty() && parseDeflateOffers(again) != offers) {
    __builtin_trap();
  }

  DeflateConfig config;
  config.deflate_window_bits = static_cast<uint8_t>(8 + (flags & 7));
  config.inflate_window_bits = static_cast<uint8_t>(8 + ((flags >> 3) & 7));
  config.deflate_no_context_takeover = (flags & 0x40) != 0;
  config.inflate_no_context_takeover = (flags & 0x80) != 0;
  if (std::optional<DeflateAnswer> a = answerDeflateOffers(offers, config)) {
    std::string line = formatDeflateParams(a->response);
    std::vector<std::string_view> answer = {line};
    BackendDeflateAnswer check = checkBackendDeflateAnswer(answer, offers);
    if (check.error != nullptr || !check.accepted || check.offer != a->offer ||
        check.negotiated != a->negotiated || !canDeflate(a->negotiated.server_to_client)) {
      __builtin_trap();
    }
  }

  // The input as a backend's answer to sluice's offer.
  DeflateParams offer = backendDeflateOffer(config);
  BackendDeflateAnswer b = checkBackendDeflateAnswer(lines, std::span(&offer, 1));
  if (b.accepted && (b.error != nullptr || b.negotiated.server_to_client.window_bits < 8 ||
                     b.negotiated.server_to_client.window_bits > 15)) {
    __builtin_trap();
  }
}

void inflateBounded(const uint8_t* data, size_t size, size_t split, uint8_t flags) {
  Inflater::Options o;
  o.window_bits = static_cast<uint8_t>(8 + (flags & 7));
  o.no_context_takeover = (flags & 0x40) != 0;
  o.max_message_bytes = kBound;
  o.max_ratio = (flags & 0x20) != 0 ? 50 : 0;
  Inflater inf(o);
  std::string out;
  // Two messages: the same bytes twice, the second on the first's context.
  for (int round = 0; round < 2; ++round) {
    out.clear();
    Inflater::Status s = inf.feed(data, split, &out);
    if (s == Inflater::Status::kOk) {
      s = inf.feed(data + split, size - split, &out);
    }
    if (s == Inflater::Status::kOk) {
      s = inf.finishMessage(&out);
    }
    if (out.size() > kBound || inf.messageBytes() > kBound) {
      __builtin_trap();
    }
    if (s != Inflater::Status::kOk) {
      inf.reset();
    }
  }
}

void roundTrip(const uint8_t* data, size_t size, size_t split, uint8_t flags) {
  Deflater::Options d;
  d.window_bits = static_cast<uint8_t>(9 + (flags & 7) % 7);
  d.mem_level = static_cast<uint8_t>(1 + ((flags >> 3) & 7));
  d.no_context_takeover = (flags & 0x40) != 0;
  Deflater def(d);
  Inflater inf(Inflater::Options{d.window_bits, d.no_context_takeover, kBound, 0});
  std::string_view message(reinterpret_cast<const char*>(data), size);
  for (int round = 0; round < 2; ++round) {
    std::string compressed;
    if (!def.compress(message.substr(0, split), false, &compressed) ||
        !def.compress(message.substr(split), true, &compressed)) {
      __builtin_trap();
    }
    std::string plain;
    if (inf.feed(compressed, &plain) != Inflater::Status::kOk ||
        inf.finishMessage(&plain) != Inflater::Status::kOk || plain != message) {
      __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  uint8_t flags = data[0];
  size_t split = data[1];
  data += 2;
  size -= 2;
  split = size == 0 ? 0 : split % (size + 1);
  negotiate(std::string_view(reinterpret_cast<const char*>(data), size), flags);
  inflateBounded(data, size, split, flags);
  if (size <= kBound) {
    roundTrip(data, size, split, flags);
  }
  return 0;
}
