// mla/core/arena.hpp — a bump allocator for the activations of one training or decoding step.
//
// A step records the same graph every time, so after the first step the arena knows how much
// it needs: `reset()` folds the blocks it grew into one block of the total size, and every
// later step is served from that block without touching the heap. Allocations share
// ownership of their block (shared_ptr aliasing), so a tensor kept past `reset()` stays valid:
// its block is retired instead of reused.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <vector>

#include "mla/core/device.hpp"

namespace mla {

template <Device D>
class Arena {
 public:
  /// `bytes` of 64-byte aligned memory valid until the last tensor using it is gone.
  std::shared_ptr<std::byte> allocate(std::size_t bytes) {
    bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (blocks_.empty() || used_ + bytes > capacity_) grow(bytes);
    std::shared_ptr<std::byte>& block = blocks_.back().data;
    std::shared_ptr<std::byte> out(block, block.get() + used_);
    used_ += bytes;
    high_water_ += bytes;
    return out;
  }

  /// Starts the next step. Memory still referenced from outside is left to its owners, and
  /// taken back at a later reset once they let go (a loss kept across `clear()` costs one
  /// extra block, not an allocation per step).
  void reset() {
    const std::size_t needed = high_water_;
    high_water_ = 0;
    used_ = 0;
    // Every block nobody else holds is free; keep the largest, if it fits, as the next block.
    for (auto& b : blocks_) retired_.push_back(std::move(b));
    blocks_.clear();
    capacity_ = 0;
    std::size_t best = retired_.size();
    for (std::size_t i = 0; i < retired_.size(); ++i) {
      if (retired_[i].data.use_count() == 1 && retired_[i].size >= needed &&
          (best == retired_.size() || retired_[i].size > retired_[best].size)) {
        best = i;
      }
    }
    if (best != retired_.size()) {
      blocks_.push_back(std::move(retired_[best]));
      capacity_ = blocks_.back().size;
      retired_.erase(retired_.begin() + static_cast<std::ptrdiff_t>(best));
    }
    std::erase_if(retired_, [](const Block& b) { return b.data.use_count() == 1; });
    if (blocks_.empty() && needed > 0) grow(needed);
  }

  /// Bytes handed out since the last reset.
  [[nodiscard]] std::size_t used() const { return high_water_; }
  /// Blocks taken from the device so far: constant in a steady state.
  [[nodiscard]] std::size_t allocations() const { return allocations_; }
  /// Bytes held in blocks.
  [[nodiscard]] std::size_t capacity() const {
    return blocks_.empty() ? 0 : capacity_;
  }

 private:
  void grow(std::size_t at_least) {
    constexpr std::size_t kMinBlock = std::size_t{1} << 20;
    std::size_t size = std::max({at_least, kMinBlock, capacity_ * 2});
    blocks_.push_back(Block{D::allocate(size), size});
    ++allocations_;
    capacity_ = size;
    used_ = 0;
  }

  struct Block {
    std::shared_ptr<std::byte> data;
    std::size_t size;
  };
  std::vector<Block> blocks_;   // this step's; allocation bumps through the last one
  std::vector<Block> retired_;  // earlier steps', some still referenced outside
  std::size_t capacity_ = 0;    // size of the newest block
  std::size_t used_ = 0;        // bytes used in the newest block
  std::size_t high_water_ = 0;  // bytes handed out since reset, over all blocks
  std::size_t allocations_ = 0;
};

}  // namespace mla
