// One training step of the default model (d_model 256, 8 heads, 4 layers, vocab 8192, seq 256,
// batch 8) per attention variant: zero the gradients, forward, cross-entropy, backward,
// gradient norm, AdamW — what examples/train_model does every step. Three untimed steps first;
// tools/bench.sh reports each row as the median of three repetitions of 2 s each.
//
// items_per_second: training tokens (batch * seq) per second.
// Counters: parameters; model_flops_per_token, the work a token needs whatever the
// implementation: 6 FLOPs per weight of every product (2 forward, 4 backward: the weights'
// and the inputs' gradients; the embedding is a lookup, not a product) plus the attention's
// two products, 6 x heads x (dk + dv) per key, over (seq + 1) / 2 keys on average (causal);
// mfu, model-FLOPs utilization: model FLOPs per second over the FMA peak measured before the
// first row (benchmarks/support/machine.hpp); peak_rss_bytes (the process's peak resident set
// after the row's first run: run one variant per process, as tools/bench.sh does, for a
// per-variant figure).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include <sys/resource.h>

#include <mla/mla.hpp>

#include "support/machine.hpp"

namespace {

constexpr std::int64_t kBatch = 8, kSeq = 256, kVocab = 8192;

mla::ModelConfig default_config() {
  return mla::ModelConfig{.vocab_size = kVocab, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = kSeq};
}

/// The model FLOPs of one training token (see the file comment).
template <class P>
double model_flops_per_token(const mla::GPT<P>& model) {
  const mla::ModelConfig& c = model.config();
  double weights = 0;
  for (const auto& e : model.parameters().entries()) {
    const bool lookup = e.name == "wte.weight" || e.name == "wpe.weight";
    if (e.shape.rank() == 2 && !lookup) weights += static_cast<double>(e.shape.numel());
  }
  const double dk = static_cast<double>(c.qk_head_dim()), dv = static_cast<double>(c.value_head_dim());
  const double keys = (static_cast<double>(kSeq) + 1) / 2;
  const double attention = static_cast<double>(c.n_layers * c.n_heads) * 6 * (dk + dv) * keys;
  return 6 * weights + attention;
}

template <class P>
void BM_TrainStep(benchmark::State& state) {
  const double peak = bench::measure().flops_per_s;
  mla::GPT<P> model(default_config(), 1);
  mla::AdamW<float> opt(model.parameters(), {});
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::int32_t> token(0, kVocab - 1);
  std::vector<std::int32_t> window(static_cast<std::size_t>(kBatch * (kSeq + 1)));
  for (auto& t : window) t = token(rng);
  auto ids = mla::Tensor<std::int32_t>::empty({kBatch, kSeq}), targets = mla::Tensor<std::int32_t>::empty({kBatch, kSeq});
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t t = 0; t < kSeq; ++t) {
      ids[b * kSeq + t] = window[static_cast<std::size_t>(b * (kSeq + 1) + t)];
      targets[b * kSeq + t] = window[static_cast<std::size_t>(b * (kSeq + 1) + t + 1)];
    }
  }
  mla::Tape<float> tape;
  auto& store = model.parameters();
  const auto step = [&] {
    store.zero_grad();
    tape.clear();
    const auto loss = model.loss(tape, ids, targets);
    loss.backward();
    const double norm = mla::grad_norm(store);
    opt.step(store, 1e-4, mla::clip_factor(norm, 1.0));
    return norm;
  };
  // Set-up, not the steady state: the first step grows the tape's arena block by block, the
  // second moves it into one block of the final size and faults that block's pages in.
  for (int warm_up = 0; warm_up < 3; ++warm_up) step();
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) benchmark::DoNotOptimize(step());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.SetItemsProcessed(state.iterations() * kBatch * kSeq);
  state.counters["parameters"] = static_cast<double>(store.count());
  const double flops_per_token = model_flops_per_token(model);
  state.counters["model_flops_per_token"] = flops_per_token;
  state.counters["mfu"] = flops_per_token * static_cast<double>(kBatch * kSeq * state.iterations()) / seconds / peak;
  // The process's peak as the first run of this row left it: Google Benchmark runs the function
  // again for each repetition, and every fresh model then grows glibc's heap a little
  // (fragmentation, ~10% per run), which is not the model's footprint.
  static const double first_peak = [] {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux: kilobytes
  }();
  state.counters["peak_rss_bytes"] = first_peak;
}

using mla::Rope;
BENCHMARK_TEMPLATE(BM_TrainStep, mla::MHA<Rope::Full>)->Name("train/mha")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_TrainStep, mla::GQA<2, Rope::Full>)->Name("train/gqa2")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_TrainStep, mla::MQA<Rope::Full>)->Name("train/mqa")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_TrainStep, mla::MLA<170, 16, 128>)->Name("train/mla")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
