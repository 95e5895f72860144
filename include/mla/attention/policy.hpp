// mla/attention/policy.hpp — attention policies: types that hold only constants.
//
// A policy fixes the structure of a model's attention at compile time; any size may be
// mla::Dynamic (as Eigen's Dynamic) to take it from the runtime ModelConfig instead.
//
//   MHA<Rope>                 H query heads, H kv heads
//   GQA<KvHeads, Rope>        H query heads share KvHeads kv heads (H % KvHeads == 0)
//   MQA<Rope>                 one kv head for every query head
//   MLA<KvRank, RopeDim, QRank, NopeDim, VHeadDim>
//                             DeepSeek-V2 multi-head latent attention: K and V decompressed
//                             from a cached latent of KvRank floats, queries through a rank
//                             QRank bottleneck (0: a plain projection), and a decoupled RoPE
//                             key of RopeDim floats shared by every head (0: no RoPE).
//
// Rope (MHA family): None — learned absolute positions (wpe); Full — every query/key dim
// rotated; Decoupled — each head's last `qk_rope_dim` dims rotated, with one rotated key part
// shared by all heads (the reference experiments' Decoupled_Rope_MHA).
#pragma once

namespace mla {

/// A size taken from the runtime configuration instead of the type.
inline constexpr int Dynamic = -1;

enum class Rope { None, Full, Decoupled };
enum class AttentionKind { MHA, GQA, MQA, MLA };

template <Rope R = Rope::Full>
struct MHA {
  static constexpr AttentionKind kind = AttentionKind::MHA;
  static constexpr Rope rope = R;
  static constexpr int kv_heads = Dynamic;  // always n_heads
};

template <int KvHeads, Rope R = Rope::Full>
struct GQA {
  static_assert(KvHeads == Dynamic || KvHeads >= 1,
                "mla::GQA<KvHeads>: KvHeads must be at least 1 (or mla::Dynamic)");
  static constexpr AttentionKind kind = AttentionKind::GQA;
  static constexpr Rope rope = R;
  static constexpr int kv_heads = KvHeads;
};

template <Rope R = Rope::Full>
struct MQA {
  static constexpr AttentionKind kind = AttentionKind::MQA;
  static constexpr Rope rope = R;
  static constexpr int kv_heads = 1;
};

template <int KvRank = Dynamic, int RopeDim = Dynamic, int QRank = Dynamic, int NopeDim = Dynamic,
          int VHeadDim = Dynamic>
struct MLA {
  static_assert(KvRank == Dynamic || KvRank >= 1,
                "mla::MLA<KvRank>: the latent rank KvRank must be at least 1 (or mla::Dynamic)");
  static_assert(RopeDim == Dynamic || (RopeDim >= 0 && RopeDim % 2 == 0),
                "mla::MLA<..., RopeDim>: the decoupled RoPE dim must be even and >= 0 "
                "(0 means no RoPE), or mla::Dynamic");
  static_assert(QRank == Dynamic || QRank >= 0,
                "mla::MLA<..., QRank>: the query rank must be >= 0 (0 means no query "
                "compression), or mla::Dynamic");
  static_assert(NopeDim == Dynamic || NopeDim >= 0,
                "mla::MLA<..., NopeDim>: the unrotated query/key dim must be >= 0");
  static_assert(VHeadDim == Dynamic || VHeadDim >= 1,
                "mla::MLA<..., VHeadDim>: the value head dim must be at least 1");
  static constexpr AttentionKind kind = AttentionKind::MLA;
  static constexpr int kv_rank = KvRank;
  static constexpr int rope_dim = RopeDim;
  static constexpr int q_rank = QRank;
  static constexpr int nope_dim = NopeDim;
  static constexpr int v_head_dim = VHeadDim;
};

/// Whether P is one of the MHA family (MHA, GQA, MQA): K and V projected per kv head.
template <class P>
concept HeadwisePolicy = P::kind == AttentionKind::MHA || P::kind == AttentionKind::GQA ||
                         P::kind == AttentionKind::MQA;

/// Whether P is a latent-attention policy.
template <class P>
concept LatentPolicy = P::kind == AttentionKind::MLA;

template <class P>
concept AttentionPolicy = HeadwisePolicy<P> || LatentPolicy<P>;

constexpr const char* to_string(AttentionKind k) {
  switch (k) {
    case AttentionKind::MHA: return "mha";
    case AttentionKind::GQA: return "gqa";
    case AttentionKind::MQA: return "mqa";
    case AttentionKind::MLA: return "mla";
  }
  return "?";
}
constexpr const char* to_string(Rope r) {
  switch (r) {
    case Rope::None: return "none";
    case Rope::Full: return "full";
    case Rope::Decoupled: return "decoupled";
  }
  return "?";
}

}  // namespace mla
