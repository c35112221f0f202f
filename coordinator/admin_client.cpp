#include "coordinator/admin_client.h"

#include "transport/json_request.h"

namespace fedcal::coordinator {

nlohmann::json admin_request(const std::string& state_dir, const nlohmann::json& request, int timeout_ms) {
  const AdminAccess access = AdminAccess::read(state_dir);
  return json_request(access.endpoint, request, timeout_ms, "fedcal-coordinator serve",
                      [&](zmq::socket_t& socket) { access.configure_client(socket); });
}

}  // namespace fedcal::coordinator
