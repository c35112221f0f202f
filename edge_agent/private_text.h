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

// Throws Error naming the folder if it is missing or holds no text.
PrivateText read_private_text(const std::string& data_dir, double heldout_fraction);

}  // namespace fedcal::edge_agent
