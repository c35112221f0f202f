// The agent's enrollment: its CURVE key pair (state_dir/curve.key) registered with the coordinator by
// a one-time token, and what it learned doing so (state_dir/enrollment.json).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/signing.h"

namespace fedcal::edge_agent {

struct Enrollment {
  int64_t agent_id = 0;
  std::string coordinator;
  std::string coordinator_key;     // CURVE, Z85
  std::string signing_public_key;  // Ed25519, hex: packages must carry its signature

  SigningKey signing_key() const;
  static std::optional<Enrollment> read(const std::string& path);
  void write(const std::string& path) const;
};

// Connects with the agent's CURVE key (created if missing), presents `token`, and records the
// enrollment. Throws Error with the coordinator's reason, or after `timeout_ms` without an answer.
Enrollment enroll(const std::string& state_dir, const std::string& coordinator, const std::string& coordinator_key,
                  const std::string& token, const std::string& name, int timeout_ms = 15000);

}  // namespace fedcal::edge_agent
