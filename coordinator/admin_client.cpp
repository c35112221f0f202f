#include "coordinator/admin_client.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/file_util.h"
#include "transport/json_request.h"

namespace fedcal::coordinator {

AdminAccess AdminAccess::read(const std::string& state_dir) {
  const std::string file = path(state_dir);
  std::ifstream in(file);
  if (!in) {
    fail("cannot read {}: {} (it is written when `fedcal-coordinator serve` starts, readable by its user only)", file,
         std::strerror(errno));
  }
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
  if (!json.is_object()) fail("{}: not a JSON object", file);
  AdminAccess access;
  try {
    access.endpoint = json.at("endpoint").get<std::string>();
    access.server_public_key = json.at("server_public_key").get<std::string>();
    access.client.public_key = json.at("client_public_key").get<std::string>();
    access.client.secret_key = json.at("client_secret_key").get<std::string>();
  } catch (const nlohmann::json::exception& error) {
    fail("{}: {}", file, error.what());
  }
  check_curve_key(access.server_public_key, file + ": server_public_key");
  check_curve_key(access.client.public_key, file + ": client_public_key");
  check_curve_key(access.client.secret_key, file + ": client_secret_key");
  return access;
}

void AdminAccess::write(const std::string& state_dir) const {
  const nlohmann::json json = {{"endpoint", endpoint},
                               {"server_public_key", server_public_key},
                               {"client_public_key", client.public_key},
                               {"client_secret_key", client.secret_key}};
  write_file_atomically(path(state_dir), json.dump(2) + "\n", 0600);
}

void AdminAccess::configure_client(zmq::socket_t& socket) const {
  SocketLimits limits;
  limits.max_message_bytes = int64_t{256} << 20;  // replies (an audit listing, a report) may be large
  configure_curve_client(socket, client, server_public_key, limits);
}

nlohmann::json admin_request(const std::string& state_dir, const nlohmann::json& request, int timeout_ms) {
  const AdminAccess access = AdminAccess::read(state_dir);
  return json_request(access.endpoint, request, timeout_ms, "fedcal-coordinator serve",
                      [&](zmq::socket_t& socket) { access.configure_client(socket); });
}

}  // namespace fedcal::coordinator
