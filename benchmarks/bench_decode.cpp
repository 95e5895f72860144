// One decode step of the default model (d_model 256, 8 heads, 4 layers, vocab 8192) per
// attention variant, cache mode and cache dtype, at a fixed context of 512 to 32768 cached
// tokens, batch 1 and 8 — held against the roofline of this machine, measured in the same run
// (benchmarks/support/machine.hpp: the FMA peak and the read bandwidth).
//
// Per step, for B rows at context C:
//   bytes  the weights once (float32: 4 x parameters) + B x C x cache bytes per token (as stored)
//   FLOPs  B x (2 x parameters: every weight once per token) + B x the attention's:
//            MHA/GQA/MQA, MLA full cache:  layers x H x C x 2 (Dk + Dv)     (scores, weighted sum)
//            MLA absorbed:   layers x H x (C x 2 (2 Dc + R) + 2 Dc (N + Dv))   (+ W_UK, W_UV folded)
//            MLA decompressing:  the full cache's + layers x C x 2 Dc H (N + Dv) (decompressing)
//   roofline  max(bytes / read bandwidth, FLOPs / FMA peak); of_roofline = roofline / time.
// items_per_second: decoded tokens (batch rows) per second; bytes_per_second: bytes per step
// over the step's time. Counters: cache_bytes_per_token, bytes_per_step, flops_per_step,
// roofline_ms, of_roofline, and the limits they rest on: peak_gflops, read_gbs (measured once,
// before the first row, on an otherwise idle machine).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include <mla/mla.hpp>

#include "support/machine.hpp"

namespace {

constexpr std::int64_t kMaxContext = 32768;

mla::ModelConfig default_config() {
  return mla::ModelConfig{.vocab_size = 8192, .d_model = 256, .n_heads = 8, .n_layers = 4,
                          .max_seq_len = kMaxContext + 1};
}

const bench::Limits& limits() {
  static const bench::Limits l = bench::measure();
  return l;
}

/// The attention's FLOPs per decoded token at context C (see the file comment).
template <class P>
double attention_flops(const mla::ModelConfig& c, mla::CacheMode mode, mla::DecodePath path, double C) {
  const double L = static_cast<double>(c.n_layers), H = static_cast<double>(c.n_heads);
  if constexpr (mla::LatentPolicy<P>) {
    const double Dc = static_cast<double>(c.kv_rank), R = static_cast<double>(c.qk_rope_dim),
                 N = static_cast<double>(c.qk_nope_dim), Dv = static_cast<double>(c.v_head_dim);
    const double full = L * H * C * 2 * (N + R + Dv);
    if (mode == mla::CacheMode::Full) return full;
    if (path == mla::DecodePath::Materialized) return full + L * C * 2 * Dc * H * (N + Dv);
    return L * H * (C * 2 * (2 * Dc + R) + 2 * Dc * (N + Dv));
  } else {
    return L * H * C * 2 * 2 * static_cast<double>(c.head_dim);
  }
}

template <class P>
void decode(benchmark::State& state, mla::CacheMode mode, mla::DecodePath path, mla::CacheDtype dtype) {
  const std::int64_t context = state.range(0), batch = state.range(1);
  const mla::GPT<P> model(default_config(), 1);
  auto cache = model.make_cache(batch, context + 1, mode, dtype);
  // The cached tokens' content does not change the cost: noise, stored in the cache's dtype;
  // then one token decoded at position `context` again and again.
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  cache.for_each_plane([&](mla::CachePlane<float, mla::Cpu>& plane) { plane.fill([&] { return normal(rng); }); });
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch), 42);
  double seconds = 0;
  for (auto _ : state) {
    std::fill(cache.lengths.begin(), cache.lengths.end(), context);
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(model.decode(tokens, cache, path).data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    seconds += s;
  }
  const auto& c = model.config();
  const double params = static_cast<double>(model.parameters().count()), B = static_cast<double>(batch);
  const double bytes = 4 * params + B * static_cast<double>(context) * static_cast<double>(cache.bytes_per_token);
  const double flops = B * (2 * params + attention_flops<P>(c, mode, path, static_cast<double>(context)));
  const double roofline = std::max(bytes / limits().bytes_per_s, flops / limits().flops_per_s);
  state.SetItemsProcessed(state.iterations() * batch);
  state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * bytes));
  state.counters["cache_bytes_per_token"] = static_cast<double>(cache.bytes_per_token);
  state.counters["bytes_per_step"] = bytes;
  state.counters["flops_per_step"] = flops;
  state.counters["roofline_ms"] = roofline * 1e3;
  state.counters["of_roofline"] = roofline * static_cast<double>(state.iterations()) / seconds;
  state.counters["peak_gflops"] = limits().flops_per_s / 1e9;
  state.counters["read_gbs"] = limits().bytes_per_s / 1e9;
}

template <class P>
void add(const std::string& name, mla::CacheMode mode, mla::DecodePath path,
         std::initializer_list<mla::CacheDtype> dtypes) {
  for (mla::CacheDtype dtype : dtypes) {
    benchmark::RegisterBenchmark((name + "/" + mla::to_string(dtype)).c_str(),
                                 [=](benchmark::State& state) { decode<P>(state, mode, path, dtype); })
        ->ArgNames({"context", "batch"})
        ->ArgsProduct({{512, 2048, 8192, kMaxContext}, {1, 8}})
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime();
  }
}

using mla::CacheDtype, mla::CacheMode, mla::DecodePath, mla::Rope;
constexpr auto kAll = {CacheDtype::F32, CacheDtype::BF16, CacheDtype::Int8};

// The rows: every variant in every dtype; MLA's decompressing paths in float32 only.
const bool registered = [] {
  add<mla::MHA<Rope::Full>>("decode/mha", CacheMode::Full, DecodePath::Auto, kAll);
  add<mla::GQA<2, Rope::Full>>("decode/gqa2", CacheMode::Full, DecodePath::Auto, kAll);
  add<mla::MQA<Rope::Full>>("decode/mqa", CacheMode::Full, DecodePath::Auto, kAll);
  add<mla::MLA<170, 16, 128>>("decode/mla_absorbed", CacheMode::Latent, DecodePath::Absorbed, kAll);
  add<mla::MLA<170, 16, 128>>("decode/mla_decompressing", CacheMode::Latent, DecodePath::Materialized,
                              {CacheDtype::F32});
  add<mla::MLA<170, 16, 128>>("decode/mla_full_cache", CacheMode::Full, DecodePath::Auto, {CacheDtype::F32});
  return true;
}();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  (void)limits();  // before any row: the limits of the idle machine, not of one busy with a row's cache
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
