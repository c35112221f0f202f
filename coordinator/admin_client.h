// How the CLI reaches the running daemon: its admin socket is a REP socket on a loopback TCP port
// with CURVE, and the only client key ZAP lets in is in STATE_DIR/admin.json (mode 0600, written
// at every start with a fresh key pair and port), so only the coordinator's user can send commands.
// (Not an ipc:// socket: libzmq 4.3.4 aborts when accepting an ipc connection fails with EMFILE,
// and a flood of agent connections must never stop the daemon; a TCP accept fails gracefully.)
// Requests and replies are JSON objects.
#pragma once

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <string>

#include "transport/curve.h"

namespace fedcal::coordinator {

inline constexpr const char* kAdminZapDomain = "fedcal-admin";

struct AdminAccess {
  std::string endpoint;           // tcp://127.0.0.1:PORT
  std::string server_public_key;  // the admin socket's CURVE key
  CurveKeyPair client;            // the one key pair the admin socket accepts

  static std::string path(const std::string& state_dir) { return state_dir + "/admin.json"; }
  // Throws Error naming the file (missing: the daemon never started with this state folder;
  // unreadable: not the coordinator's user).
  static AdminAccess read(const std::string& state_dir);
  void write(const std::string& state_dir) const;
  // CURVE client settings for a socket that will connect to `endpoint`.
  void configure_client(zmq::socket_t& socket) const;
};

// Sends `request` to the daemon of `state_dir` and returns the reply's payload; throws Error with the
// daemon's message when it answers {"ok": false}, or when no daemon answers within `timeout_ms`.
nlohmann::json admin_request(const std::string& state_dir, const nlohmann::json& request, int timeout_ms = 120000);

}  // namespace fedcal::coordinator
