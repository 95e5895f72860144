// mla/attention/latent.hpp — multi-head latent attention (DeepSeek-V2), with decoupled RoPE.
//
// Legend: B batch, T time, D d_model, H heads, Dq query rank, Dc kv (latent) rank, N nope dims
// and R rope dims of a query/key head, Dv value head dim, S cache slots.
//
// Parameters (docs/design.md §4, names as §5 under `prefix`):
//   Dq > 0: q_a_proj [Dq, D], q_a_layernorm [Dq], q_b_proj [H*(N+R), Dq];  Dq = 0: q_proj [H*(N+R), D]
//   kv_a_proj_with_mqa [Dc + R, D], kv_a_layernorm [Dc], kv_b_proj [H*(N+Dv), Dc], o_proj [D, H*Dv]
//
//   q      = q_b_proj(q_a_layernorm(q_a_proj(x)))         [B, T, H, N+R], the R part rotated
//   kv_a   = kv_a_proj_with_mqa(x) = [c_raw | k_raw]       c_kv = kv_a_layernorm(c_raw) [B, T, Dc]
//   k_pe   = rope(k_raw)                                   [B, T, R], shared by every head
//   [k_nope_h | v_h] = kv_b_proj(c_kv) per head            key_h = [k_nope_h | k_pe]
//   out    = o_proj(softmax(q_h . key_h / sqrt(N+R)) v_h)
//
// Caches: Latent holds [c_kv | k_pe] per token, Dc + R values per layer; Full holds the
// decompressed K [B, H, S, N+R] and V [B, H, S, Dv]. Stored as floats, bf16 or int8
// (CacheDtype); an int8 latent cache keeps k_pe apart, in bf16 (as FlashMLA does): its R values
// are rotated keys, not normalized latents, and would need a group and scale of their own for
// few bytes saved (R = 16: 32 bytes in bf16, 20 in int8 with its scale).
//
// The absorbed decode: q_h . k_nope_h = q_h . (W_UK_h c) = (q_h W_UK_h) . c, so the query is
// moved into latent space once per step and the scores are one GEMM against the cached rows
// [c_kv | k_pe]; likewise sum_j p_j v_hj = W_UV_h (sum_j p_j c_j), so the weighted sum runs
// over the cached latents and W_UV_h is applied once afterwards. The cache is never
// decompressed.
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

template <LatentPolicy P, class T, Device D>
class LatentAttention {
 public:
  using VarT = Var<T, D>;
  using TensorT = Tensor<T, D>;

  struct Cache {
    CacheMode mode = CacheMode::Latent;
    CachePlane<T, D> latent;  // Latent: [B, S, Dc + R]; int8: [B, S, Dc], k_pe in `rope`
    CachePlane<T, D> rope;    // Latent, int8 (R > 0): [B, S, R], bf16
    CachePlane<T, D> k, v;    // Full:   [B, H, S, N + R], [B, H, S, Dv]

    /// Batch row b alone, as views.
    [[nodiscard]] Cache row(std::int64_t b) const {
      auto cut = [&](const CachePlane<T, D>& p) { return p.defined() ? p.row(b) : CachePlane<T, D>{}; };
      return {mode, cut(latent), cut(rope), cut(k), cut(v)};
    }
  };

  LatentAttention(const ModelConfig& cfg, ParameterStore<T, D>& store, const std::string& prefix)
      : cfg_(cfg) {
    const std::int64_t D_ = cfg.d_model, H = cfg.n_heads, N = cfg.qk_nope_dim,
                       R = cfg.qk_rope_dim, Dv = cfg.v_head_dim, Dq = cfg.q_rank, Dc = cfg.kv_rank;
    if (Dq > 0) {
      q_a_proj_ = store.declare(prefix + "q_a_proj.weight", {Dq, D_}, ParamInit::Normal);
      q_a_norm_ = nn::LatentNormParams::declare(store, prefix + "q_a_layernorm", Dq, cfg.latent_norm);
      q_b_proj_ = store.declare(prefix + "q_b_proj.weight", {H * (N + R), Dq}, ParamInit::Normal);
    } else {
      q_proj_ = store.declare(prefix + "q_proj.weight", {H * (N + R), D_}, ParamInit::Normal);
    }
    kv_a_proj_ = store.declare(prefix + "kv_a_proj_with_mqa.weight", {Dc + R, D_}, ParamInit::Normal);
    kv_a_norm_ = nn::LatentNormParams::declare(store, prefix + "kv_a_layernorm", Dc, cfg.latent_norm);
    kv_b_proj_ = store.declare(prefix + "kv_b_proj.weight", {H * (N + Dv), Dc}, ParamInit::Normal);
    o_proj_ = store.declare(prefix + "o_proj.weight", {D_, H * Dv}, ParamInit::ResidualNormal);
  }

  /// Bytes cached per token by one layer, stored as `dtype`.
  static std::int64_t cache_bytes_per_token(const ModelConfig& cfg, CacheMode mode, CacheDtype dtype) {
    const std::int64_t Dc = cfg.kv_rank, R = cfg.qk_rope_dim;
    if (mode == CacheMode::Latent) {
      if (split_rope(dtype, R)) {
        return stored_row_bytes<T>(dtype, Dc) + stored_row_bytes<T>(CacheDtype::BF16, R);
      }
      return stored_row_bytes<T>(dtype, Dc + R);
    }
    return cfg.n_heads * (stored_row_bytes<T>(dtype, cfg.qk_nope_dim + R) +
                          stored_row_bytes<T>(dtype, cfg.v_head_dim));
  }

  Cache make_cache(std::int64_t B, std::int64_t S, CacheMode mode, CacheDtype dtype) const {
    const std::int64_t Dc = cfg_.kv_rank, R = cfg_.qk_rope_dim;
    Cache c;
    c.mode = mode;
    if (mode == CacheMode::Latent && split_rope(dtype, R)) {
      c.latent = CachePlane<T, D>::zeros({B, S, Dc}, dtype);
      c.rope = CachePlane<T, D>::zeros({B, S, R}, CacheDtype::BF16);
    } else if (mode == CacheMode::Latent) {
      c.latent = CachePlane<T, D>::zeros({B, S, Dc + R}, dtype);
    } else {
      c.k = CachePlane<T, D>::zeros({B, cfg_.n_heads, S, cfg_.qk_nope_dim + R}, dtype);
      c.v = CachePlane<T, D>::zeros({B, cfg_.n_heads, S, cfg_.v_head_dim}, dtype);
    }
    return c;
  }

  /// x [B, T, D] -> [B, T, D], causal over the T tokens at positions 0..T-1.
  VarT forward(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x) const {
    const VarT q = query(tape, store, x, nullptr);
    const Latent l = latent(tape, store, x, nullptr);
    const auto [k, v] = decompress(tape, store, l.c_kv, l.k_pe);
    const VarT o = causal_attention(permute(q, {0, 2, 1, 3}), permute(k, {0, 2, 1, 3}),
                                    permute(v, {0, 2, 1, 3}), scale());
    return detail::project_heads(tape, store, o_proj_, permute(o, {0, 2, 1, 3}));
  }

  /// New tokens x [B, T, D] of row b at positions at.starts[b] onwards: appends them to the
  /// cache and attends over everything cached in the row. Inference only.
  VarT forward_cached(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x,
                      Cache& cache, const detail::StepPositions<D>& at, DecodePath path) const {
    const std::int64_t B = x.shape()[0], Tn = x.shape()[1];
    const std::int64_t H = cfg_.n_heads, N = cfg_.qk_nope_dim, R = cfg_.qk_rope_dim,
                       Dv = cfg_.v_head_dim, Dc = cfg_.kv_rank;
    const VarT q = query(tape, store, x, &at);  // [B, T, H, N+R]
    const Latent l = latent(tape, store, x, &at);
    const std::int32_t* starts = at.device_starts.data();
    const std::int32_t* lengths = at.device_lengths.data();

    if (cache.mode == CacheMode::Full) {
      const auto [k, v] = decompress(tape, store, l.c_kv, l.k_pe);
      const std::int64_t S = cache.k.shape()[2];
      if (cache.k.dtype == CacheDtype::F32) {
        kernels::append_heads(D{}, B, Tn, H, S, N + R, k.value().data(), starts, cache.k.wide.data());
        kernels::append_heads(D{}, B, Tn, H, S, Dv, v.value().data(), starts, cache.v.wide.data());
      } else if constexpr (std::is_same_v<D, Cpu>) {  // quantized caches are the CPU's (CachePlane)
        kernels::append_heads(D{}, B, Tn, H, S, N + R, k.value().data(), starts, cache.k.rows_out());
        kernels::append_heads(D{}, B, Tn, H, S, Dv, v.value().data(), starts, cache.v.rows_out());
      }
      return attend_heads(tape, store, q, cache.k.rows(), cache.v.rows(), S, lengths, at.max_length);
    }

    const std::int64_t S = cache.latent.shape()[1];
    const bool wide = cache.latent.dtype == CacheDtype::F32;
    const VarT row = R > 0 ? concat({l.c_kv, l.k_pe}) : l.c_kv;  // [B, T, Dc + R]
    if (wide) {
      kernels::append_rows(D{}, B, Tn, S, Dc + R, row.value().data(), starts, cache.latent.wide.data());
    } else if constexpr (std::is_same_v<D, Cpu>) {
      kernels::append_latent(D{}, B, Tn, S, Dc, R, row.value().data(), starts, cache.latent.rows_out(),
                             cache.rope.rows_out());
    }
    if (choose(path, Tn) == DecodePath::Absorbed) {
      const TensorT w = store.value(kv_b_proj_);
      TensorT q_cat = tape.empty({B, H, Tn, Dc + R});
      kernels::absorb_query(D{}, B, Tn, H, N, R, Dv, Dc, q.value().data(), w.data(), q_cat.data());
      TensorT o_lat = tape.empty({B, H, Tn, Dc});
      if (wide) {
        kernels::latent_cached_attention(D{}, B, H, Tn, S, Dc, R, scale(), q_cat.data(), cache.latent.wide.data(),
                                         lengths, at.max_length, o_lat.data());
      } else if constexpr (std::is_same_v<D, Cpu>) {
        kernels::latent_cached_attention(D{}, B, H, Tn, S, Dc, R, scale(), q_cat.data(), cache.latent.rows(),
                                         cache.rope.rows(), lengths, at.max_length, o_lat.data());
      }
      TensorT o = tape.empty({B, Tn, H * Dv});
      kernels::absorb_output(D{}, B, Tn, H, N, Dv, Dc, o_lat.data(), w.data(), o.data());
      return nn::linear(tape.constant(o), nn::bind(tape, store, o_proj_));
    }
    // Materialized: decompress the L cached tokens of each row, then attend over them.
    TensorT o = tape.empty({B, Tn, H * Dv});
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t L = at.starts[static_cast<std::size_t>(b)] + Tn;
      const VarT cached = tape.constant(cached_latents(tape, cache, b, L));  // [1, L, Dc + R]
      VarT c_kv = cached, k_pe;
      if (R > 0) {
        auto parts = split(cached, {Dc, R});
        c_kv = parts[0];
        k_pe = parts[1];
      }
      const auto [k, v] = decompress(tape, store, c_kv, k_pe);  // [1, L, H, *]
      const VarT kh = permute(k, {0, 2, 1, 3}), vh = permute(v, {0, 2, 1, 3});
      const VarT qb = tape.constant(q.value().slice(b, b + 1));
      const kernels::StoredRows<T> k_rows{.wide = kh.value().data(), .ld = N + R};
      const kernels::StoredRows<T> v_rows{.wide = vh.value().data(), .ld = Dv};
      o.slice(b, b + 1).copy_from(attend_heads(tape, store, qb, k_rows, v_rows, L, lengths + b, L, false).value());
    }
    return nn::linear(tape.constant(o), nn::bind(tape, store, o_proj_));
  }

 private:
  /// Whether a latent cache of `dtype` keeps k_pe apart (int8 latents, bf16 rotated keys).
  static bool split_rope(CacheDtype dtype, std::int64_t R) { return dtype == CacheDtype::Int8 && R > 0; }

  /// Row b's first L cached latents [1, L, Dc + R]: the cache's own rows when stored as floats,
  /// otherwise widened into activation memory (the materialized path decompresses them anyway).
  TensorT cached_latents(Tape<T, D>& tape, const Cache& cache, std::int64_t b, std::int64_t L) const {
    const std::int64_t S = cache.latent.shape()[1], Dc = cfg_.kv_rank, R = cfg_.qk_rope_dim;
    if (cache.latent.dtype == CacheDtype::F32) {
      return cache.latent.wide.slice(b, b + 1).reshape({S, Dc + R}).slice(0, L).reshape({1, L, Dc + R});
    }
    TensorT rows = tape.empty({1, L, Dc + R});
    if constexpr (std::is_same_v<D, Cpu>) {
      const bool split = split_rope(cache.latent.dtype, R);
      const kernels::StoredRows<T> latent = cache.latent.rows().from(b * S);
      for (std::int64_t j = 0; j < L; ++j) {
        T* out = rows.data() + j * (Dc + R);
        kernels::load_row(D{}, latent, j, 0, split ? Dc : Dc + R, out);
        if (split) kernels::load_row(D{}, cache.rope.rows().from(b * S), j, 0, R, out + Dc);
      }
    }
    return rows;
  }

  struct Latent {
    VarT c_kv;  // [B, T, Dc], normalized
    VarT k_pe;  // [B, T, R], rotated
  };

  [[nodiscard]] T scale() const {
    return static_cast<T>(1.0 / std::sqrt(static_cast<double>(cfg_.qk_nope_dim + cfg_.qk_rope_dim)));
  }

  /// Rotates a training step's `part` (at null) or a cached step's.
  VarT rotate(const VarT& part, const detail::StepPositions<D>* at) const {
    return at ? detail::rotate(part, *at, cfg_.rope_theta) : detail::rotate(part, cfg_.rope_theta);
  }

  /// [B, T, H, N+R] with the R part of every head rotated.
  VarT query(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x,
             const detail::StepPositions<D>* at) const {
    const std::int64_t B = x.shape()[0], Tn = x.shape()[1];
    const std::int64_t H = cfg_.n_heads, N = cfg_.qk_nope_dim, R = cfg_.qk_rope_dim;
    VarT q = cfg_.q_rank > 0
                 ? nn::linear(q_a_norm_(tape, store, nn::linear(x, nn::bind(tape, store, q_a_proj_)), cfg_.ln_eps),
                              nn::bind(tape, store, q_b_proj_))
                 : nn::linear(x, nn::bind(tape, store, q_proj_));
    q = reshape(q, Shape{B, Tn, H, N + R});
    if (R == 0) return q;
    auto parts = split(q, {N, R});
    return concat({parts[0], rotate(parts[1], at)});
  }

  Latent latent(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& x,
                const detail::StepPositions<D>* at) const {
    const VarT kv_a = nn::linear(x, nn::bind(tape, store, kv_a_proj_));
    if (cfg_.qk_rope_dim == 0) return {kv_a_norm_(tape, store, kv_a, cfg_.ln_eps), VarT{}};
    auto parts = split(kv_a, {cfg_.kv_rank, cfg_.qk_rope_dim});
    return {kv_a_norm_(tape, store, parts[0], cfg_.ln_eps), rotate(parts[1], at)};
  }

  /// Keys [B, T, H, N+R] and values [B, T, H, Dv] of every head, from c_kv and k_pe.
  std::pair<VarT, VarT> decompress(Tape<T, D>& tape, const ParameterStore<T, D>& store,
                                   const VarT& c_kv, const VarT& k_pe) const {
    const std::int64_t B = c_kv.shape()[0], Tn = c_kv.shape()[1];
    const std::int64_t H = cfg_.n_heads, N = cfg_.qk_nope_dim, Dv = cfg_.v_head_dim;
    const VarT kv = reshape(nn::linear(c_kv, nn::bind(tape, store, kv_b_proj_)), Shape{B, Tn, H, N + Dv});
    auto parts = split(kv, {N, Dv});
    if (cfg_.qk_rope_dim == 0) return {parts[0], parts[1]};
    return {concat({parts[0], nn::expand_heads(k_pe, H)}), parts[1]};
  }

  /// Attention of q [B, T, H, N+R] over per-head caches k [B, H, S, N+R], v [B, H, S, Dv] whose
  /// row b holds lengths[b] keys (int32, device memory; at most max_len); returns [B, T, H*Dv],
  /// through o_proj unless `project` is false.
  VarT attend_heads(Tape<T, D>& tape, const ParameterStore<T, D>& store, const VarT& q,
                    const kernels::StoredRows<T>& k, const kernels::StoredRows<T>& v, std::int64_t S,
                    const std::int32_t* lengths, std::int64_t max_len, bool project = true) const {
    const std::int64_t B = q.shape()[0], Tn = q.shape()[1], H = cfg_.n_heads;
    const std::int64_t Dk = cfg_.qk_nope_dim + cfg_.qk_rope_dim, Dv = cfg_.v_head_dim;
    const VarT qh = permute(q, {0, 2, 1, 3});
    TensorT o = tape.empty({B, H, Tn, Dv});
    const kernels::CachedAttentionShape shape{B, H, H, Tn, S, Dk, Dv};
    if (k.dtype == CacheDtype::F32) {
      kernels::cached_attention(D{}, shape, scale(), qh.value().data(), k.wide, v.wide, lengths, max_len, o.data());
    } else if constexpr (std::is_same_v<D, Cpu>) {
      kernels::cached_attention(D{}, shape, scale(), qh.value().data(), k, v, lengths, max_len, o.data());
    }
    const VarT merged = reshape(permute(tape.constant(o), {0, 2, 1, 3}), Shape{B, Tn, H * Dv});
    return project ? nn::linear(merged, nn::bind(tape, store, o_proj_)) : merged;
  }

  /// Auto: the absorbed path costs about H*T*L*(2*Dc + R) multiply-adds per row, the
  /// materialized one L*Dc*H*(N+Dv) to decompress plus H*T*L*(N+R+Dv) to attend.
  DecodePath choose(DecodePath path, std::int64_t Tn) const {
    if (path != DecodePath::Auto) return path;
    const double H = static_cast<double>(cfg_.n_heads), t = static_cast<double>(Tn);
    const double Dc = static_cast<double>(cfg_.kv_rank), R = static_cast<double>(cfg_.qk_rope_dim);
    const double N = static_cast<double>(cfg_.qk_nope_dim), Dv = static_cast<double>(cfg_.v_head_dim);
    const double absorbed = H * t * (2 * Dc + R);
    const double materialized = Dc * H * (N + Dv) + H * t * (N + R + Dv);
    return absorbed <= materialized ? DecodePath::Absorbed : DecodePath::Materialized;
  }

  ModelConfig cfg_;
  std::int32_t q_a_proj_ = -1, q_b_proj_ = -1, q_proj_ = -1, kv_a_proj_ = -1, kv_b_proj_ = -1,
               o_proj_ = -1;
  nn::LatentNormParams q_a_norm_, kv_a_norm_;
};

}  // namespace mla
