// What the agent runs on, for the coordinator's registry: architecture, ISA features (cpuinfo), cores,
// memory, fedcal version, configured labels.
#pragma once

#include <string>
#include <vector>

namespace fedcal::edge_agent {

struct HardwareProfile {
  std::string arch;
  std::vector<std::string> isa_features;
  unsigned cores = 0;
  uint64_t ram_bytes = 0;
  std::string version;
  std::vector<std::string> labels;
};

HardwareProfile detect_hardware(const std::vector<std::string>& labels);

}  // namespace fedcal::edge_agent
