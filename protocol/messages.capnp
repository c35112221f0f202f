# Every message between the coordinator and the edge agents. One framing on ZeroMQ multipart messages
# (protocol/wire.h): [routing id, added by ROUTER] ["fedcal/1"] [this Envelope, unpacked Cap'n Proto].
@0xd3b3b0a3790cca7c;

$import "/capnp/c++.capnp".namespace("fedcal::wire");

const protocolVersion :UInt16 = 1;
# Bumped on any incompatible change; a peer with another version gets an error and nothing else.

struct Envelope {
  version @0 :UInt16;
  # The sender's protocolVersion.

  sequence @1 :UInt64;
  # Strictly increasing per sender (agents start from the clock in microseconds, so a restarted agent
  # still moves forward); the coordinator refuses a sequence it has seen as a replay.

  body :union {
    error @2 :ErrorReply;
    enroll @3 :Enroll;
    enrolled @4 :Enrolled;
    hello @5 :Hello;
    heartbeat @6 :Heartbeat;
    roundAnnounce @7 :RoundAnnounce;
    chunkRequest @8 :ChunkRequest;
    chunk @9 :Chunk;
    join @10 :Join;
    roundKeys @11 :RoundKeys;
    shareKeys @12 :ShareKeys;
    sharesForYou @13 :SharesForYou;
    maskedInput @14 :MaskedInput;
    unmaskRequest @15 :UnmaskRequest;
    unmaskShares @16 :UnmaskShares;
    roundResult @17 :RoundResult;
    localReport @18 :LocalReport;
    roundAbort @19 :RoundAbort;
    welcome @20 :Welcome;
    modelActivate @21 :ModelActivate;
    activationReport @22 :ActivationReport;
    modelRollback @23 :ModelRollback;
    roundLeave @24 :RoundLeave;
    roundAck @25 :RoundAck;
    shareOpenRequest @26 :ShareOpenRequest;
    shareOpening @27 :ShareOpening;
  }
}

struct ErrorReply {
  code @0 :Code;
  # What kind of failure.
  message @1 :Text;
  # For a person: what was wrong, naming the field.
  nextSequence @2 :UInt64;
  # With `replayed`: the lowest sequence number the coordinator accepts from this key now. An agent
  # whose counter fell behind (a device clock stepped back, or another process with its key ran
  # ahead) continues from there instead of being locked out. 0: not given (older coordinators).
  enum Code {
    badMessage @0;      # undecodable or a field out of range
    versionMismatch @1;
    notEnrolled @2;     # the sender's CURVE key is not (or no longer) enrolled
    badToken @3;        # enrollment token unknown, used or expired
    unexpected @4;      # valid but not expected now (wrong round or stage)
    replayed @5;        # a sequence number seen before
    internal @6;
    notFound @7;        # e.g. a model chunk of an unknown artifact
    damaged @8;         # from an agent: a package on the device failed its hash check (it fetches it again)
  }
}

struct Enroll {
  token @0 :Text;
  # The one-time token from `fedcal-coordinator token create`; the sender's CURVE key is enrolled.
  name @1 :Text;
  # A human-readable name for the agent (host name by default).
}

struct Enrolled {
  agentId @0 :UInt64;
  # The registry id of the enrolled agent.
  signingKey @1 :Data;
  # The coordinator's Ed25519 public key (32 bytes): agents refuse packages it did not sign.
}

struct HardwareProfile {
  arch @0 :Text;
  # "x86_64", "aarch64", ...
  isaFeatures @1 :List(Text);
  # From cpuinfo, e.g. "avx2", "avx512vnni", "neon", "dotprod".
  cores @2 :UInt32;
  # Logical cores.
  ramBytes @3 :UInt64;
  # Physical memory.
  version @4 :Text;
  # fedcal version of the agent.
  labels @5 :List(Text);
  # Device groups from the agent's config ("pi4", "jetson-nano", ...).
}

struct Hello {
  name @0 :Text;
  # The agent's name.
  profile @1 :HardwareProfile;
  # What it runs on.
  activeModel @2 :Text;
  # SHA-256 of the package in the agent's active slot ("" if none).
  crashesSinceActivation @3 :UInt32;
  # Times the agent did not exit cleanly since that package became active.
  unavailable @4 :Text;
  # Why the agent cannot take part in rounds now ("" if it can), e.g. no private text.
  roundId @5 :UInt64;
  # The round the agent is taking part in (0: none; e.g. it restarted and lost its part).
  resendsRoundMessages @6 :Bool;
  # The agent re-sends each round message until a roundAck says it arrived (and answers a stage
  # request it already answered by sending its answer again). False from older agents: they get no
  # roundAck, which they could not decode.
}

struct Welcome {
  agentId @0 :UInt64;
  # The registry id the coordinator knows this agent by.
  heartbeatIntervalMs @1 :UInt32;
  # How often the agent must heartbeat; it is declared offline after a few missed ones.
  signingKey @2 :Data;
  # The coordinator's Ed25519 public key (32 bytes).
  acksRoundMessages @3 :Bool;
  # The coordinator answers every round message with a roundAck: the agent re-sends one until then.
  packageUrl @4 :Text;
  # Where packages are served over HTTP by SHA-256 (PACKAGE_URL<sha256>.fcpkg, range requests: an
  # origin or a cache, deploy/nginx/); empty: chunks from the coordinator. An agent's own
  # package_url wins; on any HTTP failure the agent falls back to chunks.
}

struct Heartbeat {
  busy @0 :Bool;
  # The agent is computing (calibration or evaluation).
}

struct RoundConfig {
  roundId @0 :UInt64;
  # The coordinator's round id.
  modelSha256 @1 :Text;
  # The FP32 package to calibrate (hex SHA-256 of the file).
  modelBytes @2 :UInt64;
  # Its size.
  sequences @3 :UInt32;
  # Calibration sequences (lines of private text) per agent, at most.
  seqLen @4 :UInt32;
  # Tokens per sequence at most.
  mantissaBits @5 :UInt8;
  # Histogram layout (models/activation_histogram.h): every agent's vector has the same length.
  minExponent @6 :Int16;
  # Histogram layout: lowest octave.
  maxExponent @7 :Int16;
  # Histogram layout: one past the highest octave.
  dpNoiseStddev @8 :Float64;
  # Standard deviation of the integer (Skellam) noise each agent adds to every count; 0: no noise.
  minSurvivors @9 :UInt32;
  # The aggregate of fewer agents is never unmasked.
  importance @10 :Bool;
  # Also sum squared activations per linear-input channel (models/quant/importance.h), appended to the
  # contribution vector after the counts. An agent too old to know the field sends a shorter vector,
  # which the coordinator refuses by its length.
  blockChecks @11 :Bool;
  # Also run the fleet package's weights with activations quantized per block of 32 channels of each
  # token (the fine-grained mode) in the local check, reported as "dynamic-blocks". An agent too old to
  # know the field leaves the check out.
}

struct RoundAnnounce {
  config @0 :RoundConfig;
  # What to compute.
}

struct ChunkRequest {
  sha256 @0 :Text;
  # Artifact to download (hex SHA-256 of the file).
  offset @1 :UInt64;
  # First byte wanted.
  length @2 :UInt32;
  # Bytes wanted; the coordinator caps it.
}

struct Chunk {
  sha256 @0 :Text;
  # The artifact.
  offset @1 :UInt64;
  # Where `data` starts.
  totalBytes @2 :UInt64;
  # The artifact's size.
  data @3 :Data;
  # The bytes.
}

struct AgentKeys {
  index @0 :UInt32;
  # Participant index in the round (order of joining).
  cipherPublic @1 :Data;
  # X25519 public key (32 bytes) the shares to this agent are encrypted with.
  maskPublic @2 :Data;
  # X25519 public key (32 bytes) of the pairwise masks.
}

struct Join {
  roundId @0 :UInt64;
  # The round joined: the agent's statistics are ready.
  cipherPublic @1 :Data;
  # Secure aggregation stage 0: X25519 public key for share encryption (32 bytes).
  maskPublic @2 :Data;
  # Secure aggregation stage 0: X25519 public key for pairwise masks (32 bytes).
  vectorLength @3 :UInt64;
  # Length of the statistics vector it will send (checked against the model).
  narrowLanes @4 :Bool;
  # The agent can mask in 32-bit lanes (roundKeys.laneBits = 32); an older agent leaves it false and
  # the round then uses 64-bit lanes for everyone.
  ephemeralShareKeys @5 :Bool;
  # The agent can seal each share under an ephemeral key and open one when a complaint names it
  # (roundKeys.ephemeralShareKeys); an older agent leaves it false, and the round's complaints then
  # cannot be checked (the accused is excluded, as before).
  neighbourSurvivors @6 :Bool;
  # The agent can unmask from a survivor list of only its neighbours and itself, with the round's
  # survivor count beside it (unmaskRequest.survivorCount); an older agent gets the whole list.
  sealsSelfMaskShares @7 :Bool;
  # The agent can take part in secure aggregation per group at its relay: it seals its shares of
  # survivors' self-mask seeds to the coordinator's round key (unmaskRequest.coordinatorKey). A round
  # with relay groups runs them only when every participant can.
}

struct RoundKeys {
  roundId @0 :UInt64;
  # The round.
  index @1 :UInt32;
  # The recipient's participant index.
  participants @2 :UInt32;
  # n.
  neighbours @3 :UInt32;
  # Graph degree k.
  threshold @4 :UInt32;
  # Shamir threshold t of k + 1 holders.
  graphSeed @5 :Data;
  # 32 bytes: where the agents sit on the neighbour graph.
  vectorLength @6 :UInt64;
  # Values per masked vector.
  keys @7 :List(AgentKeys);
  # The advertised keys of the recipient's neighbours.
  laneBits @8 :UInt8;
  # Bits per value of the masked vectors and of their arithmetic: 64, or 32 when the round's
  # bit-width budget keeps every sum below 2^31 (0, from an older coordinator: 64).
  ephemeralShareKeys @9 :Bool;
  # Every share is sealed under an ephemeral X25519 key, its public half before the ciphertext
  # (every participant said it can): a complaint is checked by opening the disputed share.
  groupId @10 :UInt64;
  # Non-zero: this secure aggregation is one group of the round, run by the agent's relay (indices
  # and the graph are the group's); the agent seals its self-mask shares to the coordinator.
}

struct EncryptedShare {
  from @0 :UInt32;
  # Owner of the secrets (participant index).
  to @1 :UInt32;
  # Holder.
  ciphertext @2 :Data;
  # AES-256-GCM: nonce || shares of the self-mask seed and the mask key || tag; with
  # roundKeys.ephemeralShareKeys preceded by the 32-byte public key of the ephemeral X25519 key it
  # was sealed under.
}

struct ShareKeys {
  roundId @0 :UInt64;
  # The round.
  shares @1 :List(EncryptedShare);
  # One per neighbour.
  selfMaskCommitment @2 :Data;
  # 32 bytes: HKDF of the agent's self-mask seed (secagg/secure_aggregation.h), so the coordinator can
  # check the seed it rebuilds and name a holder that revealed a wrong share. Empty from older agents.
}

struct SharesForYou {
  roundId @0 :UInt64;
  # The round.
  shares @1 :List(EncryptedShare);
  # The shares neighbours sent to the recipient.
}

struct MaskedInput {
  roundId @0 :UInt64;
  # The round.
  values @1 :Data;
  # The masked statistics vector, little-endian, 8 or 4 bytes per value (roundKeys.laneBits).
  badShares @2 :List(UInt32);
  # A complaint instead of a masked input (values empty): the participants whose shares to this
  # agent do not decrypt. The coordinator excludes them and sends sharesForYou again.
  maskedWith @3 :List(UInt32);
  # The participants whose pairwise masks the values carry (the senders of the sharesForYou they
  # answer), so a masked input that predates an exclusion is told apart. Empty from older agents.
}

struct UnmaskRequest {
  roundId @0 :UInt64;
  # The round.
  survivors @1 :List(UInt32);
  # Participants whose masked input arrived: all of them, or (survivorCount > 0) only the recipient
  # and those of its neighbours, which is all it needs (each survivor would get O(n) entries).
  survivorCount @2 :UInt32;
  # How many survivors the round has in all, when `survivors` lists only the recipient's neighbours;
  # 0: `survivors` is the whole list.
  coordinatorKey @3 :Data;
  # In a relay group (roundKeys.groupId): the coordinator's X25519 public key for this round (32
  # bytes). The agent reveals its shares of survivors' self-mask seeds sealed to it
  # (unmaskShares.sealedSelfMaskShares), so the relay never holds them.
  coordinatorKeySignature @4 :Data;
  # The coordinator's Ed25519 signature (its signing key, from the welcome) of "fedcal-group-key-v1",
  # the round id, the group id (little-endian 64-bit each) and coordinatorKey: a relay cannot put a
  # key of its own there.
}

struct RevealedShare {
  owner @0 :UInt32;
  # Whose secret.
  kind @1 :UInt8;
  # 0: self-mask seed (owner survived), 1: mask private key (owner dropped).
  x @2 :UInt8;
  # Shamir evaluation point.
  value @3 :Data;
  # 32 bytes.
}

struct UnmaskShares {
  roundId @0 :UInt64;
  # The round.
  shares @1 :List(RevealedShare);
  # One per owner whose shares the sender holds; in a relay group only the mask-key shares of
  # dropped owners.
  sealedSelfMaskShares @2 :Data;
  # In a relay group: the sender's shares of survivors' self-mask seeds sealed to
  # unmaskRequest.coordinatorKey (secagg/group_unmasking.h); the relay forwards them unopened.
}

struct ModelToCheck {
  label @0 :Text;
  # "fleet" (calibrated on the fleet) or "public" (calibrated on the coordinator's public text).
  sha256 @1 :Text;
  # The signed INT8 package.
  bytes @2 :UInt64;
  # Its size.
}

struct RoundResult {
  roundId @0 :UInt64;
  # The round.
  models @1 :List(ModelToCheck);
  # Packages to evaluate on the agent's held-out text against FP32.
}

struct ModelCheck {
  label @0 :Text;
  # Which package.
  tokens @1 :UInt64;
  # Held-out tokens scored.
  meanKl @2 :Float64;
  # Mean KL(FP32 || INT8), nats per token.
  top1Agreement @3 :Float64;
  # Fraction of tokens where the argmaxes agree.
  meanNll @4 :Float64;
  # INT8 mean negative log-likelihood, nats per token.
  referenceMeanNll @5 :Float64;
  # FP32 mean negative log-likelihood.
  decodeTokensPerSecond @6 :Float64;
  # INT8 batch-1 decoding speed.
  referenceDecodeTokensPerSecond @7 :Float64;
  # FP32 batch-1 decoding speed on the same device.
  decodeSpread @8 :Float64;
  # Both speeds are the median of several timed runs; this is (fastest - slowest) / median of the
  # INT8 runs (0 from agents that predate it).
  referenceDecodeSpread @9 :Float64;
  # The same for the FP32 runs.
}

struct LocalReport {
  roundId @0 :UInt64;
  # The round.
  checks @1 :List(ModelCheck);
  # One per package in RoundResult.
  error @2 :Text;
  # Non-empty if the agent could not check (the reason).
}

struct RoundLeave {
  roundId @0 :UInt64;
  # The round the agent leaves (or, with cause notInRound, does not hold).
  cause @1 :Cause;
  # What kind of problem, so the coordinator can count and filter them.
  reason @2 :Text;
  # The agent's own words (its error message).

  enum Cause {
    other @0;
    noPrivateText @1;     # no text to calibrate or check on
    diskFull @2;          # a download or the result does not fit
    modelDoesNotLoad @3;  # the package does not verify or load
    outOfMemory @4;
    notInRound @5;        # the agent restarted and no longer holds the round
    shuttingDown @6;      # the agent is stopping
  }
}

struct ShareOpenRequest {
  roundId @0 :UInt64;
  # The round.
  holder @1 :UInt32;
  # A complaint says the recipient's share to this holder (participant index) does not decrypt: the
  # coordinator asks for the ephemeral secret it was sealed under, to check. An agent answers once
  # per round at most.
}

struct ShareOpening {
  roundId @0 :UInt64;
  # The round.
  holder @1 :UInt32;
  # As asked.
  ephemeralSecret @2 :Data;
  # The X25519 private key (32 bytes) the share to that holder was sealed under: it opens that one
  # share. The complaint was false if the share opens and is well formed, else the sender was wrong.
}

struct RoundAck {
  roundId @0 :UInt64;
  # The round.
  received @1 :Text;
  # The kind of round message received ("join", "shareKeys", "maskedInput", "unmaskShares",
  # "localReport"): the agent stops re-sending it. Sent for duplicates and late arrivals too (the
  # coordinator has what it needs, or no longer needs it).
}

struct RoundAbort {
  roundId @0 :UInt64;
  # The round that failed.
  reason @1 :Text;
  # Why.
}

struct ModelActivate {
  rolloutId @0 :UInt64;
  # The rollout this activation belongs to.
  sha256 @1 :Text;
  # The signed package to download, verify, self-test and switch to.
  bytes @2 :UInt64;
  # Its size.
  referenceSha256 @3 :Text;
  # The FP32 package it was quantized from ("" if the coordinator does not know it): the agent checks
  # the new package against it, so a first rollout is gated and one over a broken model can repair it.
  referenceBytes @4 :UInt64;
  # Its size.
}

struct ModelRollback {
  rolloutId @0 :UInt64;
  # The rollout being rolled back: the agent switches back to its previous slot ...
  sha256 @1 :Text;
  # ... only if this package (the rollout's) is the active one: an agent that never switched to it
  # stays where it is, and one still downloading or self-testing it stops. ("" from older
  # coordinators: switch back regardless.)
}

struct ActivationReport {
  rolloutId @0 :UInt64;
  # The rollout.
  sha256 @1 :Text;
  # The package now active (after an activation or a rollback).
  activated @2 :Bool;
  # The new package passed verification and self-test and is active.
  rolledBack @3 :Bool;
  # This report answers a rollback order.
  error @4 :Text;
  # Why activation failed ("" if it did not).
  meanKl @5 :Float64;
  # Mean KL(previous model || new model) on the agent's held-out text (0 without a previous model).
  top1Agreement @6 :Float64;
  # Top-1 agreement with the previous model.
  tokensPerSecond @7 :Float64;
  # Decoding speed of the new model.
  previousTokensPerSecond @8 :Float64;
  # Decoding speed of the previous model (0 without one).
  crashes @9 :UInt32;
  # Crashes since the active package became active.
  tokensPerSecondSpread @10 :Float64;
  # Both speeds are the median of several timed runs; this is (fastest - slowest) / median of the new
  # model's runs (0 from agents that predate it).
  previousTokensPerSecondSpread @11 :Float64;
  # The same for the previous model's runs.
  referenceChecked @12 :Bool;
  # The new package was checked against the FP32 package it was quantized from (modelActivate's reference).
  referenceKl @13 :Float64;
  # Mean KL(FP32 original || new model) on the agent's held-out text.
  referenceTop1Agreement @14 :Float64;
  # Top-1 agreement with the FP32 original.
}

# The frames between a relay and the coordinator for secure aggregation per group
# (protocol/relay_frames.h, secagg/relay_group_frames.h): not Envelopes, each a message of its own.

struct RelayGroupMember {
  index @0 :UInt32;
  # The participant's index in its group.
  agentKey @1 :Text;
  # Its CURVE public key (Z85, 40 characters).
  route @2 :Data;
  # Its routing id at the relay.
  cipherPublic @3 :Data;
  # Its advertised keys (join), 32 bytes each.
  maskPublic @4 :Data;
  neighbourSurvivors @5 :Bool;
  # It can unmask from its neighbours' part of the survivor list.
}

struct RelayGroupStart {
  roundId @0 :UInt64;
  groupId @1 :UInt64;
  # The group, unique in the round (from 1).
  neighbours @2 :UInt32;
  # The group's graph degree k and Shamir threshold t.
  threshold @3 :UInt32;
  minSurvivors @4 :UInt32;
  # The group's sum of fewer agents is never opened.
  graphSeed @5 :Data;
  vectorLength @6 :UInt64;
  laneBits @7 :UInt8;
  ephemeralShareKeys @8 :Bool;
  members @9 :List(RelayGroupMember);
  # By index, from 0.
  coordinatorKey @10 :Data;
  # The round's X25519 key the self-mask shares are sealed to, and its signature (unmaskRequest).
  coordinatorKeySignature @11 :Data;
  stageTimeoutMs @12 :UInt32;
  # How long each of the group's stages waits for its members.
}

struct RelayGroupSealed {
  index @0 :UInt32;
  # The revealer (or, in commitments, the owner).
  data @1 :Data;
}

struct RelayGroupResult {
  roundId @0 :UInt64;
  groupId @1 :UInt64;
  failure @2 :Text;
  # Why the group has no sum ("" when it has one).
  shared @3 :List(UInt32);
  # U2: the members whose shares went out.
  survivors @4 :List(UInt32);
  # U3: whose masked inputs are in the sum.
  commitments @5 :List(RelayGroupSealed);
  # Each survivor's commitment to its self-mask seed (32 bytes).
  sealed @6 :List(RelayGroupSealed);
  # Each revealer's sealed self-mask shares.
  selfMaskedSum @7 :Data;
  # The survivors' sum with pairwise masks removed, little-endian, laneBits / 8 bytes per value.
  laneBits @8 :UInt8;
}
