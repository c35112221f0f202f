// Writes a small valid input for every fuzz target into SEED_DIR/<target>/, so the fuzzers start from
// well-formed files and mutate their way into the parsers' deeper branches.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "models/format/gguf_model.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/int4_format.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/byte_level_bpe_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/pretokenizer.h"
#include "protocol/relay_frames.h"
#include "protocol/wire.h"
#include "secagg/relay_group_frames.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_seeds SEED_DIR\n";
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* target :
       {"llama2c_checkpoint", "llama2c_tokenizer", "safetensors", "gguf", "hf_config", "hf_tokenizer", "tokenizer_encode",
        "stats", "model_package", "message", "relay_group", "coordinator", "agent", "http_head"}) {
    fs::create_directories(root / target);
  }
  // What a cache answers an agent's range request (fuzz_http_head).
  std::ofstream(root / "http_head/206.txt") << "HTTP/1.1 206 Partial Content\r\nServer: nginx\r\nContent-Length: 4194304\r\n"
                                               "Content-Range: bytes 0-4194303/7340032\r\nX-Cache-Status: HIT\r\n";
  std::ofstream(root / "http_head/404.txt") << "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n";
  fedcal::ModelConfig micro;
  micro.dim = 8;
  micro.hidden_dim = 12;
  micro.n_layers = 1;
  micro.n_heads = 2;
  micro.n_kv_heads = 1;
  micro.vocab_size = 6;
  micro.max_seq_len = 4;
  fedcal::Model model = fedcal::synthesize_model(micro, 1);
  fedcal::write_llama2c_checkpoint(model, (root / "llama2c_checkpoint/v1.bin").string(), fedcal::Llama2cVersion::kVersion1);
  fedcal::write_llama2c_checkpoint(model, (root / "llama2c_checkpoint/legacy.bin").string(), fedcal::Llama2cVersion::kLegacy);
  model.config.shared_classifier = false;
  model.classifier = model.token_embedding;
  fedcal::write_llama2c_checkpoint(model, (root / "llama2c_checkpoint/legacy_untied.bin").string(),
                                   fedcal::Llama2cVersion::kLegacy);

  const fs::path hf = root / "hf_model";
  fedcal::write_hf_checkpoint(model, hf.string(), fedcal::TensorDtype::kBF16);
  fs::copy_file(hf / "config.json", root / "hf_config/config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(hf / "model.safetensors", root / "safetensors/model.safetensors", fs::copy_options::overwrite_existing);
  fs::remove_all(hf);

  // tokenizer.bin with a leading vocabulary-size byte (6 - 3 = 3), as fuzz_llama2c_tokenizer reads it.
  fedcal::Llama2cTokenizer({{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}, {" ", -1}, {"a", -2}, {" a", -3}})
      .write((root / "llama2c_tokenizer/raw.bin").string());
  {
    std::ifstream raw(root / "llama2c_tokenizer/raw.bin", std::ios::binary);
    std::ofstream seed(root / "llama2c_tokenizer/tokenizer.bin", std::ios::binary);
    seed.put(3);
    seed << raw.rdbuf();
  }
  fs::remove(root / "llama2c_tokenizer/raw.bin");
  {
    // GGUF of the micro model (vocabulary 6) with the tokenizer above, in F32 and with F16 matrices.
    std::vector<fedcal::TokenizerPiece> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}, {" ", -1}, {"a", -2}, {" a", -3}};
    const fedcal::PackageTokenizer tokenizer{"llama2c", fedcal::Llama2cTokenizer(std::move(pieces)).serialize()};
    fedcal::write_gguf_model((root / "gguf/f32.gguf").string(), model, tokenizer, {});
    fedcal::GgufExportOptions f16;
    f16.weights = fedcal::GgmlType::kF16;
    fedcal::write_gguf_model((root / "gguf/f16.gguf").string(), model, tokenizer, f16);
  }

  std::string vocab = R"({"<unk>": 0, "<s>": 1, "</s>": 2)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 3 + b);
  vocab += R"(, "▁": 259, "a": 260, "b": 261, "▁a": 262, "ab": 263, "▁ab": 264})";
  std::ofstream(root / "hf_tokenizer/tokenizer.json")
      << R"({"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": )" << vocab
      << R"(, "merges": ["a b", "▁ a", ["▁", "ab"]]}, "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend",
      "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}, "pre_tokenizer": null})";
  {
    // A byte-level one: GPT-2's 256 byte characters, two merges, NFC, the Llama 3 split and an added token.
    nlohmann::json bytes = nlohmann::json::object();
    const std::array<std::string, 256> pieces = fedcal::byte_level_pieces();
    for (int byte = 0; byte < 256; ++byte) bytes[pieces[static_cast<size_t>(byte)]] = byte;
    bytes["ab"] = 256;
    bytes["\xc4\xa0" "ab"] = 257;  // "Ġab"
    std::ofstream(root / "hf_tokenizer/byte_level.json")
        << R"({"model": {"type": "BPE", "vocab": )" << bytes.dump() << R"(, "merges": ["a b", "Ġ ab"], "ignore_merges": true},
      "normalizer": {"type": "NFC"}, "added_tokens": [{"id": 258, "content": "<|endoftext|>", "special": true}],
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )"
        << nlohmann::json(std::string(fedcal::split_pattern_regex(fedcal::SplitPattern::kLlama3))).dump()
        << R"(}, "behavior": "Isolated", "invert": false}, {"type": "Digits", "individual_digits": true},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}, "decoder": {"type": "ByteLevel"}})";
  }
  std::ofstream(root / "tokenizer_encode/story.txt")
      << "Once upon a time, there was a little \xc3\xa9t\xc3\xa9 \xe2\x80\x9cthe\xe2\x80\x9d.\n";
  fedcal::HistogramLayout coarse;
  coarse.mantissa_bits = 1;
  coarse.min_exponent = -2;
  coarse.max_exponent = 2;
  fedcal::CalibrationStats stats = fedcal::CalibrationStats::empty_for(micro, "seed", coarse);
  for (size_t i = 0; i < stats.counts.size(); i += 3) stats.counts[i] = i;
  fedcal::write_stats(stats, (root / "stats/micro.stats").string());
  fedcal::CalibrationStats with_importance = fedcal::CalibrationStats::empty_for(micro, "seed", coarse, true);
  for (size_t i = 0; i < with_importance.importance.size(); ++i) with_importance.importance[i] = 3 * i;
  fedcal::write_stats(with_importance, (root / "stats/importance.stats").string());

  // Packages of the micro model: FP32, and INT8 per tensor with a fake but valid set of scales.
  fedcal::write_model_package((root / "model_package/fp32.pkg").string(), model, {}, {"llama2c", "x"}, {});
  fedcal::QuantizedLinears int8;
  for (const auto& site : fedcal::linear_sites(micro)) {
    const auto& weights = fedcal::linear_weights(model, site.name);
    const int cols = fedcal::point_width(micro, site.input_point);
    int8[site.name] = {
        fedcal::quantize_weights(weights, static_cast<int>(weights.size()) / cols, cols, site.name.ends_with("wq")),
        {0.05f, 0},
        {0.1f, 3}};
  }
  fedcal::write_model_package((root / "model_package/int8.pkg").string(), model, int8, {},
                              {"minmax", false, false, 1, 2, "s", {}, "m"});
  // And the fine-grained one: weights in groups of 32 (qgint8).
  fedcal::QuantizeOptions grouped;
  grouped.per_group = true;
  fedcal::write_model_package((root / "model_package/grouped.pkg").string(), model, fedcal::quantize_model_weights(model, grouped), {},
                              {});
  // And 4- and 5-bit ones (qgint4, qgnl4, qgint5, qgnl5): a model 32 wide, one group per row.
  fedcal::ModelConfig narrow = micro;
  narrow.dim = 32;
  narrow.hidden_dim = 32;
  const fedcal::Model four_bit_model = fedcal::synthesize_model(narrow, 2);
  for (const int bits : {4, 5}) {
    for (const fedcal::Int4Grid grid : {fedcal::Int4Grid::kUniform, fedcal::Int4Grid::kNonUniform}) {
      fedcal::QuantizeOptions low;
      low.weight_bits = bits;
      low.four_bit_grid = grid;
      fedcal::write_model_package((root / (std::string(bits == 4 ? "model_package/four-" : "model_package/five-") +
                                           fedcal::int4_grid_name(grid) + ".pkg"))
                                      .string(),
                                  four_bit_model, fedcal::quantize_model_weights(four_bit_model, low), {}, {});
    }
  }

  // Protocol messages: a hello, a join, a masked input and encrypted shares.
  // Agent messages also seed the coordinator's handlers, as [sender][flags][message] (see
  // fuzz_coordinator.cpp).
  uint64_t sequence = uint64_t{1} << 50;
  auto write_message = [&](const char* name, fedcal::OutgoingMessage& message) {
    const auto bytes = message.encode(sequence++);
    std::ofstream((root / "message" / name), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    for (const char sender : {'\0', '\1', '\2'}) {
      std::ofstream out(root / "coordinator" / (std::string(1, static_cast<char>('0' + sender)) + name), std::ios::binary);
      out.put(sender).put('\7');  // loopback address, fresh sequence number, join fixed up
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
  };
  // A relay group's start and result (fuzz_relay_group reads both against its group: round 7, group 2
  // of 5 members, 16 values in 32-bit lanes).
  {
    fedcal::RelayGroupStart start;
    start.config.round_id = 7;
    start.config.group_id = 2;
    start.config.self_masks_sealed = true;
    start.config.participants = 5;
    start.config.neighbours = 4;
    start.config.threshold = 3;
    start.config.vector_length = 16;
    start.config.lane_bits = 32;
    for (int i = 0; i < 5; ++i)
      start.members.push_back({std::string(40, static_cast<char>('a' + i)), "route" + std::to_string(i), {}, true});
    start.coordinator_key_signature.assign(64, 1);
    start.stage_timeout_ms = 1000;
    fedcal::RelayGroupResult result;
    result.round_id = 7;
    result.shared = {0, 1, 2, 3, 4};
    result.aggregate.config = start.config;
    result.aggregate.survivors = {0, 1, 3, 4};
    for (const uint32_t u : result.aggregate.survivors) {
      result.aggregate.commitments[u] = fedcal::Key32{};
      result.aggregate.sealed[u] = fedcal::Bytes(100, static_cast<uint8_t>(u));
    }
    result.aggregate.self_masked_sum.assign(16, 0xFFFFFFFFu);
    for (const auto& [name, bytes] : {std::pair{"start.bin", fedcal::encode_group_start(start)},
                                      std::pair{"result.bin", fedcal::encode_group_result(result)}}) {
      std::ofstream(root / "relay_group" / name, std::ios::binary)
          .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
  }
  // A relay's presence report (the message target reads its input as one too).
  std::ofstream(root / "message" / "presence.bin", std::ios::binary)
      << fedcal::encode_presence({{std::string(40, 'k'), std::string("\0\1\2\3\4", 5)}, {std::string(40, 'Z'), "r"}});
  // Coordinator messages seed the agent's handlers.
  auto write_to_agent = [&](const char* name, fedcal::OutgoingMessage& message) {
    const auto bytes = message.encode(sequence++);
    std::ofstream((root / "agent" / name), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  };
  {
    fedcal::OutgoingMessage message;
    message.body().initWelcome().setHeartbeatIntervalMs(1000);
    write_to_agent("welcome.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto config = message.body().initRoundAnnounce().initConfig();
    config.setRoundId(1);
    config.setModelSha256(std::string(64, 'a'));
    config.setModelBytes(1000);
    config.setSequences(1);
    config.setSeqLen(16);
    write_to_agent("announce.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto keys = message.body().initRoundKeys();
    keys.setRoundId(1);
    keys.setParticipants(3);
    keys.setNeighbours(2);
    keys.setThreshold(2);
    keys.initGraphSeed(32);
    keys.setVectorLength(4);
    auto list = keys.initKeys(2);
    list[0].setIndex(1);
    list[0].initCipherPublic(32);
    list[0].initMaskPublic(32);
    list[1].setIndex(2);
    write_to_agent("keys.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto error = message.body().initError();
    error.setCode(fedcal::wire::ErrorReply::Code::REPLAYED);
    error.setNextSequence(uint64_t{1} << 62);
    error.setMessage("sequence number already seen");
    write_to_agent("error.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto chunk = message.body().initChunk();
    chunk.setSha256(std::string(64, 'a'));
    chunk.setTotalBytes(1000);
    chunk.initData(10);
    write_to_agent("chunk.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    message.body().initHeartbeat();
    write_message("heartbeat.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    message.body().initError().setMessage("disk full");
    write_message("error.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto enroll = message.body().initEnroll();
    enroll.setToken("token");
    enroll.setName("pi");
    write_message("enroll.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto request = message.body().initChunkRequest();
    request.setSha256(std::string(64, 'a'));
    request.setLength(100);
    write_message("chunk_request.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto hello = message.body().initHello();
    hello.setName("pi");
    auto profile = hello.initProfile();
    profile.setArch("aarch64");
    profile.initIsaFeatures(2).set(0, "neon");
    write_message("hello.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto join = message.body().initJoin();
    join.setRoundId(1);
    join.initCipherPublic(32)[0] = 9;  // the base point: a valid public key
    join.initMaskPublic(32)[0] = 9;
    join.setVectorLength(4);
    write_message("join.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto masked = message.body().initMaskedInput();
    masked.setRoundId(1);
    fedcal::write_u64_vector({1, 2, 3, ~uint64_t{0}}, masked.initValues(32));
    write_message("masked.bin", message);
  }
  {
    fedcal::OutgoingMessage message;
    auto shares = message.body().initShareKeys().initShares(2);
    shares[0].setTo(1);
    shares[0].initCiphertext(92);
    shares[1].setTo(2);
    write_message("shares.bin", message);
  }
  return 0;
}
