// The edge agent daemon: one DEALER socket to the coordinator (CURVE), hello + heartbeats with its
// hardware profile, and its part in calibration rounds - download the model, calibrate on private
// text (worker thread), secure aggregation, download and check the result, report - and in rollouts.
// The daemon's loop, message dispatch and downloads are in agent.cpp; the round participant in
// round_participant.cpp; rollout activation and rollback in rollout_activation.cpp.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "edge_agent/agent_config.h"
#include "edge_agent/download.h"
#include "edge_agent/enrollment.h"
#include "edge_agent/http_fetch.h"
#include "edge_agent/interval.h"
#include "edge_agent/local_check.h"
#include "edge_agent/local_server.h"
#include "edge_agent/model_slots.h"
#include "protocol/wire.h"
#include "secagg/secure_aggregation.h"
#include "transport/curve.h"

namespace fedcal::edge_agent {

// A chunk request unanswered this long is sent again.
inline constexpr int64_t kChunkRetryMs = 3000;
// A round message the coordinator has not acknowledged this long is sent again (roundAck).
inline constexpr int64_t kRoundResendMs = 3000;

// Exit codes of `fedcal-agent run`.
inline constexpr int kExitRefused = 3;  // not enrolled or revoked

class Agent {
 public:
  // Reads keys and enrollment from the state folder; throws Error if the agent is not enrolled.
  explicit Agent(AgentConfig config);
  ~Agent();
  // Runs until `stop`; returns an exit code (0, or kExitRefused when the coordinator refuses us).
  int run(const std::atomic<bool>& stop);
  // One message from the coordinator: decoded and handled; what fails is logged and reported back.
  // Public for the fuzz target, which calls it directly.
  void receive(std::span<const std::byte> payload);

 private:
  struct RoundParams {
    uint64_t id = 0;
    std::string model_sha256;
    uint64_t model_bytes = 0;
    uint32_t sequences = 0;
    uint32_t seq_len = 0;
    int mantissa_bits = 5, min_exponent = -20, max_exponent = 12;
    double dp_noise_stddev = 0;
    uint32_t min_survivors = 3;
    bool importance = false;    // also the importance sums (llama.cpp's imatrix)
    bool block_checks = false;  // also check the fine-grained mode (activations per block of 32)
  };
  enum class Phase { kDownloading, kCalibrating, kJoined, kShared, kMasked, kRevealed, kFetchingResults, kChecking, kReported };
  struct RoundWork {
    RoundParams params;
    Phase phase = Phase::kDownloading;
    std::unique_ptr<Download> model;
    std::future<std::vector<uint64_t>> statistics;
    std::vector<uint64_t> input;
    std::unique_ptr<SecAggClient> secagg;
    std::vector<std::pair<std::string, std::unique_ptr<Download>>> results;  // label, download
    std::future<std::vector<LocalCheck>> checks;
    std::string check_error;
    // The last round message this agent sent (join, shareKeys, maskedInput, unmaskShares or
    // localReport), kept until the coordinator acknowledges it: sent again every kRoundResendMs
    // (a message lost with a dropped connection or during a coordinator pause), and at once when
    // the coordinator asks again for what it answers. Every one of them is idempotent there.
    std::unique_ptr<OutgoingMessage> answer;
    std::string answer_kind;  // its body name, as a roundAck names it
    bool answer_acked = false;
    Interval answer_retry{kRoundResendMs};
  };

  void send(OutgoingMessage& message);
  // Sends the round's next answer (`kind`: its body name) and keeps it until acknowledged.
  void send_answer(std::unique_ptr<OutgoingMessage> message, const char* kind);
  // The kept answer again: the coordinator asked again for what it answers (`why`, for the log),
  // or it is unacknowledged and due.
  void resend_answer(const std::string& why);
  void resend_unacknowledged(int64_t now_ms);
  void send_hello();
  void inject_fault(const char* point);
  void retire_round();  // drops the current round; its running workers finish in the background
  // Tells the coordinator this agent leaves round `round_id` (or does not hold it), so the round stops
  // waiting for it, and drops the round if it is ours.
  void leave_round(uint64_t round_id, wire::RoundLeave::Cause cause, const std::string& reason);
  // Whether the agent holds round `round_id` (a `message` for it arrived); if not, it leaves it.
  bool holds_round(uint64_t round_id, const char* message);
  void handle(wire::Envelope::Reader envelope);
  void on_announce(wire::RoundConfig::Reader config);
  void on_round_keys(wire::RoundKeys::Reader keys);
  void on_shares(wire::SharesForYou::Reader shares);
  void on_unmask(wire::UnmaskRequest::Reader request);
  void on_open_share(wire::ShareOpenRequest::Reader request);
  void on_result(wire::RoundResult::Reader result);
  void on_chunk(wire::Chunk::Reader chunk);
  // Bytes of the package `sha` from `offset` (a chunk from the coordinator, or a range over HTTP) into
  // whichever download wants them.
  void accept_chunk(const std::string& sha, uint64_t offset, std::span<const uint8_t> data, uint64_t total);
  // Over HTTP (package_url) where there is one and it has not failed for that package: one range in
  // flight, on a worker thread; poll_package_fetch takes its result on the event loop.
  bool fetch_over_http(Download& download);
  void poll_package_fetch();
  void on_activate(wire::ModelActivate::Reader activate);
  void on_rollback(wire::ModelRollback::Reader rollback);
  void advance_activation();
  void send_activation_report(uint64_t rollout, bool activated, bool rolled_back, const std::string& error,
                              const LocalCheck* check, const LocalCheck* against_fp32 = nullptr);
  // Room on disk (and within disk_budget_mb) for what `download` still needs; throws Error ("disk
  // full: ...") before a byte is fetched if there is none.
  void make_room_for(const Download& download);
  // Asks for the next chunk of `download` unless it is complete or `retry` is not due yet.
  void request_chunk(Download& download, Interval& retry);
  void advance();  // starts work whose inputs are ready, sends what finished
  void log(const std::string& line) const;
  // A download of `sha256`; a damaged copy found in its place is reported to the coordinator (an
  // error with code `damaged`: the agent's problem in `agents list --failing`) and fetched again.
  std::unique_ptr<Download> open_download(const std::string& sha256, uint64_t bytes);
  void report_damaged(const std::string& what);
  // The active package, checked by its hash at start: a damaged one is downloaded again (repair_).
  void check_active_package();
  void advance_repair();

  AgentConfig config_;
  Enrollment enrollment_;
  SigningKey coordinator_signing_key_;
  CurveKeyPair keys_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  // socket_'s completed handshakes (a new connection): a hello not yet answered goes again at once, as
  // the answer to one sent before may have been lost with the old connection.
  zmq::socket_t monitor_;
  uint64_t next_sequence_;
  Interval heartbeat_{2000};    // the period the coordinator's welcome sets
  // Until welcomed: hello again, backing off from the heartbeat period (at least 1 s) up to
  // reconnect_interval_max_ms, jittered (Backoff).
  Backoff hello_retry_{2000, config_.reconnect_interval_max_ms, std::random_device{}()};
  int64_t last_heard_ms_ = 0;   // monotonic
  // coordinator, then standby_coordinators: the one connected, since when (monotonic).
  std::vector<std::string> endpoints_;
  size_t endpoint_ = 0;
  int64_t endpoint_since_ms_ = 0;
  bool welcomed_ = false;
  bool coordinator_acks_ = false;  // its welcome says it sends roundAck (older coordinators do not)
  int exit_code_ = -1;
  ModelSlots slots_;
  // A rollout's activation: download, verify + self-test (worker), switch slots, report.
  // What an activation's worker measured: against the previous model (or a self-test without one),
  // and against the FP32 package the new one was quantized from, when the coordinator named it.
  struct ActivationCheck {
    LocalCheck check;
    std::optional<LocalCheck> against_fp32;
  };
  struct Activation {
    uint64_t rollout = 0;
    std::unique_ptr<Download> download;
    std::unique_ptr<Download> reference;  // the FP32 original (modelActivate.referenceSha256), or null
    std::future<ActivationCheck> check;
    Interval chunk_retry{kChunkRetryMs};
  };
  std::unique_ptr<Activation> activation_;
  std::mutex active_path_mutex_;
  std::string active_path_;  // what the local server serves; updated after every slot switch
  std::unique_ptr<LocalServer> local_server_;
  std::unique_ptr<RoundWork> round_;
  std::vector<std::unique_ptr<RoundWork>> retired_;
  Interval chunk_retry_{kChunkRetryMs};  // the round's downloads
  std::string package_url_;              // packages over HTTP: the config's, else the welcome's ("" : none)
  struct PackageFetch {
    std::string sha256, url;
    std::future<FetchedRange> range;
  };
  std::optional<PackageFetch> package_fetch_;  // the range in flight
  std::set<std::string> http_failed_;          // packages fetched from the coordinator after HTTP failed
  std::unique_ptr<Download> repair_;     // the active package again, when its copy here was damaged
  Interval repair_retry_{kChunkRetryMs};
  std::vector<std::string> damage_to_report_;  // found before the coordinator welcomed us
  bool busy_ = false;
};

}  // namespace fedcal::edge_agent
