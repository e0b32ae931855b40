// sluice: a reverse proxy and WebSocket-aware edge gateway.

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "proxy/log.h"
#include "proxy/server.h"

namespace {

void usage(FILE* out) {
  fprintf(
      out,
      "usage: sluice --config FILE             run with FILE\n"
      "       sluice --upgrade --config FILE   take the listening sockets over from the sluice\n"
      "                                        running FILE (a binary upgrade), which then drains\n"
      "       sluice --check FILE              check FILE as a start would (ports included)\n"
      "                                        and exit 0 or 1\n"
      "       sluice --version                 print the version\n"
      "options: --log-level debug|info|warn|error (overrides [server] log_level)\n"
      "signals: TERM/INT drain and exit (a second one exits at once), HUP reload,\n"
      "         USR1 reopen the log files\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config;
  std::string check;
  sluice::Server::Options options;
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
    } else if (arg == "--upgrade") {
      options.upgrade = true;
    } else if (arg == "--log-level") {
      std::string level = value("--log-level");
      sluice::log::Level parsed;
      if (!sluice::log::parseLevel(level, &parsed)) {
        fprintf(stderr, "sluice: unknown log level '%s'\n", level.c_str());
        return 2;
      }
      sluice::log::setLevel(parsed);
      options.log_level_set = true;
    } else {
      fprintf(stderr, "sluice: unknown argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (config.empty() == check.empty() || (options.upgrade && config.empty())) {
    usage(stderr);
    return 2;
  }
  if (!check.empty()) {
    return sluice::checkConfig(check);
  }

  sluice::conf::Diagnostics diagnostics;
  sluice::SnapshotPtr snapshot = sluice::loadSnapshot(config, 1, &diagnostics);
  size_t errors = 0;
  for (const sluice::conf::Diagnostic& d : diagnostics) {
    fprintf(stderr, "%s\n", d.format().c_str());
    errors += d.error() ? 1 : 0;
  }
  if (!snapshot) {
    fprintf(stderr, "%s: %zu error%s\n", config.c_str(), errors, errors == 1 ? "" : "s");
    return 1;
  }
  sluice::Server server(snapshot, options);
  return server.run();
}
