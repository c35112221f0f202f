// Importance sums (llama.cpp's importance matrix): exact fixed point, additive across shards, the values
// a direct computation gives, and the .dat file as its published format reads.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "common/byte_reader.h"
#include "common/file_util.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "models/quant/importance.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::kProjectModel;
const std::string kProjectLlama2cTokenizer = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m/tokenizer.bin";

// Sums x^2 per channel of one point in double precision, beside the recorder.
class SquareSums : public ActivationObserver {
 public:
  SquareSums(int point, int width, ActivationObserver& next) : point_(point), sums_(static_cast<size_t>(width)), next_(next) {}
  void observe(int point, std::span<const float> values) override {
    if (point == point_) {
      for (size_t at = 0; at < values.size(); ++at) sums_[at % sums_.size()] += static_cast<double>(values[at]) * values[at];
    }
    next_.observe(point, values);
  }
  const std::vector<double>& sums() const { return sums_; }

 private:
  int point_;
  std::vector<double> sums_;
  ActivationObserver& next_;
};

// The legacy imatrix .dat file read by its published layout (llama.cpp's imatrix tool), written here.
Imatrix read_published_imatrix(std::span<const std::byte> bytes) {
  ByteReader reader(bytes, "imatrix.dat");
  Imatrix out;
  const int32_t entries = reader.read<int32_t>("entries");
  for (int32_t e = 0; e < entries; ++e) {
    ImatrixEntry entry;
    const int32_t length = reader.read<int32_t>("name length");
    const auto name = reader.take(static_cast<size_t>(length), "name");
    entry.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    entry.ncall = reader.read<int32_t>("ncall");
    const int32_t nval = reader.read<int32_t>("nval");
    for (int32_t i = 0; i < nval; ++i) entry.values.push_back(reader.read<float>("value"));
    out.entries.push_back(std::move(entry));
  }
  out.last_call = reader.read<int32_t>("last call");
  const int32_t length = reader.read<int32_t>("dataset length");
  const auto dataset = reader.take(static_cast<size_t>(length), "dataset");
  out.dataset.assign(reinterpret_cast<const char*>(dataset.data()), dataset.size());
  REQUIRE(reader.remaining() == 0);
  return out;
}

}  // namespace

TEST_CASE("Importance fixed point: x^2 at 2^-16 resolution, capped, NaN at the cap") {
  CHECK(importance_fixed_point(0) == 0);
  CHECK(importance_fixed_point(1) == 65536);
  CHECK(importance_fixed_point(-0.5f) == 16384);
  CHECK(importance_fixed_point(0.01f) == 7);     // 6.5536 rounded
  CHECK(importance_fixed_point(0.001f) == 0);    // below the resolution: 0.066
  CHECK(importance_fixed_point(1024) == kImportanceTokenCap);
  CHECK(importance_fixed_point(1e30f) == kImportanceTokenCap);
  CHECK(importance_fixed_point(std::nanf("")) == kImportanceTokenCap);
}

TEST_CASE("Importance sums: shards add up bit for bit to the whole text, match a direct sum, and export as llama.cpp's imatrix" *
          doctest::test_suite("oracle")) {
  const LoadedModel loaded = load_model(kProjectModel);
  const auto tokenizer = load_tokenizer(loaded, kProjectLlama2cTokenizer);
  XnnRuntime runtime(1);
  Transformer transformer(loaded.model, runtime);
  const ModelConfig& config = loaded.model.config;
  std::string first, second;
  {
    std::istringstream lines(testing::tinystories_train());
    std::string line;
    for (int i = 0; i < 24 && std::getline(lines, line);) {
      if (line.empty()) continue;
      (i++ < 10 ? first : second) += line + "\n";
    }
  }
  CalibrationOptions options;
  options.sequences = 100;
  options.seq_len = 64;
  options.importance = true;
  const CalibrationStats a = calibrate(transformer, *tokenizer, first, "m", options);
  const CalibrationStats b = calibrate(transformer, *tokenizer, second, "m", options);
  // The whole text, with a double-precision sum of layer 1's ffn_hidden beside the recorder.
  CalibrationStats whole = CalibrationStats::empty_for(config, "m", options.layout, true);
  StatsRecorder recorder(whole);
  const int point = layer_point(1, LayerPoint::kFfnHidden);
  SquareSums direct(point, config.hidden_dim, recorder);
  transformer.set_observer(&direct);
  for (const std::string& text : {first, second}) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      std::vector<int> tokens = tokenizer->encode(line, true);
      if (tokens.size() > 64) tokens.resize(64);
      transformer.forward(tokens, 0, true);
      whole.sequences += 1;
      whole.tokens += tokens.size();
    }
  }
  transformer.set_observer(nullptr);
  REQUIRE(a.has_importance());
  CHECK(a.importance.size() == static_cast<size_t>(config.n_layers) * (2 * config.dim + config.q_dim() + config.hidden_dim));
  CalibrationStats merged = a;
  merged.merge(b);
  CHECK(merged.importance == whole.importance);
  CHECK(merged.counts == whole.counts);
  // Through the file and the contribution vector (what secure aggregation adds) unchanged.
  CHECK(parse_stats(serialize_stats(merged), "m.stats").importance == merged.importance);
  std::vector<uint64_t> sum = contribution_vector(a);
  const std::vector<uint64_t> other = contribution_vector(b);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += other[i];
  const CalibrationStats aggregated = stats_from_contribution(CalibrationStats::empty_for(config, "m", options.layout, true), sum);
  CHECK(aggregated.importance == whole.importance);
  CHECK(aggregated.tokens == whole.tokens);
  // In 32-bit lanes (sums modulo 2^32), 1024 agents with sums far past 2^32: each limb's sum stays
  // below 2^31, and the recombined sum is exact.
  {
    CalibrationStats big = CalibrationStats::empty_for(config, "m", options.layout, true);
    const uint64_t tokens = 64 * 128;
    big.importance.assign(big.importance.size(), 0);
    big.importance[0] = tokens * kImportanceTokenCap;  // every token at the cap: 2^49
    big.importance[1] = (uint64_t{1} << 42) + 12345;
    big.importance[2] = (uint64_t{1} << 21) - 1;
    std::vector<uint64_t> lanes = contribution_vector(big);
    size_t over = 0;
    for (uint64_t& lane : lanes) {
      over += lane > importance_limb_bound(tokens);
      lane = (lane * 1024) % (uint64_t{1} << 32);
      over += lane >= (uint64_t{1} << 31);
    }
    CHECK(over == 0);
    const CalibrationStats summed = stats_from_contribution(CalibrationStats::empty_for(config, "m", options.layout, true), lanes);
    for (size_t i = 0; i < 3; ++i) CHECK(summed.importance[i] == big.importance[i] * 1024);
  }
  // A shard without importance sums does not merge into one with them.
  CalibrationOptions plain = options;
  plain.importance = false;
  CalibrationStats without = calibrate(transformer, *tokenizer, first, "m", plain);
  CHECK_THROWS_WITH_AS(without.merge(a), doctest::Contains("importance"), Error);

  // The fixed-point sums are the direct sums to within half a unit per token.
  size_t offset = 0;
  for (size_t i = 0; i < whole.importance_points.size(); ++i) {
    if (whole.importance_points[i] == "layers.1.ffn_hidden") break;
    offset += whole.importance_widths[i];
  }
  for (int c = 0; c < config.hidden_dim; ++c) {
    const double fixed = std::ldexp(static_cast<double>(whole.importance[offset + static_cast<size_t>(c)]), -16);
    CHECK(std::fabs(fixed - direct.sums()[static_cast<size_t>(c)]) <= 0.5 * std::ldexp(1.0, -16) * static_cast<double>(whole.tokens) + 1e-9);
  }

  // The imatrix: one entry per linear, named as in GGUF, read back by the published layout.
  const Imatrix imatrix = imatrix_from_stats(whole, config, "train.txt");
  const Imatrix read = read_published_imatrix(serialize_imatrix(imatrix));
  REQUIRE(read.entries.size() == static_cast<size_t>(7 * config.n_layers));
  CHECK(read.last_call == static_cast<int32_t>(whole.sequences));
  CHECK(read.dataset == "train.txt");
  CHECK(read.entries[0].name == "blk.0.attn_q.weight");
  CHECK(read.entries[1].name == "blk.0.attn_k.weight");
  CHECK(read.entries[2].name == "blk.0.attn_v.weight");
  CHECK(read.entries[3].name == "blk.0.attn_output.weight");
  CHECK(read.entries[4].name == "blk.0.ffn_gate.weight");
  CHECK(read.entries[5].name == "blk.0.ffn_up.weight");
  CHECK(read.entries[6].name == "blk.0.ffn_down.weight");
  const ImatrixEntry& down = read.entries[13];  // layer 1's ffn_down: its input is ffn_hidden
  CHECK(down.name == "blk.1.ffn_down.weight");
  CHECK(down.ncall == static_cast<int32_t>(whole.sequences));
  REQUIRE(down.values.size() == static_cast<size_t>(config.hidden_dim));
  for (int c = 0; c < config.hidden_dim; ++c) {
    // llama.cpp stores mean x^2 per token times ncall.
    const double expected = direct.sums()[static_cast<size_t>(c)] / static_cast<double>(whole.tokens) * static_cast<double>(whole.sequences);
    CHECK(down.values[static_cast<size_t>(c)] == doctest::Approx(expected).epsilon(1e-3).scale(1e-4));
  }
  CHECK_THROWS_WITH_AS(imatrix_from_stats(without, config, "x"), doctest::Contains("no importance sums"), Error);

  // The GGUF imatrix, as Hugging Face's GGUF reader (npm, tests/oracles) sees it: raw sums and counts.
  testing::ScratchDir dir;
  imatrix_gguf(whole, config, "train.txt").write(dir.path("imatrix.gguf"));
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  const testing::CommandResult dump = testing::run_oracle("gguf_dump.mjs", dir.path("imatrix.gguf"));
  REQUIRE_MESSAGE(dump.exit_code == 0, dump.output);
  const nlohmann::json seen = nlohmann::json::parse(dump.output);
  CHECK(seen["metadata"]["general.type"] == "imatrix");
  CHECK(seen["metadata"]["imatrix.datasets"] == nlohmann::json::array({"train.txt"}));
  CHECK(seen["metadata"]["imatrix.chunk_count"] == whole.sequences);
  CHECK(seen["metadata"]["imatrix.chunk_size"] == (whole.tokens + whole.sequences - 1) / whole.sequences);
  REQUIRE(seen["tensors"].size() == static_cast<size_t>(2 * 7 * config.n_layers));
  const std::string file = read_text_file(dir.path("imatrix.gguf"));
  auto f32_at = [&](size_t at) {
    float value;
    std::memcpy(&value, file.data() + at, sizeof(value));
    return value;
  };
  int checked = 0;
  for (const auto& tensor : seen["tensors"]) {
    CHECK(tensor["type"] == 0);  // F32
    const std::string name = tensor["name"].get<std::string>();
    if (name == "blk.1.ffn_down.weight.counts") {
      CHECK(tensor["shape"] == nlohmann::json::array({1, 1}));
      CHECK(f32_at(tensor["file_offset"].get<size_t>()) == static_cast<float>(whole.tokens));
      ++checked;
    }
    if (name == "blk.1.ffn_down.weight.in_sum2") {
      CHECK(tensor["shape"] == nlohmann::json::array({config.hidden_dim, 1}));
      for (int c = 0; c < config.hidden_dim; ++c) {
        const double expected = direct.sums()[static_cast<size_t>(c)];
        CHECK(f32_at(tensor["file_offset"].get<size_t>() + 4 * static_cast<size_t>(c)) == doctest::Approx(expected).epsilon(1e-3).scale(1e-4));
      }
      ++checked;
    }
  }
  CHECK(checked == 2);
}

}  // namespace fedcal
