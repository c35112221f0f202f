#include "edge_agent/hardware_profile.h"

#include <cpuinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <thread>

namespace fedcal::edge_agent {

HardwareProfile detect_hardware(const std::vector<std::string>& labels) {
  HardwareProfile profile;
  utsname name{};
  if (uname(&name) == 0) profile.arch = name.machine;
  profile.cores = std::thread::hardware_concurrency();
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) profile.ram_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
  profile.version = FEDCAL_VERSION;
  profile.labels = labels;
  if (cpuinfo_initialize()) {
#if CPUINFO_ARCH_X86 || CPUINFO_ARCH_X86_64
    const std::pair<bool, const char*> features[] = {
        {cpuinfo_has_x86_sse4_1(), "sse4.1"},   {cpuinfo_has_x86_avx(), "avx"},
        {cpuinfo_has_x86_avx2(), "avx2"},       {cpuinfo_has_x86_fma3(), "fma3"},
        {cpuinfo_has_x86_avx512f(), "avx512f"}, {cpuinfo_has_x86_avx512vnni(), "avx512vnni"}};
#elif CPUINFO_ARCH_ARM64 || CPUINFO_ARCH_ARM
    const std::pair<bool, const char*> features[] = {{cpuinfo_has_arm_neon(), "neon"},
                                                     {cpuinfo_has_arm_neon_fp16_arith(), "fp16arith"},
                                                     {cpuinfo_has_arm_neon_dot(), "dotprod"}};
#else
    const std::pair<bool, const char*> features[] = {{false, ""}};
#endif
    for (const auto& [present, feature] : features) {
      if (present) profile.isa_features.push_back(feature);
    }
  }
  return profile;
}

}  // namespace fedcal::edge_agent
