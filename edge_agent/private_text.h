// The agent's private text: every *.txt file of data_dir (sorted by name), one document per non-empty
// line. The last heldout_fraction of the lines are held out for local checks; calibration reads the
// others, in order - so calibrating agents on shards equals calibrating one machine on their
// concatenation.
#pragma once

#include <string>

namespace fedcal::edge_agent {

struct PrivateText {
  std::string calibration;  // lines joined by '\n'
  std::string heldout;
  size_t calibration_lines = 0;
  size_t heldout_lines = 0;
};

// Throws Error naming the folder if it is missing or holds no text, and naming the file and byte
// offset of the first sequence in a *.txt file that is not UTF-8 (a binary file is not text).
PrivateText read_private_text(const std::string& data_dir, double heldout_fraction);

// Why the agent has no private text to work on ("" if it has some): a cheap look (the folder, its
// *.txt files, the first non-blank byte), for its hello and before it accepts a round.
std::string private_text_problem(const std::string& data_dir);

}  // namespace fedcal::edge_agent
