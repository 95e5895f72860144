// The attention layer of each policy at the default model's width (d_model 256, 8 heads of 32;
// MLA: q_rank 128, kv_rank 170, RoPE dim 16), batch 8, causal over T = 256 or 1024 tokens:
// projections, RoPE, attention and the output projection, as one block of the model runs them.
//
//   attention_forward/<variant>/T:<T>   x [8, T, 256] -> out [8, T, 256]
//   attention_train/<variant>/T:<T>     the same forward, then backward from a fixed random
//                                       gradient of out into x and every weight of the layer
//
// items_per_second: tokens (8*T) per second.
#include <benchmark/benchmark.h>

#include <cstdint>

#include <mla/mla.hpp>

namespace {

constexpr std::int64_t kBatch = 8, kModel = 256;

template <class P>
struct Layer {
  explicit Layer(std::int64_t T)
      : cfg(mla::resolve<P>(mla::ModelConfig{.vocab_size = 8192, .d_model = kModel, .n_heads = 8, .n_layers = 4, .max_seq_len = T})),
        attention(cfg, store, "attn."),
        x(random({kBatch, T, kModel}, 1)),
        grad_out(random({kBatch, T, kModel}, 2)) {
    store.allocate();
    store.initialize(1, cfg.n_layers);
  }

  static mla::Tensor<float> random(mla::Shape shape, std::uint64_t seed) {
    auto t = mla::Tensor<float>::empty(shape);
    std::uint64_t s = seed * 0x9E3779B97F4A7C15ull;
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      t[i] = static_cast<float>(static_cast<double>(s >> 40) / static_cast<double>(1ull << 24) - 0.5);
    }
    return t;
  }

  mla::ModelConfig cfg;
  mla::ParameterStore<float> store;
  mla::AttentionLayer<P, float, mla::Cpu> attention;
  mla::Tensor<float> x, grad_out, grad_x = mla::Tensor<float>::zeros(x.shape());
  mla::Tape<float> tape;
};

template <class P, bool Train>
void BM_Attention(benchmark::State& state) {
  const std::int64_t T = state.range(0);
  Layer<P> layer(T);
  const auto step = [&] {
    layer.tape.clear();
    if constexpr (Train) {
      layer.store.zero_grad();
      const auto x = layer.tape.leaf(layer.x, layer.grad_x);
      const auto out = layer.attention.forward(layer.tape, layer.store, x);
      out.backward(layer.grad_out);
      return layer.grad_x.data();
    } else {
      mla::NoGradGuard no_grad;
      const auto out = layer.attention.forward(layer.tape, layer.store, layer.tape.constant(layer.x));
      return out.value().data();
    }
  };
  step();  // sizes the tape's arena
  for (auto _ : state) benchmark::DoNotOptimize(step());
  state.SetItemsProcessed(state.iterations() * kBatch * T);
}

void Lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"T"})->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
}

using mla::Rope;
using Mha = mla::MHA<Rope::Full>;
using Gqa = mla::GQA<2, Rope::Full>;
using Mqa = mla::MQA<Rope::Full>;
using Mla = mla::MLA<170, 16, 128>;
BENCHMARK_TEMPLATE(BM_Attention, Mha, false)->Name("attention_forward/mha")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Gqa, false)->Name("attention_forward/gqa2")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Mqa, false)->Name("attention_forward/mqa")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Mla, false)->Name("attention_forward/mla")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Mha, true)->Name("attention_train/mha")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Gqa, true)->Name("attention_train/gqa2")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Mqa, true)->Name("attention_train/mqa")->Apply(Lengths);
BENCHMARK_TEMPLATE(BM_Attention, Mla, true)->Name("attention_train/mla")->Apply(Lengths);

}  // namespace

BENCHMARK_MAIN();
