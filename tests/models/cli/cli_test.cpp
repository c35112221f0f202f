// fedcal-model as a user runs it: real processes, real files.
#include <doctest/doctest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "tests/models/tokenizer/tokenizer_fixtures.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::run_command;

std::string fedcal_model() { return testing::built_binary("fedcal-model"); }

TEST_CASE("fedcal-model synth, inspect, generate and eval on llama2.c and Hugging Face checkpoints" * doctest::timeout(180)) {
  testing::ScratchDir dir;
  const std::string model = dir.path("tiny.bin");
  REQUIRE(run_command(fedcal_model() + " synth --preset tiny --seed 3 -o " + model).exit_code == 0);
  REQUIRE(run_command(fedcal_model() + " synth --preset tiny --seed 3 --format hf -o " + dir.path("hf")).exit_code == 0);
  // The tiny preset has 512 embeddings: give it a real 512-piece tokenizer.
  const std::string spm = testing::train_sentencepiece(dir.root(), testing::tinystories_train().substr(0, 100000), 512);
  testing::llama2c_tokenizer_from_sentencepiece(spm).write(dir.path("tokenizer.bin"));
  std::filesystem::copy_file(spm, dir.path("hf/tokenizer.model"));

  const auto inspect = run_command(fedcal_model() + " inspect --json -m " + model);
  REQUIRE(inspect.exit_code == 0);
  const auto info = nlohmann::json::parse(inspect.output);
  CHECK(info["parameters"] == 125248);
  CHECK(info["format"] == "llama2.c (version 1)");
  CHECK(info["tensors"].size() == 20);

  const std::string generate = fedcal_model() + " generate -q --temperature 0 --max-tokens 30 --prompt 'Once upon a time' -m ";
  const auto first = run_command(generate + model + " --tokenizer " + dir.path("tokenizer.bin") + " --threads 1");
  REQUIRE(first.exit_code == 0);
  CHECK(first.output.rfind("Once upon a time", 0) == 0);
  CHECK(first.output.size() > std::string("Once upon a time\n").size());
  // Greedy generation is deterministic, on more threads and from the Hugging Face copy with the sentencepiece model.
  CHECK(run_command(generate + model + " --tokenizer " + dir.path("tokenizer.bin") + " --threads 2").output == first.output);
  CHECK(run_command(generate + dir.path("hf") + " --threads 1").output == first.output);

  const std::string heldout = dir.path("heldout.txt");
  testing::write_text(heldout, testing::tinystories_heldout().substr(0, 3000));
  const auto eval = run_command(fedcal_model() + " eval --json --text " + heldout + " -m " + model + " --tokenizer " +
                                dir.path("tokenizer.bin") + " --reference " + dir.path("hf") + " --reference-tokenizer " + spm);
  REQUIRE(eval.exit_code == 0);
  const auto result = nlohmann::json::parse(eval.output);
  CHECK(result["tokens"].get<int>() > 500);
  CHECK(result["perplexity"].get<double>() > 1.0);
  CHECK(result["bits_per_byte"].get<double>() > 0.0);
  CHECK(result["reference_perplexity"].get<double>() == doctest::Approx(result["perplexity"].get<double>()));
  CHECK(result["mean_kl"].get<double>() == doctest::Approx(0.0));
  CHECK(result["max_kl"].get<double>() == doctest::Approx(0.0));
  CHECK(result["top1_agreement"].get<double>() == 1.0);
  // Progress goes to stderr, in --json mode too, and as plain lines (no carriage returns) off a terminal.
  // (stdout alone parsed as JSON above; with stderr too, the progress lines appear.)
  const auto with_stderr = run_command(fedcal_model() + " eval --json --text " + heldout + " -m " + model + " --tokenizer " +
                                           dir.path("tokenizer.bin"),
                                       true);
  REQUIRE(with_stderr.exit_code == 0);
  CHECK(with_stderr.output.find("[eval] ") != std::string::npos);
  CHECK(with_stderr.output.find("tokens scored") != std::string::npos);
  CHECK(with_stderr.output.find('\r') == std::string::npos);
  // And a binary file is not text to score.
  testing::write_text(dir.path("binary.txt"), std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10));
  const auto binary = run_command(fedcal_model() + " eval --text " + dir.path("binary.txt") + " -m " + model + " --tokenizer " +
                                      dir.path("tokenizer.bin"),
                                  true);
  CHECK(binary.exit_code == 1);
  CHECK(binary.output.find("binary.txt: not UTF-8 text (byte 0x00 at offset 7)") != std::string::npos);
}

TEST_CASE("fedcal-model keygen refuses to replace a key pair unless --force") {
  testing::ScratchDir dir;
  const std::string keygen = fedcal_model() + " keygen -o " + dir.path("signing.key");
  REQUIRE(run_command(keygen).exit_code == 0);
  const std::string first = read_text_file(dir.path("signing.key.pub"));
  const auto again = run_command(keygen, true);
  CHECK(again.exit_code == 1);
  CHECK(again.output.find("exists: keygen does not replace a key") != std::string::npos);
  CHECK(read_text_file(dir.path("signing.key.pub")) == first);  // untouched
  CHECK(run_command(keygen + " --force").exit_code == 0);
  CHECK(read_text_file(dir.path("signing.key.pub")) != first);
}

TEST_CASE("fedcal-model reports bad usage and bad files with a message and a non-zero exit") {
  testing::ScratchDir dir;
  const std::string model = dir.path("tiny.bin");
  REQUIRE(run_command(fedcal_model() + " synth --preset tiny -o " + model).exit_code == 0);

  auto no_tokenizer = run_command(fedcal_model() + " generate -m " + model + " --prompt hi", true);
  CHECK(no_tokenizer.exit_code == 1);
  CHECK(no_tokenizer.output.find("carries no tokenizer; pass --tokenizer") != std::string::npos);

  auto missing = run_command(fedcal_model() + " inspect -m " + dir.path("nope.bin"), true);
  CHECK(missing.exit_code == 1);
  CHECK(missing.output.find(dir.path("nope.bin") + ": cannot open") != std::string::npos);

  auto unknown = run_command(fedcal_model() + " synth --preset huge -o " + dir.path("x.bin"), true);
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.output.find("unknown preset 'huge'") != std::string::npos);

  CHECK(run_command(fedcal_model() + " --help").exit_code == 0);
  CHECK(run_command(fedcal_model() + " frobnicate").exit_code == 2);  // usage errors exit 2
  CHECK(run_command(fedcal_model() + " synth --preset tiny --seed x -o " + model).exit_code == 2);
}

TEST_CASE("fedcal-model --activations dynamic: a package's INT8 weights or an FP32 model's, no statistics" * doctest::timeout(120)) {
  testing::ScratchDir dir;
  const std::string model = dir.path("tiny.bin");
  REQUIRE(run_command(fedcal_model() + " synth --preset tiny --seed 3 -o " + model).exit_code == 0);
  const std::string spm = testing::train_sentencepiece(dir.root(), testing::tinystories_train().substr(0, 100000), 512);
  testing::llama2c_tokenizer_from_sentencepiece(spm).write(dir.path("tokenizer.bin"));
  const std::string with_model = " -m " + model + " --tokenizer " + dir.path("tokenizer.bin") + " -t 1";
  const std::string text = dir.path("text.txt");
  testing::write_text(text, testing::tinystories_heldout().substr(0, 2000));
  const auto calibrate = run_command(fedcal_model() + " calibrate -q --seq-len 128 --text " + text + " -o " + dir.path("s.stats") + with_model, true);
  REQUIRE_MESSAGE(calibrate.exit_code == 0, calibrate.output);
  REQUIRE(run_command(fedcal_model() + " quantize --recipe plain --per-channel --stats " + dir.path("s.stats") + with_model +
                      " -o " + dir.path("q.pkg") + " 2>/dev/null")
              .exit_code == 0);
  const auto eval = [&](const std::string& options) {
    const auto result = run_command(fedcal_model() + " eval --json --text " + text + " --reference " + model + options);
    REQUIRE(result.exit_code == 0);
    return nlohmann::json::parse(result.output);
  };
  // The FP32 model with its weights quantized now, and the static package's weights with dynamic activations:
  // the same weights (per channel), so the same figures.
  const nlohmann::json from_fp32 = eval(" --activations dynamic --per-channel" + with_model);
  const nlohmann::json from_package = eval(" --activations dynamic -m " + dir.path("q.pkg") + " -t 1");
  const nlohmann::json static_package = eval(" -m " + dir.path("q.pkg") + " -t 1");
  CHECK(from_fp32["mean_kl"].get<double>() > 0.0);
  CHECK(from_fp32["mean_kl"].get<double>() == doctest::Approx(from_package["mean_kl"].get<double>()).epsilon(1e-9));
  CHECK(from_fp32["mean_kl"].get<double>() != doctest::Approx(static_package["mean_kl"].get<double>()).epsilon(1e-3));
  // Refused by name: statistics with dynamic activations, a package of dynamic activations, an unknown mode.
  const auto with_stats = run_command(fedcal_model() + " eval --text " + text + " --activations dynamic --stats " +
                                          dir.path("s.stats") + with_model + " 2>&1",
                                      true);
  CHECK(with_stats.exit_code != 0);
  CHECK(with_stats.output.find("--activations dynamic needs no statistics") != std::string::npos);
  const auto package = run_command(fedcal_model() + " quantize --activations dynamic" + with_model + " -o " + dir.path("d.pkg") + " 2>&1", true);
  CHECK(package.exit_code != 0);
  CHECK(package.output.find("a package holds static activation scales") != std::string::npos);
  CHECK(run_command(fedcal_model() + " eval --text " + text + " --activations sometimes" + with_model + " 2>&1", true).exit_code == 2);
}

}  // namespace
}  // namespace fedcal
