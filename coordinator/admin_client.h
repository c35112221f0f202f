// The CLI's side of the coordinator's local admin socket (ipc://STATE_DIR/admin.sock, mode 0600: only
// the coordinator's user can send commands). Requests and replies are JSON objects.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace fedcal::coordinator {

// Sends `request` and returns the reply's payload; throws Error with the daemon's message when it
// answers {"ok": false}, or when no daemon answers within `timeout_ms`.
nlohmann::json admin_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms = 120000);

}  // namespace fedcal::coordinator
