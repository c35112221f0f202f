#include "models/tokenizer/tokenizer.h"

namespace fedcal {

std::string Tokenizer::decode_all(const std::vector<int>& tokens) const {
  std::string text;
  int previous = -1;
  for (int token : tokens) {
    if (token == bos_id() || token == eos_id()) {
      previous = token;
      continue;
    }
    text += decode(previous, token);
    previous = token;
  }
  return text;
}

}  // namespace fedcal
