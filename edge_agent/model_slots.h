// The agent's two model slots: the active package (what the device serves) and the previous one (what
// a rollback returns to). Packages live in state_dir/models/<sha256>.fcpkg; the slot pointers are one
// small JSON file replaced atomically (write + fsync + rename), so a crash never leaves a half switch.
#pragma once

#include <string>

namespace fedcal::edge_agent {

class ModelSlots {
 public:
  // A damaged slots.json is set aside and the slots start empty; recovery() then says why.
  explicit ModelSlots(std::string state_dir);
  const std::string& recovery() const { return recovery_; }
  const std::string& active() const { return active_; }
  const std::string& previous() const { return previous_; }
  std::string path(const std::string& sha256) const { return state_dir_ + "/models/" + sha256 + ".fcpkg"; }
  // previous <- active, active <- sha256.
  void activate(const std::string& sha256);
  // active <-> previous; false (and nothing changes) without a previous model.
  bool rollback();

  // Crash accounting for the health check: record_start() at daemon start counts a crash if the last
  // run never reached record_clean_exit(); the count restarts at every switch.
  void record_start();
  void record_clean_exit() const;
  unsigned crashes_since_activation() const { return crashes_; }

 private:
  void save() const;
  std::string state_dir_;
  std::string active_;
  std::string previous_;
  unsigned crashes_ = 0;
  std::string recovery_;
};

}  // namespace fedcal::edge_agent
