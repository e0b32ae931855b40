#pragma once

// The status page the admin listener serves at `/`: its files (proxy/admin_page/, compiled into
// the binary as byte arrays by proxy/admin_page/embed.cmake) and the small pieces of the admin
// API that exist for it: the live feed's token offer and the JSON of the status additions.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/admin.h"
#include "proxy/http/message.h"
#include "proxy/log.h"
#include "proxy/metrics.h"

namespace sluice {

struct AdminAsset {
  const char* path;  // "/", "/app.js", ...
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

// Defined in the generated admin_page_files.cpp.
extern const AdminAsset kAdminAssets[];
extern const size_t kAdminAssetCount;

// The page file served at `path`, or null.
const AdminAsset* findAdminAsset(std::string_view path);
// A page file's response: its type, and headers that keep the page to its own origin (no
// framing, no script or connection elsewhere).
AdminResponse adminAssetResponse(const AdminAsset& asset);

// The subprotocol the page asks for on /api/live.
inline constexpr std::string_view kLiveProtocol = "sluice-live";
// A browser cannot set Authorization on a WebSocket, so the page offers its token as the
// subprotocol "bearer.TOKEN" next to "sluice-live". The token offered (empty when none), and
// whether "sluice-live" was asked for.
std::string_view liveOfferedToken(const http::RequestHead& request);
bool liveProtocolOffered(const http::RequestHead& request);

// Status JSON members for the page (each a complete `"name":value`): a route's totals, the
// last warnings and errors.
std::string routeTotalsJson(const metrics::Registry::RouteTotals& totals);
std::string problemsJson(const std::vector<log::Problem>& problems);

}  // namespace sluice
