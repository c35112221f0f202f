#include "tests/coordinator/round_fixture.h"

#include <chrono>
#include <thread>

#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "secagg/secagg_wire.h"

namespace fedcal::coordinator {

CalibrationStats agent_statistics(const ModelRecord& model, const RoundSettings& settings) {
  LoadedModel loaded = load_model(model.path);
  auto tokenizer = load_tokenizer(loaded, std::nullopt);
  XnnRuntime runtime(1);
  Transformer transformer(loaded.model, runtime);
  CalibrationOptions options;
  options.sequences = settings.sequences_per_agent;
  options.seq_len = settings.seq_len;
  const std::string text = testing::tinystories_train().substr(0, 4000);
  return calibrate(transformer, *tokenizer, text, model_fingerprint(loaded.model), options);
}

void FakeAgent::join(Round& round, int64_t round_id) const {
  OutgoingMessage message;
  auto join = message.body().initJoin();
  join.setRoundId(static_cast<uint64_t>(round_id));
  const AdvertisedKeys keys = client.advertise();
  join.setCipherPublic(as_data(keys.cipher_public));
  join.setMaskPublic(as_data(keys.mask_public));
  join.setVectorLength(input.size());
  join.setNarrowLanes(true);
  join.setNeighbourSurvivors(true);
  deliver(round, message);
}

bool FakeAgent::answer(testing::FakeHost& host, Round& round, const std::string& kind) {
  const auto received = host.take(id, kind);
  if (received.empty()) return false;
  const auto body = received.back().body();
  OutgoingMessage message;
  if (kind == "roundKeys") {
    const auto keys = body.getRoundKeys();
    const SecAggConfig config = read_round_keys_config(keys, 3);
    const auto shares = client.share_keys(config, keys.getIndex(), read_round_keys_neighbours(keys));
    auto out = message.body().initShareKeys();
    out.setRoundId(config.round_id);
    write_encrypted_shares(shares, out.initShares(static_cast<unsigned>(shares.size())));
  } else if (kind == "sharesForYou") {
    const auto delivery = body.getSharesForYou();
    const auto masked = client.mask_input(input, read_encrypted_shares(delivery.getShares(), "sharesForYou"));
    auto out = message.body().initMaskedInput();
    out.setRoundId(delivery.getRoundId());
    const uint32_t lanes = client.config().lane_bits;
    write_lane_vector(masked, lanes, out.initValues(static_cast<unsigned>(masked.size() * lanes / 8)));
  } else if (kind == "unmaskRequest") {
    const auto request = body.getUnmaskRequest();
    std::vector<uint32_t> survivors;
    for (const uint32_t survivor : request.getSurvivors()) survivors.push_back(survivor);
    REQUIRE(request.getSurvivorCount() > 0);  // the neighbours' part of the list, with the count
    const auto revealed = client.unmask(survivors, request.getSurvivorCount());
    auto out = message.body().initUnmaskShares();
    out.setRoundId(request.getRoundId());
    write_revealed_shares(revealed, out.initShares(static_cast<unsigned>(revealed.size())));
  } else if (kind == "roundResult") {
    const auto result = body.getRoundResult();
    auto out = message.body().initLocalReport();
    out.setRoundId(result.getRoundId());
    auto checks = out.initChecks(result.getModels().size());
    for (unsigned i = 0; i < result.getModels().size(); ++i) {
      checks[i].setLabel(result.getModels()[i].getLabel());
      checks[i].setTokens(100);
      checks[i].setMeanKl(0.01);
      checks[i].setTop1Agreement(0.9);
      checks[i].setMeanNll(2.0);
      checks[i].setReferenceMeanNll(1.9);
      checks[i].setDecodeTokensPerSecond(200);
      checks[i].setReferenceDecodeTokensPerSecond(100);
    }
  } else {
    FAIL("no answer for " << kind);
  }
  deliver(round, message);
  return true;
}

void FakeAgent::deliver(Round& round, OutgoingMessage& message) const {
  const DecodedEnvelope envelope = testing::decoded(message);
  round.handle(id, envelope.envelope());
}

RoundFixture::RoundFixture(int count) {
  ids = host.enroll(count);
  model = host.import_project_model();
  settings.model_id = model.id;
  settings.sequences_per_agent = 2;
  settings.seq_len = 16;
  settings.min_agents = 3;
  const std::vector<uint64_t> input = contribution_vector(agent_statistics(model, settings));
  for (const int64_t id : ids) agents.push_back({id, input, SecAggClient()});
}

std::unique_ptr<Round> RoundFixture::start() {
  auto round = Round::start(host, settings, model, load_round_model(model));
  for (const int64_t id : ids) CHECK(host.take(id, "roundAnnounce").size() == (host.is_online(id) ? 1u : 0u));
  return round;
}

int RoundFixture::answer(Round& round, const std::string& kind, const std::set<int64_t>& which) {
  int answered = 0;
  for (FakeAgent& agent : agents) {
    if (which.empty() || which.count(agent.id)) answered += agent.answer(host, round, kind) ? 1 : 0;
  }
  return answered;
}

void RoundFixture::tick(Round& round) {
  round.tick();
  for (int i = 0; i < 5000 && round.aggregating(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    round.tick();
  }
}

void RoundFixture::wait_for_quantization(Round& round) {
  for (int i = 0; i < 600 && round.stage() == RoundStage::kQuantizing; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    round.tick();
  }
}

void RoundFixture::advance_to(Round& round, RoundStage target) {
  if (round.stage() == RoundStage::kCollecting && target != RoundStage::kCollecting) {
    for (const FakeAgent& agent : agents) agent.join(round, round.id());
    round.tick();
  }
  const std::pair<RoundStage, const char*> steps[] = {
      {RoundStage::kSharing, "roundKeys"}, {RoundStage::kMasking, "sharesForYou"}, {RoundStage::kUnmasking, "unmaskRequest"}};
  for (const auto& step : steps) {
    if (round.stage() == target) return;
    REQUIRE(round.stage() == step.first);
    answer(round, step.second);
    tick(round);
  }
  if (round.stage() != target) wait_for_quantization(round);
  REQUIRE(round.stage() == target);
}

}  // namespace fedcal::coordinator
