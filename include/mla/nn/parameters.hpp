// mla/nn/parameters.hpp — every parameter of a model in one buffer, every gradient in another.
//
// Layers declare their parameters by name and shape; `allocate()` then lays them out in one
// contiguous, 64-byte aligned buffer of values and one of gradients (each parameter starts on
// a cache line). Parameters are views into those buffers, so the optimizer is one loop over a
// flat array, zero_grad is one memset, a checkpoint is a walk over the names, and a
// data-parallel all-reduce of gradients is one call (mla/parallel/mpi.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "mla/core/error.hpp"
#include "mla/core/tensor.hpp"

namespace mla {

/// How a parameter starts (GPT-2's scheme, as in the reference experiments' models):
///   Normal          N(0, 0.02)                       embeddings and projections
///   ResidualNormal  N(0, 0.02 / sqrt(2 * n_layers))  projections that write into the residual
///                                                     stream (o_proj, fc2)
///   Zeros, Ones                                      biases; norm weights
enum class ParamInit { Normal, ResidualNormal, Zeros, Ones };

template <TensorScalar T, Device D = Cpu>
class ParameterStore {
 public:
  using TensorT = Tensor<T, D>;

  struct Entry {
    std::string name;
    Shape shape;
    std::int64_t offset = 0;  // in elements, into values() and grads()
    ParamInit init = ParamInit::Normal;
    /// Whether weight decay applies: to matrices, not to biases or norm weights.
    [[nodiscard]] bool decay() const { return shape.rank() >= 2; }
  };

  /// Declares a parameter before allocate(); returns its index.
  std::int32_t declare(std::string name, Shape shape, ParamInit init) {
    if (allocated()) throw Error("parameters: declare '" + name + "' after allocate()");
    if (find(name) >= 0) throw Error("parameters: '" + name + "' declared twice");
    constexpr std::int64_t kLine = static_cast<std::int64_t>(kAlignment / sizeof(T));
    entries_.push_back(Entry{std::move(name), shape, size_, init});
    size_ += (shape.numel() + kLine - 1) / kLine * kLine;
    return static_cast<std::int32_t>(entries_.size() - 1);
  }

  /// Allocates both buffers, zero-filled.
  void allocate() {
    values_ = TensorT::zeros({size_});
    grads_ = TensorT::zeros({size_});
  }
  [[nodiscard]] bool allocated() const { return values_.defined(); }

  [[nodiscard]] TensorT value(std::int32_t i) const { return view(values_, i); }
  [[nodiscard]] TensorT grad(std::int32_t i) const { return view(grads_, i); }
  /// Every value (padding between parameters included, always zero) as one flat tensor.
  [[nodiscard]] const TensorT& values() const { return values_; }
  [[nodiscard]] const TensorT& grads() const { return grads_; }
  void zero_grad() const { grads_.fill_zero(); }

  /// Sets every value by its ParamInit, reproducibly from `seed`. The normals come from
  /// Box-Muller over mt19937_64, both fully specified by the standard, so a seed gives the same
  /// weights with every compiler, library and device: they are drawn on the host and copied.
  void initialize(std::uint64_t seed, std::int64_t n_layers) {
    std::vector<T> host(static_cast<std::size_t>(size_), T(0));
    std::mt19937_64 rng(seed);
    auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
    const double residual = 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers));
    for (const Entry& e : entries_) {
      T* p = host.data() + e.offset;
      const std::int64_t n = e.shape.numel();
      const double std_dev = e.init == ParamInit::ResidualNormal ? residual : 0.02;
      for (std::int64_t i = 0; i < n; ++i) {
        switch (e.init) {
          case ParamInit::Zeros: p[i] = T(0); break;
          case ParamInit::Ones: p[i] = T(1); break;
          default: {
            const double r = std::sqrt(-2.0 * std::log(uniform()));
            p[i] = static_cast<T>(std_dev * r * std::cos(6.283185307179586 * uniform()));
          }
        }
      }
    }
    D::copy_from_host(values_.data(), host.data(), host.size() * sizeof(T));
  }

  [[nodiscard]] const std::vector<Entry>& entries() const { return entries_; }
  [[nodiscard]] std::int32_t size() const { return static_cast<std::int32_t>(entries_.size()); }
  /// Index of the parameter called `name`, or -1.
  [[nodiscard]] std::int32_t find(std::string_view name) const {
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].name == name) return static_cast<std::int32_t>(i);
    return -1;
  }
  /// Number of parameter elements (without padding).
  [[nodiscard]] std::int64_t count() const {
    std::int64_t n = 0;
    for (const Entry& e : entries_) n += e.shape.numel();
    return n;
  }

 private:
  [[nodiscard]] TensorT view(const TensorT& flat, std::int32_t i) const {
    const Entry& e = entries_.at(static_cast<std::size_t>(i));
    return TensorT(e.shape, std::shared_ptr<T>(flat.storage(), flat.data() + e.offset));
  }

  std::vector<Entry> entries_;
  std::int64_t size_ = 0;
  TensorT values_, grads_;
};

}  // namespace mla
