// mla/convert/to_mla.hpp — turns a trained MHA, GQA or MQA model into MLA (docs/design.md §4):
// exactly where the algebra allows, by a low-rank factorization where it does not.
//
// Legend: D d_model, H query heads, G kv heads, Dh head dim, R the latent rank (kv_rank),
// N and Rr the converted model's nope and rope dims per head, Σ the second moment E[a aᵀ] of a
// layer's attention input a = ln1(x) over calibration tokens (the identity without them).
//
// The converted model has q_rank 0 (each query head's projection kept, re-arranged as
// [nope | rope]), latent_norm none, v_head_dim = Dh, and every other tensor copied.
//
//   rope none       N = Dh, Rr = 0: q_h = q_h, key_h = k_g (g = h's kv head), value_h = v_g.
//   rope decoupled  N = Dh - r, Rr = r: the shared rotated key becomes k_pe, unchanged.
//   rope full       N = Dh - Rr, Rr rotated dims kept from Dh (a choice; the rest lose their rotation).
//
// Keys and values. The unrotated keys of every kv head and their values are stacked into one
// matrix M [G*(N+Dh), D]; M ≈ B A with A [R, D] (kv_a_proj_with_mqa's first R rows) and B
// [G*(N+Dh), R] (kv_b_proj, its rows repeated for the query heads that share a kv head). At R >=
// rank(M) the factorization is exact, and so is the converted model (rope none or decoupled):
// its logits equal the original's up to float rounding.
//   Method::Svd  truncated SVD of M (MHA2MLA's joint SVD), sqrt(S) on each side.
//   Method::Pca  the top R eigenvectors U of the covariance of the activations M a, i.e. of
//                Mb Σ Mbᵀ, with A = Uᵀ Mb and B = U: the best rank-R reconstruction of the
//                calibration's keys and values. Mb scales the key rows by sqrt(|V|²/|K|²) (both
//                measured under Σ) so that keys and values weigh alike — TransMLA's balancing.
//
// Full RoPE. MLA's rotated key is one per token, shared by the heads, and its frequencies are
// fixed by Rr and rope_theta (§4: theta^(-2i/Rr)). Keeping Dh's frequencies s*i (i < Rr/2) with
// rope_theta' = theta^(s*Rr/Dh) gives exactly those; the stride s is chosen to keep the most of
// sum over heads sqrt(E|q_i|² E|k_i|²) (MHA2MLA's 2-norm criterion, over all layers: the model
// has one rope_theta). Per kept frequency, the kv heads' key pairs are mixed by an orthogonal
// rotation across heads (it commutes with RoPE's rotation of each pair): its first component —
// the top eigenvector u of the heads' key covariance under Σ — becomes k_pe, and query head h's
// rope part is u_g q_h (TransMLA's RoRoPE). What u misses of k_g is dropped: left unrotated it
// would add a score that ignores the distance (measured on docs/conversion.md's MHA model at
// half its cache: a calibration loss of 4.10 kept unrotated against 3.96 dropped, from 3.64). The frequencies not kept stay
// in the key unrotated, its N = Dh - Rr nope dims (in their order in the head), factored with
// the values as above. With one kv head (MQA) the kept frequencies are exact.
//
// The score scale 1/sqrt(N+Rr) of the MLA model is folded into the query weights, so scores
// equal the original's 1/sqrt(Dh) ones (N + Rr = Dh unless the source had no rope).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Dense>

#include "mla/attention/policy.hpp"
#include "mla/core/error.hpp"
#include "mla/model/config.hpp"
#include "mla/model/gpt.hpp"
#include "mla/train/token_file.hpp"

namespace mla::convert {

/// How the keys and values are factored through the latent (see the header comment).
enum class Method { Svd, Pca };

constexpr const char* to_string(Method m) { return m == Method::Svd ? "svd" : "pca"; }

struct Options {
  std::int64_t kv_rank = 0;
  /// Rotated dims of the converted model. Full-rope source: default head_dim/2, even, 2..head_dim.
  /// Decoupled source: its own qk_rope_dim (the default). No-rope source: 0 (the default).
  std::int64_t rope_dim = Dynamic;
  Method method = Method::Svd;
};

/// Per layer, Σ = E[a aᵀ] of the attention input a = ln1(x) [D, D], over `tokens` tokens.
struct Calibration {
  std::vector<Eigen::MatrixXd> second_moment;
  std::int64_t tokens = 0;
};

/// What the conversion kept.
struct Report {
  std::int64_t rope_stride = 0;          // full rope: the kept frequencies are every s-th one
  double rope_importance_kept = 1;       // full rope: share of the 2-norm importance kept
  std::vector<double> kv_energy_kept;    // per layer: share of M's energy (under Σ for pca) in rank R
};

template <class T>
struct Converted {
  std::unique_ptr<GPT<MLA<>, T, Cpu>> model;
  Report report;
};

/// Σ of every layer's attention input over the first `windows` §6 evaluation windows of length
/// T of `tokens`, run `batch` windows at a time.
template <AttentionPolicy P, class T>
Calibration calibrate(const GPT<P, T, Cpu>& model, std::span<const std::uint16_t> tokens, std::int64_t T_,
                      std::int64_t windows, std::int64_t batch = 4) {
  const ModelConfig& cfg = model.config();
  if (T_ < 1 || T_ > cfg.max_seq_len) {
    throw ArgumentError("calibrate: sequence length " + std::to_string(T_) + " must be between 1 and max_seq_len = " +
                        std::to_string(cfg.max_seq_len));
  }
  windows = std::min(windows, eval_windows(static_cast<std::int64_t>(tokens.size()), T_));
  if (windows < 1) {
    throw ArgumentError("calibrate: " + std::to_string(tokens.size()) + " tokens hold no window of " +
                        std::to_string(T_ + 1) + " tokens");
  }
  const auto Dm = cfg.d_model;
  Calibration c;
  c.second_moment.assign(static_cast<std::size_t>(cfg.n_layers), Eigen::MatrixXd::Zero(Dm, Dm));
  for (std::int64_t first = 0; first < windows; first += batch) {
    const std::int64_t B = std::min(batch, windows - first);
    Tensor<std::int32_t> ids = Tensor<std::int32_t>::empty({B, T_}), targets = Tensor<std::int32_t>::empty({B, T_});
    fill_eval_batch(tokens, first, T_, ids, targets);
    model.visit_attention_inputs(ids, [&](std::size_t layer, const Tensor<T, Cpu>& a) {
      using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      const Eigen::MatrixXd x = Eigen::Map<const Rows>(a.data(), B * T_, Dm).template cast<double>();
      c.second_moment[layer].noalias() += x.transpose() * x;
    });
    c.tokens += B * T_;
  }
  for (auto& s : c.second_moment) s /= static_cast<double>(c.tokens);
  return c;
}

namespace detail {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

[[noreturn]] inline void conversion_error(const std::string& what) {
  throw ArgumentError("cannot convert to MLA: " + what);
}

/// The converted model's nope and rope dims per head for a source config and a requested rope dim.
inline std::pair<std::int64_t, std::int64_t> target_dims(const ModelConfig& src, std::int64_t rope_dim) {
  const std::int64_t Dh = src.head_dim;
  switch (src.rope) {
    case Rope::None:
      if (rope_dim != Dynamic && rope_dim != 0) {
        conversion_error("rope_dim " + std::to_string(rope_dim) + ": the source model has no rope (use 0 or leave it out)");
      }
      return {Dh, 0};
    case Rope::Decoupled:
      if (rope_dim != Dynamic && rope_dim != src.qk_rope_dim) {
        conversion_error("rope_dim " + std::to_string(rope_dim) + ": the source's decoupled rope has " +
                         std::to_string(src.qk_rope_dim) + " dims, and a conversion keeps them (leave it out)");
      }
      return {src.qk_nope_dim, src.qk_rope_dim};
    case Rope::Full: {
      const std::int64_t r = rope_dim == Dynamic ? Dh / 2 : rope_dim;
      if (r < 2 || r % 2 != 0 || r > Dh) {
        conversion_error("rope_dim " + std::to_string(r) + " must be even, at least 2 and at most head_dim = " +
                         std::to_string(Dh));
      }
      return {Dh - r, r};
    }
  }
  return {Dh, 0};
}

template <class T>
Matrix weight(const ParameterStore<T, Cpu>& store, const std::string& name) {
  const std::int32_t i = store.find(name);
  if (i < 0) conversion_error("the source model has no tensor '" + name + "'");
  const Tensor<T, Cpu> v = store.value(i);
  using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t rows = v.shape()[0], cols = v.shape().rank() > 1 ? v.shape()[1] : 1;
  return Eigen::Map<const Rows>(v.data(), rows, cols).template cast<double>();
}

template <class T>
void set_weight(ParameterStore<T, Cpu>& store, const std::string& name, const Matrix& m) {
  const std::int32_t i = store.find(name);
  const Tensor<T, Cpu> v = store.value(i);
  if (m.size() != v.shape().numel()) conversion_error("internal: '" + name + "' has the wrong size");
  using Rows = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<Rows>(v.data(), m.rows(), m.cols()) = m.template cast<T>();
}

/// E|w a|² summed over the rows of w: trace(w Σ wᵀ).
inline double energy(const Matrix& w, const Eigen::MatrixXd& sigma) { return (w * sigma * w.transpose()).trace(); }

/// Frequency i's rotated pair in each of `heads` heads of a full-rope projection w [heads*Dh, D]:
/// rows i and i + Dh/2 of every head, [heads, D] each.
struct FrequencyPairs {
  Matrix even, odd;
};

inline FrequencyPairs frequency_pairs(const Matrix& w, std::int64_t heads, std::int64_t Dh, std::int64_t i) {
  FrequencyPairs f{Matrix(heads, w.cols()), Matrix(heads, w.cols())};
  for (std::int64_t h = 0; h < heads; ++h) {
    f.even.row(h) = w.row(h * Dh + i);
    f.odd.row(h) = w.row(h * Dh + i + Dh / 2);
  }
  return f;
}

/// E[p_g · p_h] over the heads' pairs [heads, heads]: the diagonal is each head's E|p|².
inline Eigen::MatrixXd pair_covariance(const FrequencyPairs& f, const Eigen::MatrixXd& sigma) {
  return f.even * sigma * f.even.transpose() + f.odd * sigma * f.odd.transpose();
}

/// sum over query heads of sqrt(E|q_{h,i}|² E|k_{g,i}|²): how much frequency i carries.
inline double frequency_importance(const Matrix& wq, const Matrix& wk, std::int64_t H, std::int64_t G,
                                   std::int64_t Dh, std::int64_t i, const Eigen::MatrixXd& sigma) {
  const Eigen::VectorXd q = pair_covariance(frequency_pairs(wq, H, Dh, i), sigma).diagonal();
  const Eigen::VectorXd k = pair_covariance(frequency_pairs(wk, G, Dh, i), sigma).diagonal();
  double sum = 0;
  for (std::int64_t h = 0; h < H; ++h) sum += std::sqrt(q(h) * k(h / (H / G)));
  return sum;
}

/// The widest stride s with Dh's frequencies s*i, i < r/2, all below Dh/2.
inline std::int64_t max_stride(std::int64_t Dh, std::int64_t r) {
  return r / 2 <= 1 ? 1 : (Dh / 2 - 1) / (r / 2 - 1);
}

/// A factorization M ≈ B A of rank R, and the share of the energy it keeps.
struct Factors {
  Matrix a, b;  // [R, D], [rows, R]
  double energy_kept = 1;
};

inline Factors factor(const Matrix& m, std::int64_t key_rows_per_head, std::int64_t value_rows_per_head,
                      std::int64_t R, Method method, const Eigen::MatrixXd& sigma) {
  const std::int64_t rows = m.rows(), per = key_rows_per_head + value_rows_per_head;
  if (method == Method::Svd) {
    Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd s = svd.singularValues();
    const Eigen::VectorXd root = s.head(R).cwiseSqrt();
    Factors f;
    f.a = root.asDiagonal() * svd.matrixV().leftCols(R).transpose();
    f.b = svd.matrixU().leftCols(R) * root.asDiagonal();
    const double total = s.squaredNorm();
    f.energy_kept = total > 0 ? s.head(R).squaredNorm() / total : 1.0;
    return f;
  }
  // Pca: balance the key rows against the value rows under Σ, then the top R eigenvectors of the
  // activations' covariance.
  Eigen::VectorXd scale = Eigen::VectorXd::Ones(rows);
  double keys = 0, values = 0;
  for (std::int64_t g = 0; g * per < rows; ++g) {
    keys += key_rows_per_head > 0 ? energy(m.middleRows(g * per, key_rows_per_head), sigma) : 0.0;
    values += energy(m.middleRows(g * per + key_rows_per_head, value_rows_per_head), sigma);
  }
  const double alpha = keys > 0 && values > 0 ? std::sqrt(values / keys) : 1.0;
  for (std::int64_t g = 0; g * per < rows; ++g) scale.segment(g * per, key_rows_per_head).setConstant(alpha);
  const Matrix mb = scale.asDiagonal() * m;
  const Eigen::MatrixXd cov = mb * sigma * mb.transpose();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);  // ascending eigenvalues
  const Eigen::MatrixXd u = eig.eigenvectors().rightCols(R).rowwise().reverse();
  Factors f;
  f.a = u.transpose() * mb;
  f.b = scale.cwiseInverse().asDiagonal() * u;
  const double total = eig.eigenvalues().cwiseMax(0.0).sum();
  f.energy_kept = total > 0 ? eig.eigenvalues().tail(R).cwiseMax(0.0).sum() / total : 1.0;
  return f;
}

}  // namespace detail

/// The largest useful kv_rank: the rank M can have, min(D, G*(N+Dh)).
inline std::int64_t max_kv_rank(const ModelConfig& source, std::int64_t rope_dim = Dynamic) {
  const std::int64_t N = detail::target_dims(source, rope_dim).first;
  return std::min(source.d_model, source.n_kv_heads * (N + source.head_dim));
}

/// Checks `opt` against a source config (and whether a calibration comes): ArgumentError names a
/// kv_rank out of range, a rope dim the source cannot give, or Pca without a calibration.
inline void check(const ModelConfig& source, const Options& opt, bool calibrated) {
  const std::int64_t limit = max_kv_rank(source, opt.rope_dim);
  if (opt.kv_rank < 1 || opt.kv_rank > limit) {
    detail::conversion_error("kv_rank " + std::to_string(opt.kv_rank) + " must be between 1 and " +
                             std::to_string(limit) + " (min(d_model, kv heads x (nope + value dims)) for this model)");
  }
  if (opt.method == Method::Pca && !calibrated) detail::conversion_error("method pca needs a calibration");
}

/// The MLA model equivalent (rope none, decoupled, R >= rank) or closest (see the header
/// comment) to `source`. ArgumentError names what cannot be converted (see check) or a
/// calibration of another model.
template <HeadwisePolicy P, class T>
Converted<T> to_mla(const GPT<P, T, Cpu>& source, const Options& opt, const Calibration* calibration = nullptr) {
  using detail::Matrix, detail::conversion_error;
  const ModelConfig& src = source.config();
  const std::int64_t Dm = src.d_model, H = src.n_heads, G = src.n_kv_heads, Dh = src.head_dim, L = src.n_layers;
  check(src, opt, calibration != nullptr);
  const auto [N, Rr] = detail::target_dims(src, opt.rope_dim);
  const std::int64_t R = opt.kv_rank;
  if (calibration) {
    if (static_cast<std::int64_t>(calibration->second_moment.size()) != L) {
      conversion_error("the calibration has " + std::to_string(calibration->second_moment.size()) +
                       " layers, the model " + std::to_string(L));
    }
    for (const auto& s : calibration->second_moment) {
      if (s.rows() != Dm || s.cols() != Dm) conversion_error("the calibration is of a model of another width");
    }
  }
  // Without a calibration, every weighing is by the weights alone: Σ = I.
  const Eigen::MatrixXd identity = calibration ? Eigen::MatrixXd() : Eigen::MatrixXd::Identity(Dm, Dm);
  auto sigma_of = [&](std::int64_t layer) -> const Eigen::MatrixXd& {
    return calibration ? calibration->second_moment[static_cast<std::size_t>(layer)] : identity;
  };
  const auto& in = source.parameters();
  auto layer_name = [](std::int64_t i, const char* rest) { return "layers." + std::to_string(i) + "." + rest; };

  Report report;
  double theta = src.rope_theta;
  if (src.rope == Rope::Full) {
    // One stride for every layer: the model has one rope_theta.
    std::vector<double> importance(static_cast<std::size_t>(Dh / 2), 0.0);
    for (std::int64_t l = 0; l < L; ++l) {
      const Matrix wq = detail::weight(in, layer_name(l, "attn.q_proj.weight"));
      const Matrix wk = detail::weight(in, layer_name(l, "attn.k_proj.weight"));
      for (std::int64_t i = 0; i < Dh / 2; ++i) {
        importance[static_cast<std::size_t>(i)] += detail::frequency_importance(wq, wk, H, G, Dh, i, sigma_of(l));
      }
    }
    double total = 0, best = -1;
    for (double v : importance) total += v;
    for (std::int64_t s = 1; s <= detail::max_stride(Dh, Rr); ++s) {
      double kept = 0;
      for (std::int64_t i = 0; i < Rr / 2; ++i) kept += importance[static_cast<std::size_t>(s * i)];
      if (kept > best) {
        best = kept;
        report.rope_stride = s;
      }
    }
    report.rope_importance_kept = total > 0 ? best / total : 1.0;
    theta = std::pow(src.rope_theta, static_cast<double>(report.rope_stride * Rr) / static_cast<double>(Dh));
  }

  ModelConfig cfg{.vocab_size = src.vocab_size, .d_model = Dm, .n_heads = H, .n_layers = L,
                  .max_seq_len = src.max_seq_len};
  cfg.head_dim = Dh;
  cfg.q_rank = 0;
  cfg.kv_rank = R;
  cfg.qk_nope_dim = N;
  cfg.qk_rope_dim = Rr;
  cfg.v_head_dim = Dh;
  cfg.rope_theta = theta;
  cfg.ln_eps = src.ln_eps;
  cfg.latent_norm = LatentNorm::None;
  auto model = std::make_unique<GPT<MLA<>, T, Cpu>>(cfg, 0);
  auto& dst = model->parameters();

  // Everything outside attention is the same tensor under the same name.
  for (const auto& e : dst.entries()) {
    if (e.name.find(".attn.") != std::string::npos) continue;
    detail::set_weight(dst, e.name, detail::weight(in, e.name));
  }

  const double q_scale = std::sqrt(static_cast<double>(N + Rr) / static_cast<double>(Dh));
  const std::int64_t QH = N + Rr, per = N + Dh;
  for (std::int64_t l = 0; l < L; ++l) {
    const Eigen::MatrixXd& sigma = sigma_of(l);
    const Matrix wq = detail::weight(in, layer_name(l, "attn.q_proj.weight"));  // [H*Dh, D]
    const Matrix wk = detail::weight(in, layer_name(l, "attn.k_proj.weight"));
    const Matrix wv = detail::weight(in, layer_name(l, "attn.v_proj.weight"));  // [G*Dh, D]
    Matrix q = Matrix::Zero(H * QH, Dm), k_nope(G * N, Dm), k_pe(Rr, Dm);
    switch (src.rope) {
      case Rope::None:
        q = wq;
        k_nope = wk;
        break;
      case Rope::Decoupled:  // already [nope | rope] per head, one shared rotated key
        q = wq;
        k_nope = wk.topRows(G * N);
        k_pe = wk.bottomRows(Rr);
        break;
      case Rope::Full: {
        // Each head's dims of the frequencies not kept, in order, are its nope part.
        const std::int64_t half = Dh / 2, s = report.rope_stride;
        std::vector<std::int64_t> nope;
        for (std::int64_t d = 0; d < Dh; ++d) {
          if (d % half % s != 0 || d % half / s >= Rr / 2) nope.push_back(d);
        }
        for (std::int64_t h = 0; h < H; ++h) {
          for (std::int64_t n = 0; n < N; ++n) q.row(h * QH + n) = wq.row(h * Dh + nope[static_cast<std::size_t>(n)]);
        }
        for (std::int64_t g = 0; g < G; ++g) {
          for (std::int64_t n = 0; n < N; ++n) k_nope.row(g * N + n) = wk.row(g * Dh + nope[static_cast<std::size_t>(n)]);
        }
        for (std::int64_t j = 0; j < Rr / 2; ++j) {  // kept frequency s*j: one key shared by the heads
          const std::int64_t i = s * j;
          const detail::FrequencyPairs k = detail::frequency_pairs(wk, G, Dh, i);
          Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(detail::pair_covariance(k, sigma));
          Eigen::VectorXd u = eig.eigenvectors().col(G - 1);
          if (u.sum() < 0) u = -u;  // a fixed sign, for reproducible weights
          k_pe.row(j) = u.transpose() * k.even;
          k_pe.row(j + Rr / 2) = u.transpose() * k.odd;
          for (std::int64_t h = 0; h < H; ++h) {
            const double w = u(h / (H / G));
            q.row(h * QH + N + j) = w * wq.row(h * Dh + i);
            q.row(h * QH + N + j + Rr / 2) = w * wq.row(h * Dh + i + half);
          }
        }
        break;
      }
    }
    q *= q_scale;

    Matrix m(G * per, Dm);  // per kv head: [unrotated key (N) | value (Dh)]
    for (std::int64_t g = 0; g < G; ++g) {
      m.middleRows(g * per, N) = k_nope.middleRows(g * N, N);
      m.middleRows(g * per + N, Dh) = wv.middleRows(g * Dh, Dh);
    }
    const detail::Factors f = detail::factor(m, N, Dh, R, opt.method, sigma);
    report.kv_energy_kept.push_back(f.energy_kept);

    Matrix kv_a(R + Rr, Dm), kv_b(H * per, R);
    kv_a.topRows(R) = f.a;
    kv_a.bottomRows(Rr) = k_pe;
    for (std::int64_t h = 0; h < H; ++h) kv_b.middleRows(h * per, per) = f.b.middleRows(h / (H / G) * per, per);
    detail::set_weight(dst, layer_name(l, "attn.q_proj.weight"), q);
    detail::set_weight(dst, layer_name(l, "attn.kv_a_proj_with_mqa.weight"), kv_a);
    detail::set_weight(dst, layer_name(l, "attn.kv_b_proj.weight"), kv_b);
    detail::set_weight(dst, layer_name(l, "attn.o_proj.weight"), detail::weight(in, layer_name(l, "attn.o_proj.weight")));
  }
  return {std::move(model), report};
}

}  // namespace mla::convert
