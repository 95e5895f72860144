// mla/train/train_state.hpp — a training run's state inside its checkpoint, so that a stopped
// run resumes bit-identically.
//
// Beside the model tensors (docs/design.md §5) a training checkpoint holds:
//   optim.m, optim.v     F32 [n]  AdamW's moments, laid out as ParameterStore::values() (n
//                                 elements, padding included)
//   optim.step           I64 []   AdamW's update count (bias correction)
//   train.step           I64 []   steps completed (the data position and the schedule position:
//                                 batches.hpp draws windows from the step count alone)
//   train.seed           I64 []   the run's seed (windows, dropout)
//   train.tokens         I64 []   training tokens consumed
//   train.bad_steps      I64 []   updates skipped for a non-finite loss or gradient norm
//   train.bad_streak     I64 []   of which consecutive, ending at train.step
// A model loader ignores these names. load_training_checkpoint checks the model as
// load_parameters does, then every one of these (dtype, shape, range), names the first tensor
// that is missing or wrong, and leaves the model and optimizer as they were when it refuses.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mla/io/checkpoint.hpp"
#include "mla/io/safetensors.hpp"
#include "mla/train/adamw.hpp"

namespace mla {

/// Where a run stands; every field is stored as an I64 train.* tensor.
struct TrainProgress {
  std::int64_t step = 0;        // steps completed
  std::int64_t seed = 0;        // the run's seed
  std::int64_t tokens = 0;      // training tokens consumed
  std::int64_t bad_steps = 0;   // updates skipped (non-finite loss or gradient norm)
  std::int64_t bad_streak = 0;  // consecutive skipped updates ending at `step`
  friend bool operator==(const TrainProgress&, const TrainProgress&) = default;
};

/// The optim./train. tensors of a checkpoint, owning their bytes while it is written.
class TrainStateTensors {
 public:
  template <class T, Device D>
  TrainStateTensors(const AdamW<T, D>& opt, const TrainProgress& progress)
      : m_(moment(opt.first_moment())),
        v_(moment(opt.second_moment())),
        scalars_{opt.steps(), progress.step, progress.seed, progress.tokens, progress.bad_steps, progress.bad_streak} {
    const Shape flat{static_cast<std::int64_t>(m_.size())};
    tensors_.push_back({"optim.m", DType::F32, flat, std::as_bytes(std::span<const float>(m_))});
    tensors_.push_back({"optim.v", DType::F32, flat, std::as_bytes(std::span<const float>(v_))});
    for (std::size_t i = 0; i < kScalarNames.size(); ++i) {
      tensors_.push_back({kScalarNames[i], DType::I64, Shape{}, std::as_bytes(std::span<const std::int64_t>(&scalars_[i], 1))});
    }
  }
  TrainStateTensors(const TrainStateTensors&) = delete;  // tensors_ points into this object
  TrainStateTensors& operator=(const TrainStateTensors&) = delete;

  [[nodiscard]] std::span<const SafetensorsTensor> tensors() const { return tensors_; }

  /// The I64 scalars, in the order of the values in the constructor.
  static constexpr std::array<const char*, 6> kScalarNames = {"optim.step",   "train.step",      "train.seed",
                                                              "train.tokens", "train.bad_steps", "train.bad_streak"};

 private:
  template <class T, Device D>
  static std::vector<float> moment(const Tensor<T, D>& t) {
    const auto values = t.to_vector();
    return std::vector<float>(values.begin(), values.end());
  }

  std::vector<float> m_, v_;
  std::array<std::int64_t, 6> scalars_;
  std::vector<SafetensorsTensor> tensors_;
};

/// Saves the model, the optimizer and the progress to `path` in one atomic write.
template <AttentionPolicy P, class T, Device D>
void save_training_checkpoint(const std::filesystem::path& path, const GPT<P, T, D>& model, const AdamW<T, D>& opt,
                              const TrainProgress& progress) {
  const TrainStateTensors state(opt, progress);
  save_model(path, model, state.tensors());
}

/// Restores weights, optimizer and progress from a parsed checkpoint of the same model.
/// IoError names `where` and the first problem (a missing, misshapen, mistyped or out-of-range
/// optim./train. tensor, or anything load_parameters refuses); on error nothing has changed.
template <class T, Device D>
TrainProgress load_training_checkpoint(const SafetensorsFile& file, const std::string& where, const ModelConfig& cfg,
                                       ParameterStore<T, D>& store, AdamW<T, D>& opt) {
  auto fail = [&](const std::string& what) -> void { throw IoError(where + ": " + what); };
  auto entry = [&](const char* name, DType dtype, const Shape& shape) -> const SafetensorsEntry& {
    const auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail(std::string("missing tensor '") + name + "': not a training checkpoint");
    if (it->second.dtype != dtype) {
      fail(std::string("tensor '") + name + "' is " + dtype_name(it->second.dtype) + ", expected " + dtype_name(dtype));
    }
    if (!(it->second.shape == shape)) {
      fail(std::string("tensor '") + name + "' has shape " + it->second.shape.str() + ", expected " + shape.str());
    }
    return it->second;
  };
  // The model first (its config and weights say best what is wrong with a file), then the
  // train state; a refused train state puts the weights back.
  const Tensor<T, D> weights = store.values().clone();
  load_parameters(file, where, cfg, store);
  std::array<std::int64_t, TrainStateTensors::kScalarNames.size()> s{};
  std::vector<float> m, v;
  try {
    // Scalars: present, I64 [], and not negative (but the seed).
    for (std::size_t i = 0; i < s.size(); ++i) {
      const char* name = TrainStateTensors::kScalarNames[i];
      std::memcpy(&s[i], file.bytes(entry(name, DType::I64, Shape{})).data(), sizeof(std::int64_t));
      if (s[i] < 0 && std::string(name) != "train.seed") fail(std::string("tensor '") + name + "' is negative");
    }
    if (s[0] > s[1]) fail("tensor 'optim.step' (" + std::to_string(s[0]) + ") exceeds 'train.step'");
    if (s[5] > s[4]) fail("tensor 'train.bad_streak' exceeds 'train.bad_steps'");
    // Moments: F32 [n], finite, the second one not negative.
    const Shape flat{opt.first_moment().numel()};
    m.resize(static_cast<std::size_t>(flat.numel()));
    v.resize(m.size());
    std::memcpy(m.data(), file.bytes(entry("optim.m", DType::F32, flat)).data(), m.size() * sizeof(float));
    std::memcpy(v.data(), file.bytes(entry("optim.v", DType::F32, flat)).data(), v.size() * sizeof(float));
    for (std::size_t i = 0; i < m.size(); ++i) {
      if (!std::isfinite(m[i])) fail("tensor 'optim.m' holds a non-finite value at " + std::to_string(i));
      if (!std::isfinite(v[i]) || v[i] < 0) fail("tensor 'optim.v' holds an invalid value at " + std::to_string(i));
    }
  } catch (...) {
    store.values().copy_from(weights);
    throw;
  }
  const std::vector<T> mt(m.begin(), m.end()), vt(v.begin(), v.end());
  D::copy_from_host(opt.first_moment().data(), mt.data(), mt.size() * sizeof(T));
  D::copy_from_host(opt.second_moment().data(), vt.data(), vt.size() * sizeof(T));
  opt.set_steps(s[0]);
  return TrainProgress{.step = s[1], .seed = s[2], .tokens = s[3], .bad_steps = s[4], .bad_streak = s[5]};
}

/// Reads `path` and restores it into the model and optimizer (see load_training_checkpoint).
template <AttentionPolicy P, class T, Device D>
TrainProgress load_training_checkpoint(const std::filesystem::path& path, GPT<P, T, D>& model, AdamW<T, D>& opt) {
  return load_training_checkpoint(read_safetensors(path), path.string(), model.config(), model.parameters(), opt);
}

}  // namespace mla
