#include "transport/local_access.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal {

LocalAccess LocalAccess::read(const std::string& path, const std::string& writer) {
  std::ifstream in(path);
  if (!in) fail("cannot read {}: {} (it is written when {} starts, readable by its user only)", path, std::strerror(errno), writer);
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
  if (!json.is_object()) fail("{}: not a JSON object", path);
  LocalAccess access;
  try {
    access.endpoint = json.at("endpoint").get<std::string>();
    access.server_public_key = json.at("server_public_key").get<std::string>();
    access.client.public_key = json.at("client_public_key").get<std::string>();
    access.client.secret_key = json.at("client_secret_key").get<std::string>();
  } catch (const nlohmann::json::exception& error) {
    fail("{}: {}", path, error.what());
  }
  check_curve_key(access.server_public_key, path + ": server_public_key");
  check_curve_key(access.client.public_key, path + ": client_public_key");
  check_curve_key(access.client.secret_key, path + ": client_secret_key");
  return access;
}

void LocalAccess::write(const std::string& path) const {
  const nlohmann::json json = {{"endpoint", endpoint},
                               {"server_public_key", server_public_key},
                               {"client_public_key", client.public_key},
                               {"client_secret_key", client.secret_key}};
  write_file_atomically(path, json.dump(2) + "\n", 0600);
}

void LocalAccess::configure_client(zmq::socket_t& socket) const {
  SocketLimits limits;
  limits.max_message_bytes = int64_t{256} << 20;  // replies (an audit listing, a report) may be large
  configure_curve_client(socket, client, server_public_key, limits);
}

bool answer_local_zap(zmq::socket_t& zap, const std::string& domain, const LocalAccess& access) {
  std::vector<zmq::message_t> request = receive_multipart(zap);
  if (request.size() < 6) return false;
  bool allowed = false;
  if (request.size() == 7 && request[2].to_string() == domain && request[5].to_string() == "CURVE" && request[6].size() == 32) {
    char key[41];
    zmq_z85_encode(key, static_cast<const uint8_t*>(request[6].data()), 32);
    allowed = access.client.public_key == key;
  }
  const std::string reply[] = {"1.0", request[1].to_string(), allowed ? "200" : "400", allowed ? "OK" : "refused",
                               allowed ? "local" : "", ""};
  for (size_t i = 0; i < 6; ++i) zap.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  return allowed;
}

}  // namespace fedcal
