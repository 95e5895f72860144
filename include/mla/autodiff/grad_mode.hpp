// mla/autodiff/grad_mode.hpp — switching recording off for inference.
#pragma once

namespace mla {

/// Whether ops record themselves on a tape (per thread, on by default).
class GradMode {
 public:
  static bool enabled() { return flag(); }
  static void set_enabled(bool on) { flag() = on; }

 private:
  static bool& flag() {
    thread_local bool on = true;
    return on;
  }
};

/// While alive, ops record nothing and allocate no gradient buffers (inference mode);
/// dropout is the identity. Restores the previous mode when destroyed.
class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace mla
