// mla/attention/cache.hpp — what a KV cache holds, and how a cached step attends.
#pragma once

namespace mla {

/// What an attention layer caches per token.
///   Full    keys and values per kv head (MHA: H heads, GQA: G, MQA: 1; MLA: decompressed K
///           and V of every head, the reference experiments' "uncompressed" MLA)
///   Latent  MLA only: the normalized latent c_kv and the rotated shared key k_pe,
///           kv_rank + qk_rope_dim floats per token per layer
enum class CacheMode { Full, Latent };

/// How an MLA layer attends over a latent cache.
///   Absorbed      W_UK folded into the query, W_UV applied after: attends over the latents
///                 as cached, never decompressing them
///   Materialized  decompresses K and V of every cached token, then attends (as the
///                 reference experiments' MLA decodes)
///   Auto          whichever costs fewer operations for this step (Absorbed when decoding)
enum class DecodePath { Auto, Absorbed, Materialized };

constexpr const char* to_string(CacheMode m) { return m == CacheMode::Full ? "full" : "latent"; }

}  // namespace mla
