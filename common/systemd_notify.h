// systemd's service notifications (sd_notify(3)) without libsystemd: datagrams to the unix socket in
// $NOTIFY_SOCKET. With Type=notify the unit is "started" only once the daemon says READY=1 (its
// sockets are bound and its state recovered), and with WatchdogSec= systemd restarts a daemon whose
// event loop stops sending WATCHDOG=1. Without $NOTIFY_SOCKET (not under systemd) it does nothing.
#pragma once

#include <cstdint>
#include <string>

namespace fedcal {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment.
  SystemdNotifier();

  void ready() const { send("READY=1"); }
  void stopping() const { send("STOPPING=1"); }
  void status(const std::string& text) const { send("STATUS=" + text); }
  // WATCHDOG=1 when half the watchdog interval has passed since the last one; call from the event
  // loop (a loop that hangs stops the pings, and systemd restarts the daemon).
  void keep_alive(int64_t monotonic_ms);
  int64_t watchdog_interval_ms() const { return watchdog_interval_ms_; }

 private:
  void send(const std::string& message) const;

  std::string socket_path_;  // "" when not under systemd; a leading '@' is an abstract socket
  int64_t watchdog_interval_ms_ = 0;
  int64_t last_ping_ms_ = -1;
};

}  // namespace fedcal
