// mla/attention/headwise.hpp — the MHA family (MHA, GQA, MQA), with no, full or decoupled RoPE.
//
// Legend: B batch, T time, D d_model, H query heads, G kv heads, Dh head dim, N unrotated
// (nope) dims and R rotated dims of a head (decoupled RoPE: N + R = Dh), S cache slots.
//
// Parameters (docs/design.md §4, names as §5 under `prefix`):
//   q_proj [H*Dh, D]   k_proj [G*Dh, D] (decoupled: [G*N + R, D])   v_proj [G*Dh, D]   o_proj [D, H*Dh]
// Query head h uses kv head h / (H/G). Decoupled: each head's [N | R] has its R part rotated;
// k_proj's last R outputs are one rotated key part shared by every kv head.
// The cache holds rotated K [B, G, S, Dh] and V [B, G, S, Dh]: 2*G*Dh values per token, as
// floats or quantized (CacheDtype: int8 with one scale per group of 64 of a token's head).
#pragma once

#include <cmath>
#include <string>

#include "mla/attention/cache.hpp"
#include "mla/attention/common.hpp"
#include "mla/attention/policy.hpp"
#include "mla/backend/kernels.hpp"
#include "mla/model/config.hpp"
#include "mla/nn/layers.hpp"

namespace mla {

template <HeadwisePolicy P, class T, Device D>
class HeadwiseAttention {
 public:
  using VarT = Var<T, D>;
  using TensorT = Tensor<T, D>;

  struct Cache {
    CachePlane<T, D> k, v;  // [B, G, S, Dh] each, keys rotated

    /// Batch row b alone, as views.
    [[nodiscard]] Cache row(std::int64_t b) const { return {k.row(b), v.row(b)}; }
  };

  HeadwiseAttention(const ModelConfig& cfg, ParameterStore<T, D>& store, const std::string& prefix)
      : cfg_(cfg) {
    const std::int64_t D_ = cfg.d_model, H = cfg.n_heads, G = cfg.n_kv_heads, Dh = cfg.head_dim;
    const std::int64_t k_out = P::rope == Rope::Decoupled ? G * cfg.qk_nope_dim + cfg.qk_rope_dim : G * Dh;
    q_proj_ = store.declare(prefix + "q_proj.weight", {H * Dh, D_}, ParamInit::Normal);
    k_proj_ = store.declare(prefix + "k_proj.weight", {k_out, D_}, ParamInit::Normal);
    v_proj_ = store.declare(prefix + "v_proj.weight", {G * Dh, D_}, ParamInit::Normal);
    o_proj_ = store.declare(prefix + "o_proj.weight", {D_, H * Dh}, ParamInit::ResidualNormal);
  }

  /// Bytes cached per token by one layer: K and V of each kv head, stored as `dtype`.
  static std::int64_t cache_bytes_per_token(const ModelConfig& cfg, CacheMode mode, CacheDtype dtype) {
    if (mode != CacheMode::Full) {
      throw ConfigError(std::string("cache: ") + to_string(P::kind) +
                        " attention has no latent cache; use CacheMode::Full");
    }
    return 2 * cfg.n_kv_heads * stored_row_bytes<T>(dtype, cfg.head_dim);
  }

  Cache make_cache(std::int64_t B, std::int64_t S, CacheMode mode, CacheDtype dtype) const {
    (void)cache_bytes_per_token(cfg_, mode, dtype);
    const Shape s{B, cfg_.n_kv_heads, S, cfg_.head_dim};
    return Cache{CachePlane<T, D>::zeros(s, dtype), CachePlane<T, D>::zeros(s, dtype)};
  }

  /// x [B, T, D] -> [B, T, D], causal over the T tokens at positions 0..T-1.
  VarT forward(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x) const {
    const Projected p = project(tape, store, x, nullptr);
    const VarT o = causal_attention(permute(p.q, {0, 2, 1, 3}), permute(p.k, {0, 2, 1, 3}),
                                    permute(p.v, {0, 2, 1, 3}), scale());
    return detail::project_heads(tape, store, o_proj_, permute(o, {0, 2, 1, 3}));
  }

  /// New tokens x [B, T, D] of row b at positions at.starts[b] onwards: appends their keys and
  /// values to the cache and attends over everything cached in the row. Inference only.
  VarT forward_cached(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x,
                      Cache& cache, const detail::StepPositions<D>& at, DecodePath) const {
    const Projected p = project(tape, store, x, &at);
    const std::int64_t B = x.shape()[0], Tn = x.shape()[1], S = cache.k.shape()[2];
    const std::int64_t H = cfg_.n_heads, G = cfg_.n_kv_heads, Dh = cfg_.head_dim;
    const std::int32_t* starts = at.device_starts.data();
    const VarT q = permute(p.q, {0, 2, 1, 3});  // [B, H, T, Dh]
    TensorT o = tape.empty({B, H, Tn, Dh});
    const kernels::CachedAttentionShape shape{B, H, G, Tn, S, Dh, Dh};
    if (cache.k.dtype == CacheDtype::F32) {
      kernels::append_heads(D{}, B, Tn, G, S, Dh, p.k.value().data(), starts, cache.k.wide.data());
      kernels::append_heads(D{}, B, Tn, G, S, Dh, p.v.value().data(), starts, cache.v.wide.data());
      kernels::cached_attention(D{}, shape, scale(), q.value().data(), cache.k.wide.data(), cache.v.wide.data(),
                                at.device_lengths.data(), at.max_length, o.data());
    } else if constexpr (std::is_same_v<D, Cpu>) {  // quantized caches are the CPU's (CachePlane)
      kernels::append_heads(D{}, B, Tn, G, S, Dh, p.k.value().data(), starts, cache.k.rows_out());
      kernels::append_heads(D{}, B, Tn, G, S, Dh, p.v.value().data(), starts, cache.v.rows_out());
      kernels::cached_attention(D{}, shape, scale(), q.value().data(), cache.k.rows(), cache.v.rows(),
                                at.device_lengths.data(), at.max_length, o.data());
    }
    return detail::project_heads(tape, store, o_proj_, permute(tape.constant(o), {0, 2, 1, 3}));
  }

 private:
  struct Projected {
    VarT q, k, v;  // [B, T, H, Dh], [B, T, G, Dh] rotated, [B, T, G, Dh]
  };

  [[nodiscard]] T scale() const { return static_cast<T>(1.0 / std::sqrt(static_cast<double>(cfg_.head_dim))); }

  /// Training when `at` is null; a cached step's new tokens otherwise.
  Projected project(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x,
                    const detail::StepPositions<D>* at) const {
    const auto rotate = [&](const VarT& part) {
      return at ? detail::rotate(part, *at, cfg_.rope_theta) : detail::rotate(part, cfg_.rope_theta);
    };
    const std::int64_t B = x.shape()[0], Tn = x.shape()[1];
    const std::int64_t H = cfg_.n_heads, G = cfg_.n_kv_heads, Dh = cfg_.head_dim;
    VarT q = reshape(nn::linear(x, nn::bind(tape, store, q_proj_)), Shape{B, Tn, H, Dh});
    VarT k = nn::linear(x, nn::bind(tape, store, k_proj_));
    VarT v = reshape(nn::linear(x, nn::bind(tape, store, v_proj_)), Shape{B, Tn, G, Dh});
    if constexpr (P::rope == Rope::Full) {
      q = rotate(q);
      k = rotate(reshape(k, Shape{B, Tn, G, Dh}));
    } else if constexpr (P::rope == Rope::Decoupled) {
      const std::int64_t N = cfg_.qk_nope_dim, R = cfg_.qk_rope_dim;
      auto qs = split(q, {N, R});
      q = concat({qs[0], rotate(qs[1])});
      auto ks = split(k, {G * N, R});
      const VarT k_pe = nn::expand_heads(rotate(ks[1]), G);  // shared by every kv head
      k = concat({reshape(ks[0], Shape{B, Tn, G, N}), k_pe});
    } else {
      k = reshape(k, Shape{B, Tn, G, Dh});
    }
    return {q, k, v};
  }

  ModelConfig cfg_;
  std::int32_t q_proj_ = -1, k_proj_ = -1, v_proj_ = -1, o_proj_ = -1;
};

}  // namespace mla
