// mla/model/config.hpp — the runtime model configuration and its validation against a policy.
//
// A user fills in the five required sizes and whatever optional ones they want; `resolve<P>`
// fills every default from docs/design.md §4 (head_dim = D/H; MLA: q_rank = D/2, kv_rank = 2D/3,
// qk_rope_dim = head_dim/2, qk_nope_dim = head_dim - rope, v_head_dim = head_dim), checks the
// result against the policy, and throws ConfigError naming the field and the values when the
// policy cannot hold it. A resolved config has no Dynamic (-1) left.
#pragma once

#include <cstdint>
#include <string>

#include "mla/attention/policy.hpp"
#include "mla/core/error.hpp"

namespace mla {

/// The norm an MLA layer applies to its latents (q_a_layernorm when q_rank > 0, and
/// kv_a_layernorm): LayerNorm with weight and bias (the default), RMSNorm with a weight
/// (DeepSeek's: x * rsqrt(mean(x^2) + ln_eps) * weight), or none (a model converted from
/// MHA/GQA has no norm there).
enum class LatentNorm { LayerNorm, RmsNorm, None };

constexpr const char* to_string(LatentNorm n) {
  return n == LatentNorm::LayerNorm ? "layernorm" : n == LatentNorm::RmsNorm ? "rmsnorm" : "none";
}

struct ModelConfig {
  std::int64_t vocab_size = 0;
  std::int64_t d_model = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_layers = 0;
  std::int64_t max_seq_len = 0;
  // Optional sizes: Dynamic (-1) takes the policy's or docs/design.md §4's default.
  std::int64_t n_kv_heads = Dynamic;
  std::int64_t head_dim = Dynamic;
  std::int64_t q_rank = Dynamic;
  std::int64_t kv_rank = Dynamic;
  std::int64_t qk_nope_dim = Dynamic;
  std::int64_t qk_rope_dim = Dynamic;
  std::int64_t v_head_dim = Dynamic;
  double rope_theta = 10000.0;
  double ln_eps = 1e-5;
  LatentNorm latent_norm = LatentNorm::LayerNorm;  // MLA only
  // Set by resolve from the policy.
  AttentionKind attention = AttentionKind::MHA;
  Rope rope = Rope::Full;

  /// Query/key head dim: head_dim (MHA family) or qk_nope_dim + qk_rope_dim (MLA).
  [[nodiscard]] std::int64_t qk_head_dim() const {
    return attention == AttentionKind::MLA ? qk_nope_dim + qk_rope_dim : head_dim;
  }
  /// Value head dim: head_dim (MHA family) or v_head_dim (MLA).
  [[nodiscard]] std::int64_t value_head_dim() const {
    return attention == AttentionKind::MLA ? v_head_dim : head_dim;
  }
  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

namespace detail {

[[noreturn]] inline void config_error(const std::string& what) {
  throw ConfigError("config: " + what);
}
inline std::string kv(const char* name, std::int64_t v) {
  return std::string(name) + " = " + std::to_string(v);
}
inline void require_positive(const char* name, std::int64_t v) {
  if (v < 1) config_error(kv(name, v) + " must be at least 1");
}
/// The value of a size the type may fix: the type's, the config's, or the default.
inline std::int64_t pick(const char* name, int fixed, std::int64_t configured,
                         std::int64_t fallback) {
  if (fixed != Dynamic) {
    if (configured != Dynamic && configured != fixed) {
      config_error(kv(name, configured) + " but the attention policy fixes it to " +
                   std::to_string(fixed));
    }
    return fixed;
  }
  return configured != Dynamic ? configured : fallback;
}

}  // namespace detail

/// `cfg` with every default filled in for policy P, or ConfigError naming what P cannot hold.
template <AttentionPolicy P>
ModelConfig resolve(ModelConfig cfg) {
  using detail::config_error, detail::kv;
  detail::require_positive("vocab_size", cfg.vocab_size);
  detail::require_positive("d_model", cfg.d_model);
  detail::require_positive("n_heads", cfg.n_heads);
  detail::require_positive("n_layers", cfg.n_layers);
  detail::require_positive("max_seq_len", cfg.max_seq_len);
  if (!(cfg.rope_theta > 0)) config_error("rope_theta = " + std::to_string(cfg.rope_theta) + " must be > 0");
  if (!(cfg.ln_eps > 0)) config_error("ln_eps = " + std::to_string(cfg.ln_eps) + " must be > 0");
  if (cfg.head_dim == Dynamic) {
    if (cfg.d_model % cfg.n_heads != 0) {
      config_error(kv("d_model", cfg.d_model) + " is not divisible by " + kv("n_heads", cfg.n_heads) +
                   " (set head_dim to choose the head size)");
    }
    cfg.head_dim = cfg.d_model / cfg.n_heads;
  }
  detail::require_positive("head_dim", cfg.head_dim);
  cfg.attention = P::kind;

  if constexpr (HeadwisePolicy<P>) {
    const std::int64_t fixed_g = P::kind == AttentionKind::MHA ? cfg.n_heads : P::kv_heads;
    cfg.n_kv_heads = detail::pick("n_kv_heads", fixed_g == Dynamic ? Dynamic : static_cast<int>(fixed_g),
                                  cfg.n_kv_heads, Dynamic);
    if (cfg.n_kv_heads == Dynamic) config_error("n_kv_heads must be set for GQA<mla::Dynamic>");
    detail::require_positive("n_kv_heads", cfg.n_kv_heads);
    if (cfg.n_heads % cfg.n_kv_heads != 0) {
      config_error(kv("n_heads", cfg.n_heads) + " is not divisible by " + kv("n_kv_heads", cfg.n_kv_heads));
    }
    cfg.rope = P::rope;
    if (P::rope == Rope::Full && cfg.head_dim % 2 != 0) {
      config_error(kv("head_dim", cfg.head_dim) + " must be even to rotate it (rope = full)");
    }
    if (P::rope == Rope::Decoupled) {
      cfg.qk_rope_dim = cfg.qk_rope_dim == Dynamic ? cfg.head_dim / 2 : cfg.qk_rope_dim;
      if (cfg.qk_rope_dim < 2 || cfg.qk_rope_dim % 2 != 0 || cfg.qk_rope_dim > cfg.head_dim) {
        config_error(kv("qk_rope_dim", cfg.qk_rope_dim) + " must be even, at least 2 and at most " +
                     kv("head_dim", cfg.head_dim));
      }
      cfg.qk_nope_dim = cfg.head_dim - cfg.qk_rope_dim;
    } else {
      cfg.qk_rope_dim = P::rope == Rope::Full ? cfg.head_dim : 0;
      cfg.qk_nope_dim = cfg.head_dim - cfg.qk_rope_dim;
    }
    cfg.q_rank = 0;
    cfg.kv_rank = 0;
    cfg.v_head_dim = cfg.head_dim;
    if (cfg.latent_norm != LatentNorm::LayerNorm) {
      config_error(std::string("latent_norm = ") + to_string(cfg.latent_norm) + " applies to MLA only, not " +
                   to_string(P::kind));
    }
  } else {
    cfg.n_kv_heads = cfg.n_heads;
    cfg.q_rank = detail::pick("q_rank", P::q_rank, cfg.q_rank, cfg.d_model / 2);
    cfg.kv_rank = detail::pick("kv_rank", P::kv_rank, cfg.kv_rank, 2 * cfg.d_model / 3);
    cfg.qk_rope_dim = detail::pick("qk_rope_dim", P::rope_dim, cfg.qk_rope_dim, cfg.head_dim / 2);
    cfg.qk_nope_dim = detail::pick("qk_nope_dim", P::nope_dim, cfg.qk_nope_dim, cfg.head_dim - cfg.qk_rope_dim);
    cfg.v_head_dim = detail::pick("v_head_dim", P::v_head_dim, cfg.v_head_dim, cfg.head_dim);
    detail::require_positive("kv_rank", cfg.kv_rank);
    if (cfg.kv_rank > cfg.d_model) {
      config_error(kv("kv_rank", cfg.kv_rank) + " exceeds " + kv("d_model", cfg.d_model) +
                   ": the latent would not compress anything");
    }
    if (cfg.q_rank < 0 || cfg.q_rank > cfg.d_model) {
      config_error(kv("q_rank", cfg.q_rank) + " must be between 0 and " + kv("d_model", cfg.d_model));
    }
    if (cfg.qk_rope_dim < 0 || cfg.qk_rope_dim % 2 != 0) {
      config_error(kv("qk_rope_dim", cfg.qk_rope_dim) + " must be even and >= 0");
    }
    if (cfg.qk_rope_dim > cfg.head_dim) {
      config_error(kv("qk_rope_dim", cfg.qk_rope_dim) + " exceeds " + kv("head_dim", cfg.head_dim));
    }
    if (cfg.qk_nope_dim < 0) config_error(kv("qk_nope_dim", cfg.qk_nope_dim) + " must be >= 0");
    if (cfg.qk_nope_dim + cfg.qk_rope_dim < 1) config_error("qk_nope_dim + qk_rope_dim must be at least 1");
    detail::require_positive("v_head_dim", cfg.v_head_dim);
    cfg.rope = cfg.qk_rope_dim > 0 ? Rope::Decoupled : Rope::None;
  }
  return cfg;
}

}  // namespace mla
