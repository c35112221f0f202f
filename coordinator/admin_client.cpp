#include "coordinator/admin_client.h"

#include "transport/json_request.h"

namespace fedcal::coordinator {

nlohmann::json admin_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms) {
  return json_request(endpoint, request, timeout_ms, "fedcal-coordinator serve");
}

}  // namespace fedcal::coordinator
