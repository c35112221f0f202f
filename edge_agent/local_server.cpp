#include "edge_agent/local_server.h"

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "models/engine/evaluation.h"
#include "models/engine/generation.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "transport/curve.h"
#include "transport/json_request.h"

namespace fedcal::edge_agent {

struct LocalServer::Loaded {
  std::string path;
  LoadedModel model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<XnnRuntime> runtime;
  std::unique_ptr<Transformer> transformer;
};

LocalServer::LocalServer(const std::string& access_path, int port, const SigningKey& key, int threads,
                         std::function<std::string()> active_package)
    : key_(key),
      threads_(threads),
      active_package_(std::move(active_package)),
      context_(1),
      zap_(context_, zmq::socket_type::rep),
      socket_(context_, zmq::socket_type::rep) {
  zap_.set(zmq::sockopt::linger, 0);
  zap_.bind("inproc://zeromq.zap.01");  // before the socket it guards, so no handshake runs without it
  const CurveKeyPair server = CurveKeyPair::generate();
  SocketLimits limits;
  limits.max_message_bytes = int64_t{16} << 20;
  configure_curve_server(socket_, server, kServeZapDomain, limits);
  socket_.set(zmq::sockopt::linger, 0);
  guard_ = std::make_unique<ConnectionGuard>(context_, socket_, "serve", ConnectionGuard::Limits{kMaxConnections, kMaxConnections});
  socket_.bind(fmt::format("tcp://127.0.0.1:{}", port));
  access_.endpoint = socket_.get(zmq::sockopt::last_endpoint);
  access_.server_public_key = server.public_key;
  access_.client = CurveKeyPair::generate();
  access_.write(access_path);
  thread_ = std::thread([this] { serve(); });
}

LocalServer::~LocalServer() {
  stop_ = true;
  thread_.join();
}

void LocalServer::serve() {
  while (!stop_) {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                               {zap_.handle(), 0, ZMQ_POLLIN, 0},
                               {guard_->events().handle(), 0, ZMQ_POLLIN, 0}};
    if (!poll_interruptible(items, 3, std::chrono::milliseconds(100))) continue;
    if (items[2].revents & ZMQ_POLLIN) guard_->handle_events();
    if (items[1].revents & ZMQ_POLLIN) answer_local_zap(zap_, kServeZapDomain, access_);
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t request;
    if (!socket_.recv(request, zmq::recv_flags::dontwait)) continue;
    nlohmann::json reply;
    try {
      const nlohmann::json parsed = nlohmann::json::parse(request.to_string_view());
      reply = answer(parsed);
      reply["ok"] = true;
    } catch (const std::exception& error) {
      reply = {{"ok", false}, {"error", error.what()}};
    }
    const std::string text = reply.dump();
    socket_.send(zmq::buffer(text), zmq::send_flags::none);
  }
}

nlohmann::json LocalServer::answer(const nlohmann::json& request) {
  const std::string path = active_package_();
  if (path.empty()) fail("no active model yet (the coordinator has not rolled one out to this device)");
  if (!loaded_ || loaded_->path != path) {
    // Load the new package completely before dropping the old one.
    auto next = std::make_unique<Loaded>();
    next->path = path;
    next->model = load_model(path, &key_);
    next->tokenizer = load_tokenizer(next->model, std::nullopt);
    next->runtime = std::make_unique<XnnRuntime>(resolve_threads(threads_, next->model.model.config.parameter_count()));
    // The weights move into the Transformer as it packs them: one copy in memory, not two.
    next->transformer =
        Transformer::consume(std::move(next->model.model), *next->runtime, TransformerOptions{}, std::move(next->model.int8));
    loaded_ = std::move(next);
  }
  Loaded& loaded = *loaded_;
  const std::string command = request.at("command").get<std::string>();
  const std::string sha = std::filesystem::path(loaded.path).stem().string();  // slots keep packages as <sha256>.fcpkg
  if (command == "generate") {
    const std::vector<int> prompt = loaded.tokenizer->encode(request.value("prompt", std::string()), true);
    GenerationOptions options;
    options.max_tokens = request.value("max_tokens", 64);
    if (options.max_tokens < 1 || options.max_tokens > 1 << 16) fail("max_tokens must be 1..65536");
    options.sampler = {request.value("temperature", 0.0f), request.value("top_p", 1.0f), request.value("seed", uint64_t{0})};
    std::string text;
    const Generation generation = generate(*loaded.transformer, *loaded.tokenizer, prompt, options,
                                           [&](int previous, int token) { text += loaded.tokenizer->decode(previous, token); });
    return {{"text", text}, {"tokens", generation.tokens.size()}, {"stop", stop_reason_name(generation.stop)}, {"model", sha}};
  }
  if (command == "score") {
    const std::string text = request.at("text").get<std::string>();
    const std::vector<int> tokens = loaded.tokenizer->encode(text, true);
    if (tokens.size() < 2) fail("the text has fewer than 2 tokens");
    const EvalResult result = evaluate(*loaded.transformer, nullptr, tokens, text.size());
    return {{"tokens", result.tokens}, {"mean_nll", result.mean_nll}, {"perplexity", result.perplexity}, {"model", sha}};
  }
  fail("unknown command '{}' (generate, score)", command);
}

nlohmann::json local_request(const std::string& access_path, const nlohmann::json& request, int timeout_ms) {
  const LocalAccess access = LocalAccess::read(access_path, "`fedcal-agent run`");
  return json_request(access.endpoint, request, timeout_ms, "fedcal-agent run",
                      [&](zmq::socket_t& socket) { access.configure_client(socket); });
}

}  // namespace fedcal::edge_agent
