#pragma once

// [server] user and group: sluice binds its listeners (:443 included) as root, then drops to an
// unprivileged account before it serves a byte.

#include <sys/types.h>

#include <optional>
#include <string>

namespace sluice::privileges {

struct Account {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user;   // as configured
  std::string group;  // the group's name (or id) actually used
};

// Looks up `user` (a name or a numeric id) and `group` (likewise; empty = the user's primary
// group). nullopt with `error` set when either does not exist.
std::optional<Account> resolveAccount(const std::string& user, const std::string& group,
                                      std::string* error);

// setgroups (the user's supplementary groups), setgid, setuid; then checks that root cannot be
// regained. Needs root, unless the process already runs as that account (then it is a no-op).
bool drop(const Account& account, std::string* error);

// Whether the current user can read `path` (after a drop: the account's view).
bool readable(const std::string& path);

}  // namespace sluice::privileges
