// Corrupt and hostile files get a clear error naming the file and the problem, never a crash.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file_util.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_loader.h"
#include "models/format/synth.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "tests/error_of.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

std::string read_bytes(const std::string& path) { return read_text_file(path); }
void write_bytes(const std::string& path, const std::string& bytes) { testing::write_text(path, bytes); }

using testing::error_of;

TEST_CASE("llama2.c checkpoints: truncation, size mismatch and absurd headers are refused by name") {
  testing::ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny").config, 1);
  for (Llama2cVersion version : {Llama2cVersion::kLegacy, Llama2cVersion::kVersion1}) {
    CAPTURE(static_cast<int>(version));
    const std::string good = dir.path("good.bin");
    write_llama2c_checkpoint(model, good, version);
    const std::string bytes = read_bytes(good);

    const std::string truncated = dir.path("truncated.bin");
    write_bytes(truncated, bytes.substr(0, bytes.size() - 100));
    std::string message = error_of([&] { load_model(truncated); });
    CHECK(message.find(truncated) != std::string::npos);
    CHECK(message.find("implies a file of") != std::string::npos);

    const std::string longer = dir.path("longer.bin");
    write_bytes(longer, bytes + "extra");
    CHECK(error_of([&] { load_model(longer); }).find("implies a file of") != std::string::npos);

    const std::string tiny = dir.path("header_only.bin");
    write_bytes(tiny, bytes.substr(0, 10));
    message = error_of([&] { load_model(tiny); });
    CHECK(message.find(tiny) != std::string::npos);
    CHECK(message.find("truncated") != std::string::npos);

    // dim (first header field) set to 2^30.
    std::string absurd = bytes;
    const size_t dim_offset = version == Llama2cVersion::kVersion1 ? 8 : 0;
    const int32_t huge = 1 << 30;
    std::memcpy(absurd.data() + dim_offset, &huge, 4);
    write_bytes(dir.path("absurd.bin"), absurd);
    message = error_of([&] { load_model(dir.path("absurd.bin")); });
    CHECK(message.find("dim = 1073741824 is out of range") != std::string::npos);

    // n_kv_heads that does not divide n_heads.
    std::string bad_heads = bytes;
    const int32_t three = 3;
    std::memcpy(bad_heads.data() + dim_offset + 16, &three, 4);
    write_bytes(dir.path("heads.bin"), bad_heads);
    CHECK(error_of([&] { load_model(dir.path("heads.bin")); }).find("not a multiple of n_kv_heads") != std::string::npos);
  }
  write_bytes(dir.path("empty.bin"), "");
  CHECK(error_of([&] { load_model(dir.path("empty.bin")); }).find("truncated") != std::string::npos);
  CHECK(error_of([&] { load_model(dir.path("missing.bin")); }).find("cannot open") != std::string::npos);
}

TEST_CASE("safetensors: a header that is not JSON, points outside the file or disagrees with its shape is refused") {
  auto file_with_header = [](const std::string& header, size_t data_bytes) {
    std::string bytes(8, '\0');
    const uint64_t size = header.size();
    std::memcpy(bytes.data(), &size, 8);
    return bytes + header + std::string(data_bytes, '\0');
  };
  auto parse_error = [&](const std::string& bytes) {
    return error_of([&] { parse_safetensors(std::as_bytes(std::span(bytes)), "x.safetensors"); });
  };
  CHECK(parse_error(file_with_header("{not json", 0)).find("x.safetensors: safetensors header is not valid JSON") == 0);
  CHECK(parse_error(file_with_header("[1,2]", 0)).find("not a JSON object") != std::string::npos);
  CHECK(parse_error(file_with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4))
            .find("point outside the data section") != std::string::npos);
  CHECK(
      parse_error(file_with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("3 elements need 12") !=
      std::string::npos);
  CHECK(parse_error(file_with_header(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0))
            .find("not a non-negative integer") != std::string::npos);
  CHECK(parse_error(file_with_header(R"({"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1)).find("unknown dtype") !=
        std::string::npos);
  CHECK(parse_error(file_with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0))
            .find("too many elements") != std::string::npos);
  std::string lying_length(8, '\0');
  const uint64_t huge = 1ull << 40;
  std::memcpy(lying_length.data(), &huge, 8);
  CHECK(parse_error(lying_length + "{}").find("exceeds the limit") != std::string::npos);
  CHECK(parse_error("abc").find("too short") != std::string::npos);
}

TEST_CASE("Hugging Face folders: bad config.json, missing tensors and wrong shapes name the file and tensor") {
  testing::ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny").config, 1);
  const std::string folder = dir.path("hf");
  write_hf_checkpoint(model, folder, TensorDtype::kF32);
  const std::string config_path = folder + "/config.json";
  const std::string config = read_bytes(config_path);

  write_bytes(config_path, "{\"hidden_size\": 64");
  CHECK(error_of([&] { load_model(folder); }).find(config_path + ": not a JSON object") != std::string::npos);

  write_bytes(config_path, R"({"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 999, "max_position_embeddings": 128, "tie_word_embeddings": true})");
  std::string message = error_of([&] { load_model(folder); });
  CHECK(message.find("model.embed_tokens.weight") != std::string::npos);
  CHECK(message.find("has shape [512, 64], expected [999, 64]") != std::string::npos);

  write_bytes(config_path, R"({"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 128, "tie_word_embeddings": true})");
  CHECK(error_of([&] { load_model(folder); }).find("missing tensor 'model.layers.2.input_layernorm.weight'") !=
        std::string::npos);

  write_bytes(config_path, R"({"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
    "vocab_size": 512, "max_position_embeddings": 128, "rope_scaling": {"type": "linear", "factor": 2.0}})");
  CHECK(error_of([&] { load_model(folder); }).find("rope_scaling") != std::string::npos);

  write_bytes(config_path, R"({"hidden_size": "64"})");
  CHECK(error_of([&] { load_model(folder); }).find("field 'hidden_size' is not an integer") != std::string::npos);
  write_bytes(config_path, config);
  CHECK_NOTHROW(load_model(folder));

  std::filesystem::remove(folder + "/model.safetensors");
  CHECK(error_of([&] { load_model(folder); }).find("no *.safetensors file") != std::string::npos);
}

TEST_CASE("llama2.c tokenizer.bin: invalid pieces and a mismatched vocabulary size are refused") {
  testing::ScratchDir dir;
  std::vector<TokenizerPiece> pieces{{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}, {" ", -1}, {"a", -2}, {" a", -3}};
  const std::string path = dir.path("tokenizer.bin");
  Llama2cTokenizer(pieces).write(path);
  CHECK_NOTHROW(Llama2cTokenizer::read(path, 6));
  CHECK(error_of([&] { Llama2cTokenizer::read(path, 5); }).find("does not match this tokenizer") != std::string::npos);
  CHECK(error_of([&] { Llama2cTokenizer::read(path, 7); }).find("truncated") != std::string::npos);

  std::string bytes = read_bytes(path);
  std::string negative = bytes;
  const int32_t minus_one = -1;
  std::memcpy(negative.data() + 4 + 4, &minus_one, 4);  // length of piece 0
  write_bytes(dir.path("negative.bin"), negative);
  std::string message = error_of([&] { Llama2cTokenizer::read(dir.path("negative.bin"), 6); });
  CHECK(message.find(dir.path("negative.bin")) != std::string::npos);
  CHECK(message.find("piece 0 has length -1") != std::string::npos);

  std::string too_long = bytes;
  const int32_t big = 1000;
  std::memcpy(too_long.data() + 4 + 4, &big, 4);
  write_bytes(dir.path("long.bin"), too_long);
  CHECK(error_of([&] { Llama2cTokenizer::read(dir.path("long.bin"), 6); }).find("outside [0, max_token_length") !=
        std::string::npos);

  std::string nan_score = bytes;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_score.data() + 4, &nan, 4);
  write_bytes(dir.path("nan.bin"), nan_score);
  CHECK(error_of([&] { Llama2cTokenizer::read(dir.path("nan.bin"), 6); }).find("NaN score") != std::string::npos);
}

TEST_CASE("tokenizer.json: unsupported kinds and broken merges are refused with the reason") {
  auto parse_error = [](const std::string& json) { return error_of([&] { parse_hf_tokenizer(json, "tok.json"); }); };
  CHECK(parse_error("nope").find("tok.json: not a JSON object") == 0);
  CHECK(parse_error(R"({"model": {"type": "WordPiece"}})").find("model type 'WordPiece' is not supported") != std::string::npos);
  const std::string vocab = R"("vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "ab": 5})";
  CHECK(parse_error(R"({"model": {"type": "BPE", )" + vocab + R"(, "merges": ["a c"]}})").find("not in the vocabulary") !=
        std::string::npos);
  CHECK(parse_error(R"({"model": {"type": "BPE", )" + vocab + R"(, "merges": ["abc"]}})").find("is not two pieces") !=
        std::string::npos);
  CHECK(parse_error(R"({"model": {"type": "BPE", "vocab": {"a": -4}}})").find("invalid id") != std::string::npos);
  CHECK(parse_error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}}})").find("ids must be contiguous") !=
        std::string::npos);
  CHECK(parse_error(R"({"model": {"type": "BPE", "byte_fallback": true, )" + vocab + R"(}})").find("no piece <0x00>") !=
        std::string::npos);
  CHECK(parse_error(R"({"pre_tokenizer": {"type": "WhitespaceSplit"}, "model": {"type": "BPE", )" + vocab + R"(}})")
            .find("pre_tokenizer 'WhitespaceSplit' is not supported") != std::string::npos);
  CHECK_NOTHROW(parse_hf_tokenizer(R"({"model": {"type": "BPE", )" + vocab + R"(, "merges": ["a b"]}})", "tok.json"));
}

}  // namespace
}  // namespace fedcal
