#pragma once

// The service manager's readiness protocol (sd_notify(3)): under systemd's Type=notify, sluice
// says when it serves (READY=1), when a reload starts and ends (RELOADING=1, then READY=1), and
// when it stops (STOPPING=1), each with a STATUS= line that `systemctl status` shows.
//
// The protocol is a datagram of newline-separated KEY=VALUE lines to the Unix socket named by
// $NOTIFY_SOCKET ('@' = the abstract namespace). It is a stable, documented interface, so this
// speaks it directly rather than link libsystemd: a build needs nothing more, and a sluice not
// started by systemd (no $NOTIFY_SOCKET) sends nothing.

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::notify {

// Sends `message` ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET. false when there is no such
// socket, the address is unusable or the send failed (the service manager then times the
// start out, which says more than a log line could).
bool send(std::string_view message);

// The messages sluice sends. `status` becomes the STATUS= line (newlines are replaced).
std::string readyMessage(std::string_view status);
std::string reloadingMessage(std::string_view status, uint64_t monotonic_usec);
std::string stoppingMessage(std::string_view status);

// Shorthands: build the message and send it (the monotonic clock read now for RELOADING=1).
void ready(std::string_view status);
void reloading(std::string_view status);
void stopping(std::string_view status);

}  // namespace sluice::notify
