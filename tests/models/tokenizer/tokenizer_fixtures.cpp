#include "tests/models/tokenizer/tokenizer_fixtures.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "models/tokenizer/bpe.h"
#include "tests/test_support.h"

namespace fedcal::testing {
namespace {

std::unique_ptr<sentencepiece::SentencePieceProcessor> load(const std::string& model_path) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  if (!processor->Load(model_path).ok()) throw std::runtime_error("cannot load " + model_path);
  return processor;
}

}  // namespace

std::string train_sentencepiece(const std::string& folder, const std::string& text, int vocab_size) {
  const std::string input = folder + "/spm_input.txt";
  write_text(input, text);
  const std::string prefix = folder + "/spm";
  const std::string args = "--input=" + input + " --model_prefix=" + prefix + " --vocab_size=" + std::to_string(vocab_size) +
                           " --model_type=bpe --byte_fallback=true --character_coverage=0.9995"
                           " --normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=true"
                           " --split_digits=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2"
                           " --minloglevel=2";
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) throw std::runtime_error("sentencepiece training failed: " + status.ToString());
  return prefix + ".model";
}

Llama2cTokenizer llama2c_tokenizer_from_sentencepiece(const std::string& model_path) {
  auto owned = load(model_path);
  auto& processor = *owned;
  std::vector<TokenizerPiece> pieces;
  for (int id = 0; id < processor.GetPieceSize(); ++id) {
    std::string piece = processor.IdToPiece(id);
    if (id == processor.bos_id()) piece = "\n<s>\n";
    if (id == processor.eos_id()) piece = "\n</s>\n";
    pieces.push_back({visible_spaces_to_spaces(piece), processor.GetScore(id)});
  }
  return Llama2cTokenizer(std::move(pieces));
}

std::string hf_tokenizer_json_from_sentencepiece(const std::string& model_path) {
  auto owned = load(model_path);
  auto& processor = *owned;
  nlohmann::json vocab = nlohmann::json::object();
  std::map<std::string, int> ids;
  for (int id = 0; id < processor.GetPieceSize(); ++id) {
    vocab[processor.IdToPiece(id)] = id;
    ids[processor.IdToPiece(id)] = id;
  }
  struct Merge {
    float score;
    int merged_id, left_id;
    std::string left, right;
  };
  std::vector<Merge> merges;
  for (const auto& [piece, id] : ids) {
    if (processor.IsControl(id) || processor.IsByte(id) || processor.IsUnknown(id)) continue;
    for (size_t split = 1; split < piece.size(); ++split) {
      const std::string left = piece.substr(0, split), right = piece.substr(split);
      if (ids.count(left) && ids.count(right)) merges.push_back({processor.GetScore(id), id, ids[left], left, right});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.merged_id != b.merged_id) return a.merged_id < b.merged_id;
    return a.left_id < b.left_id;
  });
  nlohmann::json merge_list = nlohmann::json::array();
  for (const Merge& merge : merges) merge_list.push_back(merge.left + " " + merge.right);

  nlohmann::json root = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}}},
      {"pre_tokenizer", nullptr},
      {"model",
       {{"type", "BPE"},
        {"byte_fallback", true},
        {"fuse_unk", true},
        {"unk_token", "<unk>"},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
  return root.dump();
}

}  // namespace fedcal::testing
