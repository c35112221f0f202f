// On-device serving: applications on the device use the active model through the agent, over a
// local ZeroMQ REP socket (ipc://STATE_DIR/serve.sock, mode 0660). Requests are JSON:
//   {"command": "generate", "prompt": "...", "max_tokens": 64, "temperature": 0, "seed": 0}
//     -> {"text": "...", "tokens": N, "model": SHA}
//   {"command": "score", "text": "..."}  -> {"tokens": N, "mean_nll": x, "perplexity": y, "model": SHA}
// The server runs on its own thread with its own copy of the model. When the active slot changes it
// loads the new package first and swaps only once it is loaded, so requests never fail across a switch.
#pragma once

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/signing.h"

namespace fedcal::edge_agent {

class LocalServer {
 public:
  // `active_package` returns the path of the active slot's package ("" if none); it is called from
  // the server thread and must be thread-safe. `key` must outlive the server.
  LocalServer(const std::string& endpoint, const SigningKey& key, int threads, std::function<std::string()> active_package);
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
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Loaded> loaded_;
  std::thread thread_;
};

// The client side (`fedcal-agent generate` / `score`): one request, one reply; throws Error on
// timeout or an error reply.
nlohmann::json local_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms = 60000);

}  // namespace fedcal::edge_agent
