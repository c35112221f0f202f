// fedcal-coordinator round start | status | report | abort
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/report_format.h"
#include "models/format/runtime_export.h"
#include "models/quant/recipe.h"

namespace fedcal::coordinator {
namespace {

struct RoundStartOptions {
  int64_t model_id = 0;
  int min_agents = 3, max_agents = 0, sequences = 64, seq_len = 128, neighbours = 0, threshold = 0, lane_bits = 0,
      relay_group_size = 0;
  std::string runtime = "engine", recipe = "recommended", group_scales = "sum";
  // The recipe's fields: sent only when given, so the coordinator fills the others from the recipe.
  std::optional<std::string> method, target_kl, fallback;
  bool per_channel = false, smooth = false;
  CLI::Option* per_channel_option = nullptr;  // given or not
  CLI::Option* smooth_option = nullptr;
  bool asymmetric = false, wait = false, device_classes = true;
  std::vector<std::string> keep_fp32, fine_grained, variants, exports;
  double dp_epsilon = 0, dp_delta = 1e-5;
  double max_kl_ratio = 4;
  int max_exponent = 12;
  int trim_agents = 0;
  int weight_bits = 8;
  std::string int4_grid = "non-uniform";
};

// --variant LABEL:per-channel|per-tensor[:keep=LAYER,LAYER] -> {"LABEL": {"per_channel", "keep_fp32"}}
nlohmann::json parse_variants(const std::vector<std::string>& variants) {
  nlohmann::json group_variants = nlohmann::json::object();
  for (const std::string& variant : variants) {
    const auto first = variant.find(':');
    if (first == std::string::npos) fail("--variant {}: expected LABEL:per-channel|per-tensor[:keep=...]", variant);
    const std::string label = variant.substr(0, first);
    std::string rest = variant.substr(first + 1), keep;
    if (const auto second = rest.find(':'); second != std::string::npos) {
      keep = rest.substr(second + 1);
      rest = rest.substr(0, second);
      if (keep.rfind("keep=", 0) != 0) fail("--variant {}: the third part must be keep=LAYER,...", variant);
      keep = keep.substr(5);
    }
    if (rest != "per-channel" && rest != "per-tensor") fail("--variant {}: per-channel or per-tensor", variant);
    nlohmann::json kept = nlohmann::json::array();
    std::stringstream layers(keep);
    for (std::string layer; std::getline(layers, layer, ',');) {
      if (!layer.empty()) kept.push_back(layer);
    }
    group_variants[label] = {{"per_channel", rest == "per-channel"}, {"keep_fp32", kept}};
  }
  return group_variants;
}

// Polls the round until it ends; with `live`, prints each change to stderr.
nlohmann::json wait_for_round(const CliContext& context, int64_t id, bool live) {
  std::string last;
  while (true) {
    const auto reply = context.call({{"command", "round.status"}, {"id", id}});
    const std::string text = format_round(reply);
    const std::string stage = reply.value("stage", std::string());
    if (live && text != last && !context.json) std::fprintf(stderr, "%s", (text + "\n").c_str());
    last = text;
    if (stage == "done" || stage == "failed") return reply;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

// The follow-up of smoothing round `id` (the coordinator starts it within moments).
int64_t wait_for_follow_up(const CliContext& context, int64_t id) {
  for (int attempt = 0; attempt < 600; ++attempt) {
    const auto latest = context.call({{"command", "round.status"}});
    if (latest.value("round", int64_t{0}) > id && latest["settings"].value("smoothing_round", int64_t{0}) == id)
      return latest["round"].get<int64_t>();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  fail("round {} smoothed the model, but no follow-up round started within a minute (see the coordinator's log)", id);
}

}  // namespace

void add_round_commands(CLI::App& app, const CliContext& context) {
  CLI::App* round = app.add_subcommand("round", "Calibration rounds")->require_subcommand(1);
  auto o = std::make_shared<RoundStartOptions>();
  CLI::App* start = round->add_subcommand("start", "Start a calibration round on an imported FP32 model");
  start->add_option("--model", o->model_id, "Model id (see `models list`)")->required()->check(CLI::PositiveNumber);
  start->add_option("--min-agents", o->min_agents, "Fewer joined agents fail the round; the sum of fewer is never unmasked")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  start->add_option("--max-agents", o->max_agents, "Stop taking participants at this many (0: all online)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  start->add_option("--sequences-per-agent", o->sequences, "Calibration sequences (lines of private text) per agent")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  start->add_option("--seq-len", o->seq_len, "Tokens per sequence at most")->capture_default_str()->check(CLI::Range(2, 65536));
  start
      ->add_option("--runtime", o->runtime,
                   "What the package will run on: engine (fedcal's, every package type), or a static-scale runtime: onnx, "
                   "openvino (QDQ graphs), tensorrt, xnnpack (boards without an INT8 dot product). Picks the recipe's defaults")
      ->capture_default_str()
      ->check(CLI::IsMember(target_runtime_names()));
  start
      ->add_option("--recipe", o->recipe,
                   "recommended: every recipe option not given (--method, --per-channel/--per-tensor, --smooth/--no-smooth, "
                   "--target-kl, --fallback) is the one measured best for --runtime (docs/QUANTIZATION.md); plain: static "
                   "per-tensor percentile:99.99 without smoothing or target (the defaults before recipes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"recommended", "plain"}));
  start->add_option("--method", o->method, "minmax | percentile:P | entropy | mse (default: the recipe's)");
  o->per_channel_option = start->add_flag("--per-channel,!--per-tensor", o->per_channel,
                                          "Per-output-channel INT8 weights, or one scale per tensor (default: the recipe's)");
  start->add_flag("--asymmetric", o->asymmetric, "Asymmetric activations (zero points)");
  start->add_option("--keep-fp32", o->keep_fp32, "Linear layers to keep in FP32 (e.g. classifier, layers.0.w2)");
  start->add_option("--fine-grained", o->fine_grained,
                    "Linear layers (or layers) in the fine-grained mode: weights in groups of 32, activations per block of 32 at "
                    "run time (e.g. the ones `fedcal-model quantize --target-kl T --fallback fine-grained` picks)")
      ->delimiter(',');
  start
      ->add_option("--weight-bits", o->weight_bits,
                   "4: every linear (but --keep-fp32 and --fine-grained ones) in 4-bit weights, rounded by the fleet's "
                   "importance sums, which the agents then record (docs/QUANTIZATION.md, \"4-bit weights\"); 5: the same "
                   "in 5 bits (5.5 bits per weight in the package; without --smooth); engine only")
      ->check(CLI::IsMember({8, 5, 4}))
      ->capture_default_str();
  start
      ->add_option("--int4-grid", o->int4_grid,
                   "The levels of 4- and 5-bit weights: non-uniform or uniform (llama.cpp Q4_0's and Q5_0's)")
      ->check(CLI::IsMember({"non-uniform", "uniform"}))
      ->capture_default_str();
  o->smooth_option = start->add_flag(
      "--smooth,!--no-smooth", o->smooth,
      "(default: the recipe's) Outlier migration (SmoothQuant) from the fleet's statistics, in two rounds: this one sums squared "
      "activations per channel, folds the smoothing into the model (strength per site by the error on the "
      "coordinator's reference_text) and stores the smoothed FP32 model; a follow-up round with these settings "
      "then calibrates and quantizes it (with --weight-bits 4: AWQ's input-channel scaling, by the 4-bit error)");
  start->add_option(
      "--target-kl", o->target_kl,
      "Mixed precision to a target, searched on the coordinator's reference_text: the fewest layers out of static "
      "INT8 (to --fallback) that bring the KL vs FP32 to this (nats per token), 'dynamic' (the calibration-free "
      "baseline's KL) or 'dynamic*F' (F times it, a margin: e.g. dynamic*0.8); none: no target (default: the recipe's)");
  start
      ->add_option("--fallback", o->fallback,
                   "Where --target-kl moves layers: fp32, fine-grained, or 5-bit (from --weight-bits 4: to 5 bits, then on to "
                   "fine-grained) (default: the recipe's)")
      ->check(CLI::IsMember({"fp32", "fine-grained", "5-bit"}));
  start->add_option("--dp-epsilon", o->dp_epsilon, "Distributed differential privacy: epsilon (0: off)")->check(CLI::Range(0.0, 100.0));
  start->add_option("--dp-delta", o->dp_delta, "Distributed differential privacy: delta, in (0, 1)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  start->add_option("--neighbours", o->neighbours, "Secure-aggregation graph degree (0: automatic)")->check(CLI::Range(0, 254));
  start
      ->add_option("--relay-group-size", o->relay_group_size,
                   "Secure aggregation per group at the relays, groups of at most N of one relay's agents (and at least "
                   "--min-agents); every participant must be behind a relay (0, default: between each agent and the coordinator)")
      ->check(CLI::Range(0, 100000));
  start
      ->add_option("--group-scales", o->group_scales,
                   "With --relay-group-size: the activation scales from the sum of the groups (sum, default) or each the "
                   "median of the groups' own (median: one group's falsified statistics cannot move a scale beyond the "
                   "honest groups'; needs 3 or more groups)")
      ->check(CLI::IsMember({"sum", "median"}));
  start->add_option("--threshold", o->threshold, "Shamir threshold (0: a majority of share holders)")->check(CLI::Range(0, 255));
  start->add_option("--lane-bits", o->lane_bits,
                    "Bits per masked value: 0 (default) = 32 when every sum fits below 2^31, else 64; or 32 / 64")
      ->check(CLI::IsMember({0, 32, 64}));
  start->add_option("--export", o->exports,
                    "Also write these for other runtimes, from the round's result: gguf, imatrix (llama.cpp's importance matrix "
                    "of the fleet, .dat; agents then also sum squared activations), imatrix-gguf (the same in GGUF), onnx, onnx-qdq, "
                    "tensorrt-cache")
      ->delimiter(',')
      ->check(CLI::IsMember(kRuntimeExportFormats));
  start
      ->add_option("--max-kl-ratio", o->max_kl_ratio,
                   "Before publishing, the coordinator measures each package's KL from FP32 on its reference text (or, without "
                   "one, text the FP32 model samples): above this many times the larger of the same recipe calibrated on that "
                   "text and the calibration-free baseline, the round fails instead (falsified statistics). 0: no check")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  start
      ->add_option("--max-exponent", o->max_exponent,
                   "Histogram range: activations of magnitude 2^N and above (and non-finite ones) are counted at 2^N")
      ->capture_default_str()
      ->check(CLI::Range(1, 40));
  start
      ->add_option("--trim-agents", o->trim_agents,
                   "Bound K participants' influence on the activation scales: the most values K of them could have sent are "
                   "taken off the top of each point's histogram first, so no scale rests on mass fewer than K + 1 sent. Costs "
                   "fidelity unless the fleet is large (the round fails if it would trim half). 0: off")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  start->add_flag("--wait", o->wait, "Wait for the round (with --smooth: and its follow-up) to finish, then print its report");
  start->add_flag("!--no-device-classes", o->device_classes,
                  "Build no static package for devices without an INT8 dot product (by default, where the fleet package has "
                  "fine-grained layers and such a device takes part, the round builds one, they check it and rollouts hand it "
                  "to them)");
  start->add_option(
      "--variant", o->variants,
      "A package for one device group: LABEL:per-channel|per-tensor[:keep=LAYER,LAYER] (agents with the label get it)");
  start->callback([&context, o] {
    nlohmann::json settings = {{"model_id", o->model_id},
                               {"min_agents", o->min_agents},
                               {"max_agents", o->max_agents},
                               {"sequences_per_agent", o->sequences},
                               {"seq_len", o->seq_len},
                               {"runtime", o->runtime},
                               {"recipe", o->recipe},
                               {"asymmetric", o->asymmetric},
                               {"keep_fp32", o->keep_fp32},
                               {"fine_grained", o->fine_grained},
                               {"weight_bits", o->weight_bits},
                               {"int4_grid", o->int4_grid},
                               {"dp_epsilon", o->dp_epsilon},
                               {"dp_delta", o->dp_delta},
                               {"neighbours", o->neighbours},
                               {"threshold", o->threshold},
                               {"lane_bits", o->lane_bits},
                               {"relay_group_size", o->relay_group_size},
                               {"group_scales", o->group_scales},
                               {"max_kl_ratio", o->max_kl_ratio},
                               {"max_exponent", o->max_exponent},
                               {"trim_agents", o->trim_agents},
                               {"group_variants", parse_variants(o->variants)},
                               {"exports", o->exports},
                               {"device_classes", o->device_classes}};
    if (o->method) settings["method"] = *o->method;
    if (o->per_channel_option->count() > 0) settings["per_channel"] = o->per_channel;
    if (o->smooth_option->count() > 0) settings["smooth"] = o->smooth;
    if (o->target_kl) settings["target_kl"] = *o->target_kl == "none" ? std::string() : *o->target_kl;
    if (o->fallback) settings["fallback"] = *o->fallback;
    const int64_t online = context.call({{"command", "status"}})["online_agents"].get<int64_t>();
    if (online < o->min_agents) {
      std::fprintf(stderr,
                   "warning: %lld agent(s) online, the round needs at least %d: it waits for more until its join deadline "
                   "(join_timeout_ms), then fails\n",
                   static_cast<long long>(online), o->min_agents);
    }
    auto reply = context.call({{"command", "round.start"}, {"settings", settings}});
    // What the recipe chose, and why (also in the reply's settings.recipe_notes).
    if (!context.json) {
      for (const auto& note : reply["settings"].value("recipe_notes", nlohmann::json::array()))
        std::fprintf(stderr, "[recipe] %s\n", note.get<std::string>().c_str());
    }
    const bool smoothing = reply["settings"].value("smooth", false);
    if (o->wait) reply = wait_for_round(context, reply["round"].get<int64_t>(), true);
    if (o->wait && smoothing && reply.value("stage", std::string()) == "done") {
      const int64_t next = wait_for_follow_up(context, reply["round"].get<int64_t>());
      if (!context.json) std::fprintf(stderr, "%s\n", format_round(reply).c_str());
      reply = wait_for_round(context, next, true);
    }
    context.print(reply, format_round(reply));
    if (o->wait && reply.value("stage", std::string()) == "failed")
      fail("round failed: {}", reply.value("failure", std::string()));
  });

  struct StatusOptions {
    int64_t id = 0;
    bool watch = false;
  };
  auto status_options = std::make_shared<StatusOptions>();
  CLI::App* status = round->add_subcommand("status", "A round's stage and progress (the latest round by default)");
  status->add_option("id", status_options->id, "Round id (default: the latest)")->check(CLI::PositiveNumber);
  status->add_flag("--watch", status_options->watch, "Follow the round live until it ends");
  status->callback([&context, status_options] {
    nlohmann::json request = {{"command", "round.status"}};
    if (status_options->id) request["id"] = status_options->id;
    auto reply = context.call(request);
    if (status_options->watch) reply = wait_for_round(context, reply["round"].get<int64_t>(), true);
    context.print(reply, format_round(reply));
  });
  auto report_id = std::make_shared<int64_t>(0);
  CLI::App* report = round->add_subcommand("report", "The accuracy/speed report of a round's result");
  report->add_option("id", *report_id, "Round id")->required()->check(CLI::PositiveNumber);
  report->callback([&context, report_id] {
    const auto reply = context.call({{"command", "round.report"}, {"id", *report_id}});
    context.print(reply, format_round(reply));
  });
  round->add_subcommand("abort", "Fail the running round")->callback([&context] {
    const auto reply = context.call({{"command", "round.abort"}});
    context.print(reply, format_round(reply));
  });
}

}  // namespace fedcal::coordinator
