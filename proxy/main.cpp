// sluice: a reverse proxy and WebSocket-aware edge gateway.

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "proxy/log.h"
#include "proxy/server.h"

namespace {

void usage(FILE* out) {
  fprintf(out,
          "usage: sluice --config FILE     run with FILE\n"
          "       sluice --check FILE      validate FILE (as a reload would) and exit 0 or 1\n"
          "       sluice --version         print the version\n"
          "options: --log-level debug|info|warn|error\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config;
  std::string check;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "sluice: %s needs a value\n", name);
        exit(2);
      }
      return argv[++i];
    };
    if (arg == "--version" || arg == "-v") {
      printf("sluice %s\n", SLUICE_VERSION);
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else if (arg == "--config" || arg == "-c") {
      config = value("--config");
    } else if (arg == "--check" || arg == "-t") {
      check = value("--check");
    } else if (arg == "--log-level") {
      std::string level = value("--log-level");
      using sluice::log::Level;
      if (level == "debug") {
        sluice::log::setLevel(Level::kDebug);
      } else if (level == "info") {
        sluice::log::setLevel(Level::kInfo);
      } else if (level == "warn") {
        sluice::log::setLevel(Level::kWarn);
      } else if (level == "error") {
        sluice::log::setLevel(Level::kError);
      } else {
        fprintf(stderr, "sluice: unknown log level '%s'\n", level.c_str());
        return 2;
      }
    } else {
      fprintf(stderr, "sluice: unknown argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (config.empty() == check.empty()) {
    usage(stderr);
    return 2;
  }

  const std::string& path = check.empty() ? config : check;
  sluice::conf::Diagnostics diagnostics;
  sluice::SnapshotPtr snapshot = sluice::loadSnapshot(path, 1, &diagnostics);
  size_t errors = 0;
  for (const sluice::conf::Diagnostic& d : diagnostics) {
    fprintf(stderr, "%s\n", d.format().c_str());
    errors += d.error() ? 1 : 0;
  }
  if (!snapshot) {
    fprintf(stderr, "%s: %zu error%s\n", path.c_str(), errors, errors == 1 ? "" : "s");
    return 1;
  }
  if (!check.empty()) {
    printf("%s: ok\n", path.c_str());
    return 0;
  }
  sluice::Server server(snapshot);
  return server.run();
}
