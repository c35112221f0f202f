#include "transport/curve.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/file_util.h"

// Stable in libzmq 4.3's wire behaviour but declared only under ZMQ_BUILD_DRAFT_API in this header.
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

namespace fedcal {

CurveKeyPair CurveKeyPair::generate() {
  char public_key[41], secret_key[41];
  if (zmq_curve_keypair(public_key, secret_key) != 0) fail("zmq_curve_keypair: {}", zmq_strerror(zmq_errno()));
  return {public_key, secret_key};
}

void check_curve_key(const std::string& key, const std::string& what) {
  uint8_t decoded[32];
  if (key.size() != 40 || zmq_z85_decode(decoded, key.c_str()) == nullptr) {
    fail("{}: not a CURVE key (40 Z85 characters expected, got {:?})", what, key.substr(0, 60));
  }
}

CurveKeyPair CurveKeyPair::read(const std::string& path) {
  std::istringstream in(read_text_file(path));
  CurveKeyPair keys;
  std::string label, value;
  while (in >> label >> value) {
    if (label == "public")
      keys.public_key = value;
    else if (label == "secret")
      keys.secret_key = value;
    else
      fail("{}: unknown line '{}' (expected 'public <key>' and 'secret <key>')", path, label);
  }
  with_context([&] { return path; },
               [&] {
                 check_curve_key(keys.public_key, "public key");
                 check_curve_key(keys.secret_key, "secret key");
                 char derived[41];
                 if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0 || keys.public_key != derived) {
                   fail("the public key does not belong to the secret key");
                 }
               });
  return keys;
}

void CurveKeyPair::write(const std::string& path) const {
  write_file_atomically(path, "public " + public_key + "\nsecret " + secret_key + "\n", 0600);
}

CurveKeyPair CurveKeyPair::read_or_create(const std::string& path) {
  if (std::filesystem::exists(path)) return read(path);
  CurveKeyPair keys = generate();
  keys.write(path);
  return keys;
}

namespace {

void apply_limits(zmq::socket_t& socket, const SocketLimits& limits) {
  socket.set(zmq::sockopt::maxmsgsize, limits.max_message_bytes);
  socket.set(zmq::sockopt::heartbeat_ivl, limits.heartbeat_interval_ms);
  socket.set(zmq::sockopt::heartbeat_timeout, limits.heartbeat_timeout_ms);
  socket.set(zmq::sockopt::heartbeat_ttl, limits.heartbeat_ttl ? limits.heartbeat_timeout_ms : 0);
  if (limits.tcp_keepalive_idle_s > 0) {
    socket.set(zmq::sockopt::tcp_keepalive, 1);
    socket.set(zmq::sockopt::tcp_keepalive_idle, limits.tcp_keepalive_idle_s);
    socket.set(zmq::sockopt::tcp_keepalive_intvl, 5);
    socket.set(zmq::sockopt::tcp_keepalive_cnt, 3);
  }
  socket.set(zmq::sockopt::reconnect_ivl, 100);
  socket.set(zmq::sockopt::reconnect_ivl_max, limits.reconnect_interval_max_ms);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::handshake_ivl, limits.handshake_timeout_ms);
}

}  // namespace

void configure_curve_server(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& zap_domain,
                            const SocketLimits& limits) {
  apply_limits(socket, limits);
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  socket.set(zmq::sockopt::zap_domain, zap_domain);
  const int enforce = 1;
  if (zmq_setsockopt(socket.handle(), ZMQ_ZAP_ENFORCE_DOMAIN, &enforce, sizeof(enforce)) != 0) {
    fail("ZMQ_ZAP_ENFORCE_DOMAIN not supported by this libzmq: {}", zmq_strerror(zmq_errno()));
  }
  if (socket.get(zmq::sockopt::type) == ZMQ_ROUTER) socket.set(zmq::sockopt::router_mandatory, 1);
}

void configure_curve_client(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& server_public_key,
                            const SocketLimits& limits) {
  check_curve_key(server_public_key, "coordinator key");
  apply_limits(socket, limits);
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, keys.public_key);
  socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

}  // namespace fedcal
