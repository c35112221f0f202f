#include "tests/coordinator/forged_report.h"

namespace fedcal::testing {

void forged_local_report(OutgoingMessage& message, int64_t round, std::initializer_list<const char*> labels, uint64_t tokens,
                         double kl, double top1, ForgedSpeeds speeds) {
  auto out = message.body().initLocalReport();
  out.setRoundId(static_cast<uint64_t>(round));
  auto checks = out.initChecks(static_cast<unsigned>(labels.size()));
  unsigned i = 0;
  for (const char* label : labels) {
    checks[i].setLabel(label);
    checks[i].setTokens(tokens);
    checks[i].setMeanKl(kl);
    checks[i].setTop1Agreement(top1);
    checks[i].setMeanNll(2.0);
    checks[i].setReferenceMeanNll(1.9);
    checks[i].setDecodeTokensPerSecond(speeds.tokens_per_second);
    checks[i].setReferenceDecodeTokensPerSecond(speeds.reference_tokens_per_second);
    checks[i].setDecodeSpread(speeds.spread);
    checks[i].setReferenceDecodeSpread(speeds.spread);
    ++i;
  }
}

}  // namespace fedcal::testing
