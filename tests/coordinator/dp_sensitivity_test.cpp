// The DP noise of a round is sized by the L2 sensitivity of one sequence, which depends on the width
// of every quantization point. These tests take the widths from what the forward pass really observes,
// not from quantization_points, so adding or widening a point without updating its width (which
// would under-noise the aggregate) fails here.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "coordinator/round.h"
#include "models/engine/transformer.h"
#include "models/format/synth.h"
#include "models/quant/quantization_points.h"

namespace fedcal::coordinator {
namespace {

// Records the values per token the engine sends to each point.
class WidthRecorder : public ActivationObserver {
 public:
  explicit WidthRecorder(size_t tokens) : tokens_(tokens) {}
  void observe(int point, std::span<const float> values) override {
    REQUIRE(values.size() % tokens_ == 0);
    const size_t width = values.size() / tokens_;
    const auto [it, inserted] = widths.emplace(point, width);
    CHECK(it->second == width);  // the same width every time the point is observed
  }
  std::map<int, size_t> widths;

 private:
  size_t tokens_;
};

std::map<int, size_t> observed_widths(const ModelConfig& config) {
  const Model model = synthesize_model(config, 3);
  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  const std::vector<int> tokens = {1, 5, 9, 2, 7};
  WidthRecorder recorder(tokens.size());
  transformer.set_observer(&recorder);
  transformer.forward(tokens, 0, true);
  return recorder.widths;
}

TEST_CASE("Quantization points: every point's width is what the forward pass observes there") {
  for (const char* preset : {"tiny", "tiny-mha"}) {
    CAPTURE(preset);
    const ModelConfig config = find_synth_preset(preset).config;
    const std::map<int, size_t> widths = observed_widths(config);
    REQUIRE(widths.size() == static_cast<size_t>(point_count(config)));
    size_t widest = 0;
    for (const auto& entry : widths) {
      const int point = entry.first;
      const size_t width = entry.second;
      CAPTURE(point);
      CHECK(static_cast<size_t>(point_width(config, point)) == width);
      widest = std::max(widest, width);
    }
    CHECK(static_cast<size_t>(widest_point(config)) == widest);
  }
}

TEST_CASE("DP sensitivity: the round's noise follows from the observed widths of every point") {
  RoundSettings settings;
  settings.seq_len = 64;
  settings.dp_epsilon = 2;
  settings.dp_delta = 1e-6;
  for (const char* preset : {"tiny", "tiny-mha"}) {
    CAPTURE(preset);
    const ModelConfig config = find_synth_preset(preset).config;
    double squares = 0;
    for (const auto& [point, width] : observed_widths(config)) squares += static_cast<double>(width) * static_cast<double>(width);
    // Gaussian mechanism: sigma = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon, sensitivity = seq_len * sqrt(sum width^2).
    const double expected =
        settings.seq_len * std::sqrt(squares) * std::sqrt(2 * std::log(1.25 / settings.dp_delta)) / settings.dp_epsilon;
    CHECK(dp_total_stddev(config, settings) == doctest::Approx(expected).epsilon(1e-12));
  }
}

}  // namespace
}  // namespace fedcal::coordinator
