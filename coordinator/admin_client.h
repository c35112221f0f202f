// How the CLI reaches the running daemon: its admin socket is a local access socket
// (transport/local_access.h: loopback TCP, CURVE, one client key) described by STATE_DIR/admin.json,
// so only the coordinator's user can send commands. Requests and replies are JSON objects.
#pragma once

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <string>

#include "transport/local_access.h"

namespace fedcal::coordinator {

inline constexpr const char* kAdminZapDomain = "fedcal-admin";

// The admin socket's access file (transport/local_access.h), STATE_DIR/admin.json.
struct AdminAccess : LocalAccess {
  static std::string path(const std::string& state_dir) { return state_dir + "/admin.json"; }
  // Throws Error naming the file (missing: the daemon never started with this state folder;
  // unreadable: not the coordinator's user).
  static AdminAccess read(const std::string& state_dir) {
    return {LocalAccess::read(path(state_dir), "`fedcal-coordinator serve`")};
  }
  void write(const std::string& state_dir) const { LocalAccess::write(path(state_dir)); }
};

// Sends `request` to the daemon of `state_dir` and returns the reply's payload; throws Error with the
// daemon's message when it answers {"ok": false}, or when no daemon answers within `timeout_ms`.
nlohmann::json admin_request(const std::string& state_dir, const nlohmann::json& request, int timeout_ms = 120000);

}  // namespace fedcal::coordinator
