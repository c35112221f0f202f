// On-device serving: applications on the device use the active model through the agent, over a
// local access socket (transport/local_access.h): a ZeroMQ REP socket on a loopback TCP port with
// CURVE whose ZAP handler lets in only the client key of STATE_DIR/serve.json (mode 0600, fresh keys
// and port at every start). Requests are JSON:
//   {"command": "generate", "prompt": "...", "max_tokens": 64, "temperature": 0, "seed": 0}
//     -> {"text": "...", "tokens": N, "model": SHA}
//   {"command": "score", "text": "..."}  -> {"tokens": N, "mean_nll": x, "perplexity": y, "model": SHA}
// The server runs on its own thread with its own copy of the model. When the active slot changes it
// loads the new package first and swaps only once it is loaded, so requests never fail across a switch.
// At most kMaxConnections connections are held (more are cut at once), and a flood of local
// connections cannot stop the agent: a TCP accept that fails with EMFILE is retried (an ipc:// one
// made libzmq abort the agent at ~1,000 connections, counted as a crash of its model).
#pragma once

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/signing.h"
#include "transport/connection_guard.h"
#include "transport/local_access.h"

namespace fedcal::edge_agent {

inline constexpr const char* kServeZapDomain = "fedcal-serve";

class LocalServer {
 public:
  static constexpr size_t kMaxConnections = 64;

  // Listens on 127.0.0.1:`port` (0: a free one) and writes its access file `access_path`.
  // `active_package` returns the path of the active slot's package ("" if none); it is called from
  // the server thread and must be thread-safe. `key` must outlive the server.
  LocalServer(const std::string& access_path, int port, const SigningKey& key, int threads,
              std::function<std::string()> active_package);
  ~LocalServer();  // stops the thread
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

 private:
  struct Loaded;
  void serve();
  nlohmann::json answer(const nlohmann::json& request);

  const SigningKey& key_;
  int threads_;
  std::function<std::string()> active_package_;
  zmq::context_t context_;
  zmq::socket_t zap_;  // this context's ZAP handler: only access_.client gets in
  zmq::socket_t socket_;
  LocalAccess access_;
  std::unique_ptr<ConnectionGuard> guard_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Loaded> loaded_;
  std::thread thread_;
};

// The client side (`fedcal-agent generate` / `score`): one request to the server whose access file
// is `access_path`, one reply; throws Error on timeout or an error reply.
nlohmann::json local_request(const std::string& access_path, const nlohmann::json& request, int timeout_ms = 60000);

}  // namespace fedcal::edge_agent
