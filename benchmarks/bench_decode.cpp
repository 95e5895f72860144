// One decode step of the default model (d_model 256, 8 heads, 4 layers, vocab 8192) per
// attention variant and cache mode, at a fixed context of 512, 2048 or 8192 cached tokens.
//
// items_per_second: decoded tokens (batch rows) per second.
// bytes_per_second: KV-cache bytes read per second (context * bytes per token * rows).
// Counters: cache_bytes_per_token (all layers).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include <mla/mla.hpp>

namespace {

mla::ModelConfig default_config() {
  return mla::ModelConfig{.vocab_size = 8192, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = 8193};
}

template <class P, mla::CacheMode Mode, mla::DecodePath Path>
void BM_Decode(benchmark::State& state) {
  const std::int64_t context = state.range(0), batch = state.range(1);
  const mla::GPT<P> model(default_config(), 1);
  auto cache = model.make_cache(batch, context + 1, Mode);
  // The cached tokens' content does not change the cost: fill with noise, then decode one
  // token at position `context` again and again.
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  cache.for_each_plane([&](mla::CachePlane<float, mla::Cpu>& plane) {
    const std::int64_t W = plane.width(), rows = plane.shape().numel() / W;
    std::vector<float> x(static_cast<std::size_t>(W));
    for (std::int64_t r = 0; r < rows; ++r) {
      for (float& v : x) v = normal(rng);
      mla::kernels::store_row(mla::Cpu{}, plane.rows_out(), r, x.data(), W);
    }
  });
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch), 42);
  for (auto _ : state) {
    std::fill(cache.lengths.begin(), cache.lengths.end(), context);
    benchmark::DoNotOptimize(model.decode(tokens, cache, Path).data());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(state.iterations() * batch * context * cache.bytes_per_token);
  state.counters["cache_bytes_per_token"] = static_cast<double>(cache.bytes_per_token);
}

void Contexts(benchmark::internal::Benchmark* b) {
  b->ArgNames({"context", "batch"})->ArgsProduct({{512, 2048, 8192}, {1, 8}})->Unit(benchmark::kMillisecond)->UseRealTime();
}

using mla::CacheMode, mla::DecodePath, mla::Rope;
BENCHMARK_TEMPLATE(BM_Decode, mla::MHA<Rope::Full>, CacheMode::Full, DecodePath::Auto)->Name("decode/mha")->Apply(Contexts);
BENCHMARK_TEMPLATE(BM_Decode, mla::GQA<2, Rope::Full>, CacheMode::Full, DecodePath::Auto)->Name("decode/gqa2")->Apply(Contexts);
BENCHMARK_TEMPLATE(BM_Decode, mla::MQA<Rope::Full>, CacheMode::Full, DecodePath::Auto)->Name("decode/mqa")->Apply(Contexts);
BENCHMARK_TEMPLATE(BM_Decode, mla::MLA<170, 16, 128>, CacheMode::Latent, DecodePath::Absorbed)->Name("decode/mla_absorbed")->Apply(Contexts);
BENCHMARK_TEMPLATE(BM_Decode, mla::MLA<170, 16, 128>, CacheMode::Latent, DecodePath::Materialized)->Name("decode/mla_decompressing")->Apply(Contexts);
BENCHMARK_TEMPLATE(BM_Decode, mla::MLA<170, 16, 128>, CacheMode::Full, DecodePath::Auto)->Name("decode/mla_full_cache")->Apply(Contexts);

}  // namespace

BENCHMARK_MAIN();
