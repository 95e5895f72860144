// mla/model/gpt.hpp — the GPT model of docs/design.md §4, generic over the attention policy.
//
// Legend: B batch, T time, D d_model, V vocab, L layers.
//
//   x = wte[ids] (+ wpe[positions] when the model has no RoPE)             [B, T, D]
//   L pre-norm blocks:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))        mlp = fc2(relu(fc1(.)))
//   logits = lm_head(ln_f(x))                                              [B, T, V]
//
// The policy picks the attention layer (HeadwiseAttention for MHA/GQA/MQA, LatentAttention for
// MLA); nothing here branches on the attention kind. Parameters live in one ParameterStore,
// named as docs/design.md §5. Training records on a caller's Tape; inference (prefill, decode) runs
// under NoGradGuard on the model's own tape, used only as an activation arena.
//
// Memory. Once warm, neither a training step (on a tape reused with clear()) nor a decode step
// allocates: activations come from the tape's arena, and decode's logits from two output
// buffers the model recycles once the caller lets go of them (`logits = model.decode(...)`
// in a loop alternates between the two); logits a caller keeps are never overwritten.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mla/attention/cache.hpp"
#include "mla/attention/headwise.hpp"
#include "mla/attention/latent.hpp"
#include "mla/attention/policy.hpp"
#include "mla/model/config.hpp"
#include "mla/nn/layers.hpp"
#include "mla/nn/parameters.hpp"

namespace mla {

namespace detail {
template <class P, class T, Device D>
struct AttentionLayerFor;
template <HeadwisePolicy P, class T, Device D>
struct AttentionLayerFor<P, T, D> {
  using type = HeadwiseAttention<P, T, D>;
};
template <LatentPolicy P, class T, Device D>
struct AttentionLayerFor<P, T, D> {
  using type = LatentAttention<P, T, D>;
};
/// An observer of the blocks that looks at nothing.
struct IgnoreLayers {
  template <class V>
  void operator()(std::size_t, const V&) const {}
};
}  // namespace detail

/// The attention layer that implements policy P.
template <AttentionPolicy P, class T, Device D>
using AttentionLayer = typename detail::AttentionLayerFor<P, T, D>::type;

/// Training-time options of one forward pass.
template <class T>
struct ForwardOptions {
  T dropout = T(0);        // on the embeddings and on each block's attention and MLP outputs
  std::uint64_t seed = 0;  // dropout masks; vary it per step
};

template <AttentionPolicy P, class T = float, Device D = Cpu>
class GPT {
 public:
  using Policy = P;
  using VarT = Var<T, D>;
  using TensorT = Tensor<T, D>;
  using Ids = Tensor<std::int32_t, D>;
  using Attention = AttentionLayer<P, T, D>;

  /// The cache of a whole model: one per layer, and how many tokens each batch row holds.
  struct Cache {
    std::vector<typename Attention::Cache> layers;
    std::vector<std::int64_t> lengths;  // [B]
    std::int64_t capacity = 0;
    CacheMode mode = CacheMode::Full;
    CacheDtype dtype = CacheDtype::F32;
    std::int64_t bytes_per_token = 0;  // over all layers, as stored

    [[nodiscard]] std::int64_t batch() const { return static_cast<std::int64_t>(lengths.size()); }
    /// Forgets every cached token (the memory is kept).
    void clear() { std::fill(lengths.begin(), lengths.end(), 0); }
    /// Calls f(plane) for every plane the cache holds (CachePlane): each layer's K and V, or
    /// its latents (and, for int8, its rotated keys).
    template <class F>
    void for_each_plane(F&& f) {
      for (auto& layer : layers) {
        if constexpr (requires { layer.latent; }) {
          for (CachePlane<T, D>* p : {&layer.latent, &layer.rope}) {
            if (p->defined()) f(*p);
          }
        }
        for (CachePlane<T, D>* p : {&layer.k, &layer.v}) {
          if (p->defined()) f(*p);
        }
      }
    }
  };

  static constexpr CacheMode kDefaultCacheMode = LatentPolicy<P> ? CacheMode::Latent : CacheMode::Full;

  /// Validates `cfg` against P (ConfigError naming the field), declares and initializes every
  /// parameter reproducibly from `seed`.
  GPT(const ModelConfig& cfg, std::uint64_t seed) : cfg_(resolve<P>(cfg)) {
    const std::int64_t V = cfg_.vocab_size, D_ = cfg_.d_model;
    wte_ = store_.declare("wte.weight", {V, D_}, ParamInit::Normal);
    if (cfg_.rope == Rope::None) wpe_ = store_.declare("wpe.weight", {cfg_.max_seq_len, D_}, ParamInit::Normal);
    blocks_.reserve(static_cast<std::size_t>(cfg_.n_layers));
    for (std::int64_t i = 0; i < cfg_.n_layers; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      blocks_.push_back(Block{nn::LayerNormParams::declare(store_, p + "ln1", D_),
                              Attention(cfg_, store_, p + "attn."),
                              nn::LayerNormParams::declare(store_, p + "ln2", D_),
                              store_.declare(p + "mlp.fc1.weight", {4 * D_, D_}, ParamInit::Normal),
                              store_.declare(p + "mlp.fc1.bias", {4 * D_}, ParamInit::Zeros),
                              store_.declare(p + "mlp.fc2.weight", {D_, 4 * D_}, ParamInit::ResidualNormal),
                              store_.declare(p + "mlp.fc2.bias", {D_}, ParamInit::Zeros)});
    }
    ln_f_ = nn::LayerNormParams::declare(store_, "ln_f", D_);
    lm_head_ = store_.declare("lm_head.weight", {V, D_}, ParamInit::Normal);
    lm_head_bias_ = store_.declare("lm_head.bias", {V}, ParamInit::Zeros);
    store_.allocate();
    store_.initialize(seed, cfg_.n_layers);
  }

  GPT(const GPT&) = delete;  // the attention layers index into this model's store
  GPT& operator=(const GPT&) = delete;

  [[nodiscard]] const ModelConfig& config() const { return cfg_; }
  [[nodiscard]] ParameterStore<T, D>& parameters() { return store_; }
  [[nodiscard]] const ParameterStore<T, D>& parameters() const { return store_; }

  /// ids [B, T] -> logits [B, T, V], causal, positions 0..T-1.
  VarT forward(Tape<T, D>& tape, const Ids& ids, const ForwardOptions<T>& opt = {}) const {
    check_ids("forward", ids.shape());
    return head(tape, blocks(tape, ids, opt));
  }

  /// Mean cross-entropy of the next-token predictions: ids and targets [B, T]. The same as
  /// cross_entropy(forward(...), targets), with the head and the loss fused: the logits are
  /// never stored whole.
  VarT loss(Tape<T, D>& tape, const Ids& ids, const Ids& targets, const ForwardOptions<T>& opt = {}) const {
    check_ids("loss", ids.shape());
    const VarT x = ln_f_(tape, store_, blocks(tape, ids, opt), cfg_.ln_eps);
    return linear_cross_entropy(x, nn::bind(tape, store_, lm_head_), nn::bind(tape, store_, lm_head_bias_), targets);
  }

  /// Runs ids [B, T] (positions 0..T-1, no gradients) and calls `visit(layer, a)` with each
  /// block's attention input a = ln1(x) [B, T, D], in layer order: what a calibration measures
  /// (mla/convert/to_mla.hpp). `a` lives on the model's inference tape until the next call.
  template <class Visit>
  void visit_attention_inputs(const Ids& ids, Visit&& visit) const {
    check_ids("visit_attention_inputs", ids.shape());
    NoGradGuard no_grad;
    infer_.clear();
    (void)blocks(infer_, ids, {}, [&](std::size_t layer, const VarT& a) { visit(layer, a.value()); });
  }

  /// Bytes cached per token over all layers, for `mode` and `dtype` (exactly as stored: values
  /// and, for int8, their scales).
  [[nodiscard]] std::int64_t cache_bytes_per_token(CacheMode mode = kDefaultCacheMode,
                                                   CacheDtype dtype = CacheDtype::F32) const {
    return Attention::cache_bytes_per_token(cfg_, mode, dtype) * cfg_.n_layers;
  }

  /// A cache for `batch` rows of up to `capacity` tokens (at most max_seq_len), storing its
  /// values as `dtype` (bf16 and int8: CPU, float models).
  Cache make_cache(std::int64_t batch, std::int64_t capacity, CacheMode mode = kDefaultCacheMode,
                   CacheDtype dtype = CacheDtype::F32) const {
    if (batch < 1) throw ArgumentError("make_cache: batch = " + std::to_string(batch) + " must be at least 1");
    if (capacity < 1 || capacity > cfg_.max_seq_len) {
      throw ArgumentError("make_cache: capacity = " + std::to_string(capacity) +
                          " must be between 1 and max_seq_len = " + std::to_string(cfg_.max_seq_len));
    }
    Cache c;
    c.bytes_per_token = cache_bytes_per_token(mode, dtype);
    c.mode = mode;
    c.dtype = dtype;
    c.capacity = capacity;
    c.lengths.assign(static_cast<std::size_t>(batch), 0);
    for (const Block& blk : blocks_) c.layers.push_back(blk.attn.make_cache(batch, capacity, mode, dtype));
    return c;
  }

  /// Runs ids [B, T] as the next T tokens of every row of `cache` (row b continues at
  /// cache.lengths[b]), appends them, and returns their logits [B, T, V].
  TensorT forward_cached(const Ids& ids, Cache& cache, DecodePath path = DecodePath::Auto) const {
    check_cached("forward_cached", ids.shape(), cache);
    infer_.clear();
    return run_cached(ids, cache, path);
  }

  /// Prefills row b of `cache` with prompts[b] (lengths may differ; each non-empty) and returns
  /// the logits of each row's last prompt token [B, V].
  TensorT prefill(const std::vector<std::vector<std::int32_t>>& prompts, Cache& cache,
                  DecodePath path = DecodePath::Auto) const {
    const std::int64_t B = static_cast<std::int64_t>(prompts.size());
    if (B != cache.batch()) {
      throw ShapeError("prefill: " + std::to_string(B) + " prompts for a cache of " +
                       std::to_string(cache.batch()) + " rows");
    }
    TensorT out = TensorT::empty({B, cfg_.vocab_size});
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& prompt = prompts[static_cast<std::size_t>(b)];
      if (prompt.empty()) throw ArgumentError("prefill: prompt " + std::to_string(b) + " is empty");
      Cache row = row_view(cache, b);
      const Ids ids = Ids::from({1, static_cast<std::int64_t>(prompt.size())}, std::span<const std::int32_t>(prompt));
      const TensorT logits = forward_cached(ids, row, path);
      cache.lengths[static_cast<std::size_t>(b)] = row.lengths[0];
      const std::int64_t V = cfg_.vocab_size, last = static_cast<std::int64_t>(prompt.size()) - 1;
      D::copy(out.data() + b * V, logits.data() + last * V, static_cast<std::size_t>(V) * sizeof(T));
    }
    return out;
  }

  /// One decode step: tokens [B] (one per row) -> logits [B, V].
  TensorT decode(std::span<const std::int32_t> tokens, Cache& cache, DecodePath path = DecodePath::Auto) const {
    const std::int64_t B = static_cast<std::int64_t>(tokens.size());
    check_cached("decode", Shape{B, 1}, cache);
    infer_.clear();
    const Ids ids = infer_.template empty_as<std::int32_t>(Shape{B, 1});
    D::copy_from_host(ids.data(), tokens.data(), tokens.size_bytes());
    return run_cached(ids, cache, path).reshape({B, cfg_.vocab_size});
  }

 private:
  struct Block {
    nn::LayerNormParams ln1;
    Attention attn;
    nn::LayerNormParams ln2;
    std::int32_t fc1_w, fc1_b, fc2_w, fc2_b;
  };

  void check_ids(const char* op, const Shape& ids) const {
    if (ids.rank() != 2 || ids[1] < 1) {
      throw ShapeError(std::string(op) + ": token ids must be [B, T] with T >= 1, got " + ids.str());
    }
    if (ids[1] > cfg_.max_seq_len) {
      throw ArgumentError(std::string(op) + ": sequence length " + std::to_string(ids[1]) +
                          " exceeds max_seq_len = " + std::to_string(cfg_.max_seq_len));
    }
  }

  /// Ids [B, T] fit the cache: one row each, and room for T more tokens in every row.
  void check_cached(const char* op, const Shape& ids, const Cache& cache) const {
    check_ids(op, ids);
    const std::int64_t B = ids[0], Tn = ids[1];
    if (B != cache.batch()) {
      throw ShapeError(std::string(op) + ": ids " + ids.str() + " for a cache of " + std::to_string(cache.batch()) +
                       " rows");
    }
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t len = cache.lengths[static_cast<std::size_t>(b)];
      if (len + Tn > cache.capacity) {
        throw ArgumentError(std::string(op) + ": row " + std::to_string(b) + " holds " + std::to_string(len) +
                            " tokens; " + std::to_string(Tn) + " more exceed the cache capacity of " +
                            std::to_string(cache.capacity));
      }
    }
  }

  /// forward_cached after its checks, on the cleared inference tape.
  TensorT run_cached(const Ids& ids, Cache& cache, DecodePath path) const {
    NoGradGuard no_grad;
    const std::int64_t Tn = ids.shape()[1];
    const detail::StepPositions<D> at = step_positions(cache.lengths, Tn);
    VarT x = embed(infer_, ids, at.starts);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const Block& blk = blocks_[i];
      x = add(x, blk.attn.forward_cached(infer_, store_, blk.ln1(infer_, store_, x, cfg_.ln_eps),
                                         cache.layers[i], at, path));
      x = add(x, mlp(infer_, blk, blk.ln2(infer_, store_, x, cfg_.ln_eps)));
    }
    const TensorT h = head(infer_, x).value();
    TensorT logits = output_buffer(h.shape());
    logits.copy_from(h);
    for (auto& len : cache.lengths) len += Tn;
    return logits;
  }

  /// The positions of a cached step of Tn tokens per row, the device's copies in one upload into
  /// the inference arena (staged in a host buffer the model keeps: no allocation once warm).
  detail::StepPositions<D> step_positions(const std::vector<std::int64_t>& starts, std::int64_t Tn) const {
    const std::int64_t B = static_cast<std::int64_t>(starts.size());
    staged_positions_.resize(static_cast<std::size_t>(2 * B));
    std::int64_t max_length = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t start = starts[static_cast<std::size_t>(b)];
      staged_positions_[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(start);
      staged_positions_[static_cast<std::size_t>(B + b)] = static_cast<std::int32_t>(start + Tn);
      max_length = std::max(max_length, start + Tn);
    }
    const auto both = infer_.template empty_as<std::int32_t>(Shape{2 * B});
    D::copy_from_host(both.data(), staged_positions_.data(), staged_positions_.size() * sizeof(std::int32_t));
    return {std::span<const std::int64_t>(starts), max_length, both.slice(0, B), both.slice(B, 2 * B)};
  }

  /// Storage for returned logits: an output buffer nobody else holds (and large enough), or a
  /// new one that takes the place of a free or too small buffer. Logits the caller still holds
  /// are never handed out again.
  TensorT output_buffer(Shape shape) const {
    const std::size_t bytes = static_cast<std::size_t>(shape.numel()) * sizeof(T);
    OutputBuffer* spare = nullptr;  // a free slot (or one free but too small)
    for (OutputBuffer& o : outputs_) {
      const bool free = o.data.use_count() <= 1;
      if (free && o.data && o.bytes >= bytes) {
        return TensorT(shape, std::shared_ptr<T>(o.data, reinterpret_cast<T*>(o.data.get())));
      }
      if (free && spare == nullptr) spare = &o;
    }
    TensorT t = TensorT::empty(shape);
    if (spare) {
      *spare = OutputBuffer{std::shared_ptr<std::byte>(t.storage(), reinterpret_cast<std::byte*>(t.data())), bytes};
    }
    return t;
  }

  /// Token embeddings (+ learned positions when there is no RoPE); row b starts at position
  /// starts[b], or 0 when `starts` is empty.
  VarT embed(Tape<T, D>& tape, const Ids& ids, std::span<const std::int64_t> starts) const {
    VarT x = embedding(nn::bind(tape, store_, wte_), ids);
    if (wpe_ < 0) return x;
    const std::int64_t B = ids.shape()[0], Tn = ids.shape()[1];
    const Ids pos = tape.template empty_as<std::int32_t>(Shape{B, Tn});
    constexpr std::int64_t kChunk = 256;  // positions staged on the host, a chunk at a time
    std::int32_t host[kChunk];
    for (std::int64_t i0 = 0; i0 < B * Tn; i0 += kChunk) {
      const std::int64_t n = std::min(kChunk, B * Tn - i0);
      for (std::int64_t i = i0; i < i0 + n; ++i) {
        const std::int64_t start = starts.empty() ? 0 : starts[static_cast<std::size_t>(i / Tn)];
        host[i - i0] = static_cast<std::int32_t>(start + i % Tn);
      }
      D::copy_from_host(pos.data() + i0, host, static_cast<std::size_t>(n) * sizeof(std::int32_t));
    }
    return add(x, embedding(nn::bind(tape, store_, wpe_), pos));
  }

  VarT mlp(Tape<T, D>& tape, const Block& blk, const VarT& x) const {
    const VarT h = relu(nn::linear(x, nn::bind(tape, store_, blk.fc1_w), nn::bind(tape, store_, blk.fc1_b)));
    return nn::linear(h, nn::bind(tape, store_, blk.fc2_w), nn::bind(tape, store_, blk.fc2_b));
  }

  /// The embeddings and the transformer blocks: ids [B, T] -> x [B, T, D], before ln_f.
  /// `observe(layer, a)` sees each block's attention input.
  template <class Observe = detail::IgnoreLayers>
  VarT blocks(Tape<T, D>& tape, const Ids& ids, const ForwardOptions<T>& opt, Observe&& observe = {}) const {
    VarT x = embed(tape, ids, {});  // every row from position 0
    x = drop(x, opt, 0);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const Block& blk = blocks_[i];
      const VarT a = blk.ln1(tape, store_, x, cfg_.ln_eps);
      observe(i, a);
      x = add(x, drop(blk.attn.forward(tape, store_, a), opt, 2 * i + 1));
      x = add(x, drop(mlp(tape, blk, blk.ln2(tape, store_, x, cfg_.ln_eps)), opt, 2 * i + 2));
    }
    return x;
  }

  VarT head(Tape<T, D>& tape, const VarT& x) const {
    return nn::linear(ln_f_(tape, store_, x, cfg_.ln_eps), nn::bind(tape, store_, lm_head_),
                      nn::bind(tape, store_, lm_head_bias_));
  }

  static VarT drop(const VarT& x, const ForwardOptions<T>& opt, std::size_t site) {
    if (opt.dropout == T(0)) return x;
    return dropout(x, opt.dropout, opt.seed * 0x9E3779B97F4A7C15ull + site);
  }

  /// A cache over row b of `cache` only (views, no copy).
  static Cache row_view(Cache& cache, std::int64_t b) {
    Cache row;
    row.capacity = cache.capacity;
    row.mode = cache.mode;
    row.bytes_per_token = cache.bytes_per_token;
    row.lengths = {cache.lengths[static_cast<std::size_t>(b)]};
    for (auto& layer : cache.layers) row.layers.push_back(layer.row(b));
    return row;
  }

  struct OutputBuffer {
    std::shared_ptr<std::byte> data;  // shared with the logits handed out
    std::size_t bytes = 0;
  };

  ModelConfig cfg_;
  ParameterStore<T, D> store_;
  std::int32_t wte_ = -1, wpe_ = -1, lm_head_ = -1, lm_head_bias_ = -1;
  std::vector<Block> blocks_;
  nn::LayerNormParams ln_f_;
  mutable Tape<T, D> infer_;
  mutable std::vector<std::int32_t> staged_positions_;  // a cached step's starts and lengths
  mutable std::array<OutputBuffer, 2> outputs_;  // recycled storage of returned logits
};

}  // namespace mla
