#include "secagg/secret_rebuild.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"

namespace fedcal {
namespace {

constexpr size_t kMaxSubsets = 4096;

}  // namespace

uint8_t holder_x(const std::vector<uint32_t>& neighbours, uint32_t owner, uint32_t holder) {
  const auto below = static_cast<size_t>(std::lower_bound(neighbours.begin(), neighbours.end(), holder) - neighbours.begin());
  if (holder != owner && (below == neighbours.size() || neighbours[below] != holder))
    fail("agent {} holds no share of agent {}", holder, owner);
  return static_cast<uint8_t>(below + (owner < holder ? 1 : 0) + 1);
}

std::optional<VerifiedSecret> verified_combine(const std::vector<ShamirShare>& shares, size_t t,
                                               const std::function<bool(const Bytes&)>& verify) {
  const size_t m = shares.size();
  if (t == 0 || m < t) return std::nullopt;
  std::vector<size_t> pick(t);
  std::iota(pick.begin(), pick.end(), size_t{0});
  for (size_t tries = 0; tries < kMaxSubsets; ++tries) {
    std::vector<ShamirShare> subset;
    for (const size_t i : pick) subset.push_back(shares[i]);
    Bytes secret = shamir_combine(subset, static_cast<int>(t));
    if (verify(secret)) {
      VerifiedSecret out{std::move(secret), {}};
      std::vector<uint8_t> xs;
      for (const ShamirShare& share : shares) xs.push_back(share.x);
      const std::vector<Bytes> expected = shamir_interpolate(subset, static_cast<int>(t), xs);
      for (size_t i = 0; i < m; ++i) {
        if (expected[i] != shares[i].value) out.wrong.push_back(i);
      }
      return out;
    }
    // The next t-subset of m in lexicographic order.
    size_t k = t;
    while (k > 0 && pick[k - 1] == m - t + (k - 1)) --k;
    if (k == 0) return std::nullopt;
    ++pick[k - 1];
    for (size_t j = k; j < t; ++j) pick[j] = pick[j - 1] + 1;
  }
  return std::nullopt;
}

Key32 key_from_bytes(const Bytes& bytes) {
  Key32 key{};
  std::copy_n(bytes.begin(), std::min(bytes.size(), key.size()), key.begin());
  return key;
}

}  // namespace fedcal
