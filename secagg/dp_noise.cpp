#include "secagg/dp_noise.h"

#include <limits>
#include <random>
#include <vector>

#include "secagg/crypto.h"

namespace fedcal {
namespace {

// A UniformRandomBitGenerator over AES-256-CTR keystream blocks, each keyed by HKDF(seed, block number).
class CtrBits {
 public:
  using result_type = uint64_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<uint64_t>::max(); }
  CtrBits() : seed_(random_key()) {}
  result_type operator()() {
    if (next_ == buffer_.size()) refill();
    return buffer_[next_++];
  }

 private:
  void refill() {
    uint8_t info[8];
    for (int i = 0; i < 8; ++i) info[i] = static_cast<uint8_t>(block_ >> (8 * i));
    ++block_;
    std::fill(buffer_.begin(), buffer_.end(), 0);
    apply_prg_mask(hkdf_sha256(seed_, "fedcal dp noise", info), 1, buffer_);
    next_ = 0;
  }
  Key32 seed_;
  uint64_t block_ = 0;
  std::vector<uint64_t> buffer_ = std::vector<uint64_t>(4096);
  size_t next_ = 4096;
};

}  // namespace

void add_skellam_noise(std::span<uint64_t> values, double stddev) {
  if (!(stddev > 0)) return;
  CtrBits bits;
  std::poisson_distribution<int64_t> poisson(stddev * stddev / 2);
  for (uint64_t& value : values) {
    const int64_t noise = poisson(bits) - poisson(bits);
    value += static_cast<uint64_t>(noise);
  }
}

}  // namespace fedcal
