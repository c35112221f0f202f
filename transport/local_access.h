// Access to a daemon's local socket (the coordinator's admin socket, the agent's serving socket): a
// REP socket on a loopback TCP port with CURVE, whose ZAP handler lets in one client key only. The
// endpoint and both key pairs' public halves and the client's secret are in a JSON file of the
// daemon's state folder (mode 0600, written at every start with fresh keys and port), so only the
// daemon's user can connect. (Not an ipc:// socket: libzmq 4.3.4 aborts when accepting an ipc
// connection fails with EMFILE; a TCP accept that fails is retried.)
#pragma once

#include <zmq.hpp>

#include <string>

#include "transport/curve.h"

namespace fedcal {

struct LocalAccess {
  std::string endpoint;           // tcp://127.0.0.1:PORT
  std::string server_public_key;  // the socket's CURVE key
  CurveKeyPair client;            // the one key pair its ZAP handler accepts

  // Throws Error naming `path`; `writer` names what writes it, for the message when it is missing.
  static LocalAccess read(const std::string& path, const std::string& writer);
  void write(const std::string& path) const;  // atomically, mode 0600
  // CURVE client settings for a socket that will connect to `endpoint`.
  void configure_client(zmq::socket_t& socket) const;
};

// Answers one ZAP request (RFC 27) waiting on `zap`: CURVE in `domain` with `access.client`'s key is
// let in, anything else refused. Returns whether it was let in.
bool answer_local_zap(zmq::socket_t& zap, const std::string& domain, const LocalAccess& access);

}  // namespace fedcal
