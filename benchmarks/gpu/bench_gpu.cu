// bench_gpu — the Thrust/CUDA backend's speed on the GPU it runs on, beside the card's measured
// limits (tools/gpu_check.sh runs it; the CPU's benchmarks are the Google Benchmark programs,
// which the GPU machines do not have).
//
//   bench_gpu [--quick]
//
// Prints one line per measurement, `name value unit`, for tools/gpu_check.sh's table:
//   copy_bandwidth      device-to-device cudaMemcpy of 1 GiB, best of 5           GB/s (read + write)
//   sgemm               cublasSgemm 8192^3 in float32 (TF32 off), best of 5         GFLOP/s
//   train/<v>/<size>    training tokens/s (loss, backward, clipping, AdamW) of MHA, GQA (2 kv heads)
//                       and MLA, at the default size (d 256, 8 heads, 4 layers, vocab 10000, T 256,
//                       batch 8) and a GPU size (d 1024, 16 heads, 12 layers, vocab 32768, T 1024,
//                       batch 16; MLA q_rank 512, kv_rank 512, rope 32)
//   decode/mla/<B>      MLA decode tokens/s (latent cache, absorbed) at 8k context, batch B = 1, 64,
//                       and the cache bytes those steps read per second
// Timings are the median of timed repetitions after a warm-up, the stream synchronized around
// each. --quick: smaller sizes and fewer repetitions, to check the program itself.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <mla/cuda.hpp>

namespace {

using Clock = std::chrono::steady_clock;
using mla::Cuda;

bool quick = false;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// The median time of `reps` calls of `f` after `warmup` untimed ones, the stream drained
/// before and after each.
template <class F>
double median_seconds(int warmup, int reps, F f) {
  for (int i = 0; i < warmup; ++i) f();
  mla::gpu::synchronize();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    mla::gpu::synchronize();
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void copy_bandwidth() {
  const std::size_t bytes = quick ? (std::size_t{1} << 26) : (std::size_t{1} << 30);
  const auto a = Cuda::allocate(bytes), b = Cuda::allocate(bytes);
  Cuda::fill_zero(a.get(), bytes);
  const double s = median_seconds(1, 5, [&] { Cuda::copy(b.get(), a.get(), bytes); });
  std::printf("copy_bandwidth %.1f GB/s\n", 2.0 * static_cast<double>(bytes) / s / 1e9);
}

void sgemm() {
  const std::int64_t n = quick ? 1024 : 8192;
  const auto A = mla::Tensor<float, Cuda>::zeros({n, n}), B = mla::Tensor<float, Cuda>::zeros({n, n}),
             C = mla::Tensor<float, Cuda>::zeros({n, n});
  const double s = median_seconds(1, 5, [&] {
    mla::kernels::gemm(Cuda{}, mla::Transpose::No, mla::Transpose::No, n, n, n, 1.0f, A.data(), B.data(), 0.0f,
                       C.data());
  });
  std::printf("sgemm %.1f GFLOP/s\n", 2.0 * static_cast<double>(n) * n * n / s / 1e9);
}

struct Size {
  const char* name;
  mla::ModelConfig cfg;
  std::int64_t T, batch;
};

Size default_size() {
  return {"default", mla::ModelConfig{.vocab_size = 10000, .d_model = 256, .n_heads = 8, .n_layers = 4, .max_seq_len = 256},
          256, 8};
}
Size gpu_size() {
  if (quick) {
    return {"gpu", mla::ModelConfig{.vocab_size = 4096, .d_model = 512, .n_heads = 8, .n_layers = 2, .max_seq_len = 256},
            256, 4};
  }
  return {"gpu", mla::ModelConfig{.vocab_size = 32768, .d_model = 1024, .n_heads = 16, .n_layers = 12, .max_seq_len = 1024},
          1024, 16};
}

mla::Tensor<std::int32_t, Cuda> random_ids(std::int64_t B, std::int64_t T, std::int64_t vocab, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> host(static_cast<std::size_t>(B * T));
  for (auto& id : host) id = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
  return mla::Tensor<std::int32_t, Cuda>::from({B, T}, std::span<const std::int32_t>(host));
}

template <class P>
void train(const char* variant, const Size& size, mla::ModelConfig cfg) {
  mla::GPT<P, float, Cuda> model(cfg, 1);
  mla::AdamW<float, Cuda> opt(model.parameters(), {});
  const auto ids = random_ids(size.batch, size.T, cfg.vocab_size, 1);
  const auto targets = random_ids(size.batch, size.T, cfg.vocab_size, 2);
  mla::Tape<float, Cuda> tape;
  const double s = median_seconds(2, quick ? 2 : 5, [&] {
    tape.clear();
    model.parameters().zero_grad();
    model.loss(tape, ids, targets).backward();
    opt.step(model.parameters(), 1e-4, mla::clip_factor(mla::grad_norm(model.parameters()), 1.0));
  });
  std::printf("train/%s/%s %.0f tokens/s\n", variant, size.name, static_cast<double>(size.batch * size.T) / s);
}

void train_all(const Size& size) {
  mla::ModelConfig gqa = size.cfg;
  gqa.n_kv_heads = 2;
  mla::ModelConfig mla_cfg = size.cfg;
  if (std::string(size.name) == "gpu" && !quick) {
    mla_cfg.q_rank = 512;
    mla_cfg.kv_rank = 512;
    mla_cfg.qk_rope_dim = 32;
  }
  train<mla::MHA<>>("mha", size, size.cfg);
  train<mla::GQA<mla::Dynamic>>("gqa", size, gqa);
  train<mla::MLA<>>("mla", size, mla_cfg);
}

/// MLA decode over a latent cache holding `context` tokens per row (random latents: decode
/// time does not depend on their values).
void decode(std::int64_t B) {
  const std::int64_t context = quick ? 1024 : 8192;
  mla::ModelConfig cfg = gpu_size().cfg;
  cfg.max_seq_len = context + 64;
  if (!quick) {
    cfg.q_rank = 512;
    cfg.kv_rank = 512;
    cfg.qk_rope_dim = 32;
  }
  mla::GPT<mla::MLA<>, float, Cuda> model(cfg, 1);
  auto cache = model.make_cache(B, cfg.max_seq_len);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (auto& layer : cache.layers) {
    std::vector<float> host(static_cast<std::size_t>(layer.latent.wide.numel()));
    for (auto& x : host) x = normal(rng);
    Cuda::copy_from_host(layer.latent.wide.data(), host.data(), host.size() * sizeof(float));
  }
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(B), 1);
  mla::Tensor<float, Cuda> logits;
  const int steps = quick ? 4 : 32;
  const double s = median_seconds(1, 3, [&] {
    std::fill(cache.lengths.begin(), cache.lengths.end(), context);
    for (int i = 0; i < steps; ++i) logits = model.decode(tokens, cache);
  });
  const double tokens_per_s = static_cast<double>(B * steps) / s;
  const double bytes_per_step = static_cast<double>(model.cache_bytes_per_token()) * static_cast<double>(B) *
                                (static_cast<double>(context) + steps / 2.0);
  std::printf("decode/mla/%lld %.0f tokens/s\n", static_cast<long long>(B), tokens_per_s);
  std::printf("decode/mla/%lld/cache_read %.1f GB/s\n", static_cast<long long>(B),
              bytes_per_step * static_cast<double>(steps) / s / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "bench_gpu: unknown argument '%s' (expected --quick)\n", argv[i]);
      return 2;
    }
  }
  try {
    if (!mla::gpu::available()) {
      std::fprintf(stderr, "bench_gpu: no CUDA device found\n");
      return 1;
    }
    std::printf("device %s\n", mla::gpu::describe().c_str());
    copy_bandwidth();
    sgemm();
    train_all(default_size());
    train_all(gpu_size());
    decode(1);
    decode(64);
  } catch (const mla::Error& e) {
    std::fprintf(stderr, "bench_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
