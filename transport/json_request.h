// One JSON request over a local ZeroMQ REQ socket and its JSON reply, as the CLIs talk to their
// daemons (the coordinator's admin socket, the agent's serving socket). A reply {"ok": false,
// "error": ...} becomes Error with that message; so does silence past `timeout_ms`, naming `daemon`,
// and - at once, without waiting - an endpoint where nothing listens (the daemon is not running).
#pragma once

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <functional>
#include <string>

namespace fedcal {

// `configure`, when given, sets up the socket before it connects (e.g. CURVE).
nlohmann::json json_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms, const std::string& daemon,
                            const std::function<void(zmq::socket_t&)>& configure = {});

}  // namespace fedcal
