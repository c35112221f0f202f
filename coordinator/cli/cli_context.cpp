#include "coordinator/cli/cli_context.h"

#include <cstdio>

#include "coordinator/admin_client.h"

namespace fedcal::coordinator {

nlohmann::json CliContext::call(const nlohmann::json& request) const { return admin_request(load().state_dir, request); }

void CliContext::print(const nlohmann::json& reply, const std::string& human) const {
  std::fputs(json ? (reply.dump(2) + "\n").c_str() : human.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace fedcal::coordinator
