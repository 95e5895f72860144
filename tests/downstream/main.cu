// A downstream CUDA program: a small MLA model trained a few steps and decoded on the GPU through
// mla::cuda, from an installed mla. Exits 77 (skipped) where there is no GPU.
#include <cstdio>
#include <vector>

#include <mla/cuda.hpp>

int main() {
  if (!mla::gpu::available()) {
    std::puts("skipped: no CUDA device");
    return 77;
  }
  const mla::ModelConfig cfg{.vocab_size = 50, .d_model = 32, .n_heads = 4, .n_layers = 2, .max_seq_len = 16};
  mla::GPT<mla::MLA<>, float, mla::Cuda> model(cfg, 1);
  mla::AdamW<float, mla::Cuda> opt(model.parameters(), {});
  std::vector<std::int32_t> ids(2 * 16), targets(2 * 16);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int32_t>(i % 50);
    targets[i] = static_cast<std::int32_t>((i + 1) % 50);
  }
  const auto x = mla::Tensor<std::int32_t, mla::Cuda>::from({2, 16}, std::span<const std::int32_t>(ids));
  const auto y = mla::Tensor<std::int32_t, mla::Cuda>::from({2, 16}, std::span<const std::int32_t>(targets));
  mla::Tape<float, mla::Cuda> tape;
  float first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    tape.clear();
    model.parameters().zero_grad();
    const auto loss = model.loss(tape, x, y);
    loss.backward();
    opt.step(model.parameters(), 1e-2, mla::clip_factor(mla::grad_norm(model.parameters()), 1.0));
    last = loss.value().to_vector()[0];
    if (step == 0) first = last;
  }
  auto cache = model.make_cache(1, 16);
  const auto logits = model.prefill({{1, 2, 3}}, cache);
  std::printf("%s: loss %.4f -> %.4f, %lld logits decoded\n", mla::gpu::describe().c_str(), first, last,
              static_cast<long long>(logits.numel()));
  return last < first ? 0 : 1;
}
