// Resumable training: the seeded window sampler, the order in which micro-batch gradients are
// summed, and a run stopped, saved with its train state, restored into a fresh model and
// optimizer, and continued, which must end with the same bits as a run that never stopped.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include <mla/mla.hpp>
#include <mla/train/adamw.hpp>
#include <mla/train/batches.hpp>
#include <mla/train/grad_sum.hpp>
#include <mla/train/schedule.hpp>
#include <mla/train/train_state.hpp>

#include "support/check.hpp"

using namespace mla;  // NOLINT: test file
using mla::test::bit_identical;
using mla::test::check_throws_naming;
namespace fs = std::filesystem;

namespace {

using TinyMla = MLA<>;
constexpr std::int64_t kSteps = 6, kBatch = 2, kAccum = 2, kT = 8;
constexpr std::uint64_t kSeed = 1234;

ModelConfig tiny_config() {
  return ModelConfig{.vocab_size = 37, .d_model = 24, .n_heads = 2, .n_layers = 2, .max_seq_len = kT};
}

std::vector<std::uint16_t> tiny_corpus() {
  std::vector<std::uint16_t> tokens(300);
  std::uint32_t x = 17;
  for (auto& t : tokens) {
    x = x * 1103515245u + 12345u;
    t = static_cast<std::uint16_t>((x >> 16) % 37);
  }
  return tokens;
}

/// Steps [first, last) of the run the trainer makes: accumulation, dropout, clipping, AdamW.
void train(GPT<TinyMla>& model, AdamW<float>& opt, TrainProgress& progress, std::int64_t first, std::int64_t last) {
  const auto tokens = tiny_corpus();
  const CosineSchedule schedule{.peak = 3e-3, .warmup = 2, .total = kSteps};
  Tape<float> tape;
  auto ids = Tensor<std::int32_t>::empty({kBatch, kT}), targets = Tensor<std::int32_t>::empty({kBatch, kT});
  const auto seed_grad = Tensor<float>::from(Shape{}, {1.0f / kAccum});
  GradientSum<float> gradient(model.parameters());
  for (std::int64_t step = first; step < last; ++step) {
    for (std::int64_t micro = 0; micro < kAccum; ++micro) {
      tape.clear();
      gradient.next();
      fill_train_batch(tokens, progress.seed, step, micro, ids, targets);
      const ForwardOptions<float> fwd{.dropout = 0.1f, .seed = counter_hash(kSeed, step, micro, 1)};
      model.loss(tape, ids, targets, fwd).backward(seed_grad);
    }
    gradient.finish();
    opt.step(model.parameters(), schedule(step), clip_factor(grad_norm(model.parameters()), 1.0));
    progress.step = step + 1;
    progress.tokens += kBatch * kT * kAccum;
  }
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("mla_train_state_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("window sampler: a pure function of (seed, step, micro, row), always in range") {
  const std::int64_t n = 1000, T = 16;
  std::int64_t distinct_from_step0 = 0;
  for (std::int64_t step = 0; step < 50; ++step) {
    for (std::int64_t micro = 0; micro < 3; ++micro) {
      for (std::int64_t row = 0; row < 4; ++row) {
        const std::int64_t s = window_start(kSeed, step, micro, row, n, T);
        CHECK(s == window_start(kSeed, step, micro, row, n, T));
        CHECK(s >= 0);
        CHECK(s <= n - T - 1);
        if (s != window_start(kSeed, 0, micro, row, n, T)) ++distinct_from_step0;
      }
    }
  }
  CHECK(distinct_from_step0 > 500);  // steps draw different windows
  CHECK(window_start(1, 3, 0, 0, n, T) != window_start(2, 3, 0, 0, n, T));
  // One window exactly: the only start is 0; no window: refused.
  for (std::int64_t step = 0; step < 20; ++step) CHECK(window_start(kSeed, step, 0, 0, T + 1, T) == 0);
  check_throws_naming<ArgumentError>([] { (void)window_start(kSeed, 0, 0, 0, 16, 16); }, {"16 tokens", "at least 17"});

  std::vector<std::uint16_t> tokens(100);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::uint16_t>(i);
  auto ids = Tensor<std::int32_t>::empty({3, 5}), targets = Tensor<std::int32_t>::empty({3, 5});
  fill_train_batch(tokens, kSeed, 7, 1, ids, targets);
  for (std::int64_t b = 0; b < 3; ++b) {
    const std::int64_t s = window_start(kSeed, 7, 1, b, 100, 5);
    for (std::int64_t t = 0; t < 5; ++t) {
      CHECK(ids.at(b, t) == s + t);
      CHECK(targets.at(b, t) == s + t + 1);
    }
  }
}

TEST_CASE("GradientSum: a step's gradient is ((g_0 + g_1) + g_2), each g_k computed from zero") {
  GPT<TinyMla> model(tiny_config(), kSeed);
  const auto& store = model.parameters();
  const auto tokens = tiny_corpus();
  Tape<float> tape;
  auto ids = Tensor<std::int32_t>::empty({kBatch, kT}), targets = Tensor<std::int32_t>::empty({kBatch, kT});
  const auto seed_grad = Tensor<float>::from(Shape{}, {1.0f / 3});
  auto backward = [&](std::int64_t micro) {
    tape.clear();
    fill_train_batch(tokens, kSeed, 0, micro, ids, targets);
    model.loss(tape, ids, targets).backward(seed_grad);
  };
  std::vector<std::vector<float>> g;  // each micro-batch's gradient alone
  for (std::int64_t micro = 0; micro < 3; ++micro) {
    store.zero_grad();
    backward(micro);
    g.push_back(store.grads().to_vector());
  }
  std::vector<float> expected = g[0];
  for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = (expected[i] + g[1][i]) + g[2][i];

  auto bit_identical = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  GradientSum<float> gradient(store);
  for (int step = 0; step < 2; ++step) {  // the second step starts afresh after finish()
    for (std::int64_t micro = 0; micro < 3; ++micro) {
      gradient.next();
      backward(micro);
    }
    gradient.finish();
    CHECK(bit_identical(store.grads().to_vector(), expected));
  }
  // One micro-batch: its gradient as it is.
  gradient.next();
  backward(1);
  gradient.finish();
  CHECK(bit_identical(store.grads().to_vector(), g[1]));
  // Adding into the previous micro-batch's gradients instead rounds differently: the order is
  // a property, not an accident of this data.
  store.zero_grad();
  for (std::int64_t micro = 0; micro < 3; ++micro) backward(micro);
  CHECK_FALSE(bit_identical(store.grads().to_vector(), expected));
}

TEST_CASE("train state: 3 steps, save, restore into a fresh model, 3 more == 6 straight, bitwise") {
  TempDir dir;
  const fs::path path = dir.path / "model.safetensors";

  GPT<TinyMla> straight(tiny_config(), kSeed);
  AdamW<float> straight_opt(straight.parameters(), AdamWOptions{});
  TrainProgress straight_progress{.seed = kSeed};
  train(straight, straight_opt, straight_progress, 0, kSteps);

  {
    GPT<TinyMla> first(tiny_config(), kSeed);
    AdamW<float> opt(first.parameters(), AdamWOptions{});
    TrainProgress progress{.seed = kSeed};
    train(first, opt, progress, 0, kSteps / 2);
    save_training_checkpoint(path, first, opt, progress);
  }
  GPT<TinyMla> resumed(tiny_config(), /*seed=*/999);  // other initial weights: all must come from the file
  AdamW<float> opt(resumed.parameters(), AdamWOptions{});
  TrainProgress progress = load_training_checkpoint(path, resumed, opt);
  CHECK(progress.step == kSteps / 2);
  CHECK(progress.seed == static_cast<std::int64_t>(kSeed));
  CHECK(progress.tokens == kSteps / 2 * kBatch * kT * kAccum);
  CHECK(opt.steps() == kSteps / 2);
  train(resumed, opt, progress, progress.step, kSteps);

  CHECK(progress == straight_progress);
  CHECK(opt.steps() == straight_opt.steps());
  CHECK(bit_identical(resumed.parameters().values(), straight.parameters().values()));
  CHECK(bit_identical(opt.first_moment(), straight_opt.first_moment()));
  CHECK(bit_identical(opt.second_moment(), straight_opt.second_moment()));
  // And the stopped run did move the weights: the test is not vacuous.
  GPT<TinyMla> fresh(tiny_config(), kSeed);
  CHECK_FALSE(bit_identical(fresh.parameters().values(), straight.parameters().values()));
}

TEST_CASE("train state: a missing or corrupt optim./train. tensor is refused, naming it") {
  TempDir dir;
  GPT<TinyMla> model(tiny_config(), kSeed);
  AdamW<float> opt(model.parameters(), AdamWOptions{});
  TrainProgress progress{.step = 4, .seed = 1, .tokens = 64};
  opt.set_steps(4);
  const TrainStateTensors state(opt, progress);

  // Rewrites the checkpoint with the train-state tensor `name` dropped or replaced.
  const fs::path path = dir.path / "bad.safetensors";
  auto write_with = [&](const std::string& name, const SafetensorsTensor* replacement) {
    std::vector<SafetensorsTensor> extra;
    for (const auto& t : state.tensors()) {
      if (t.name != name) extra.push_back(t);
      else if (replacement) extra.push_back(*replacement);
    }
    save_model(path, model, extra);
  };
  GPT<TinyMla> target(tiny_config(), 5);
  AdamW<float> target_opt(target.parameters(), AdamWOptions{});
  const Tensor<float> before = target.parameters().values().clone();
  auto refused = [&](std::initializer_list<const char*> needles) {
    check_throws_naming<IoError>([&] { (void)load_training_checkpoint(path, target, target_opt); }, needles);
    CHECK(bit_identical(target.parameters().values(), before));  // nothing changed
    CHECK(target_opt.steps() == 0);
  };

  write_with("optim.m", nullptr);
  refused({"bad.safetensors", "missing tensor 'optim.m'"});
  write_with("train.step", nullptr);
  refused({"missing tensor 'train.step'"});

  const std::vector<float> short_moment(10);
  const SafetensorsTensor wrong_shape{"optim.v", DType::F32, Shape{10}, std::as_bytes(std::span<const float>(short_moment))};
  write_with("optim.v", &wrong_shape);
  refused({"'optim.v' has shape"});

  const float as_float = 3.0f;
  const SafetensorsTensor wrong_dtype{"optim.step", DType::F32, Shape{}, std::as_bytes(std::span<const float>(&as_float, 1))};
  write_with("optim.step", &wrong_dtype);
  refused({"'optim.step' is F32, expected I64"});

  const std::int64_t ahead = 9;  // more updates than steps
  const SafetensorsTensor too_many{"optim.step", DType::I64, Shape{}, std::as_bytes(std::span<const std::int64_t>(&ahead, 1))};
  write_with("optim.step", &too_many);
  refused({"'optim.step'", "exceeds 'train.step'"});

  std::vector<float> nan_moment(static_cast<std::size_t>(opt.first_moment().numel()));
  nan_moment[3] = std::nanf("");
  const SafetensorsTensor non_finite{"optim.m", DType::F32, Shape{static_cast<std::int64_t>(nan_moment.size())},
                                     std::as_bytes(std::span<const float>(nan_moment))};
  write_with("optim.m", &non_finite);
  refused({"'optim.m' holds a non-finite value"});

  // Another model's training checkpoint: the config names the difference.
  {
    ModelConfig wider = tiny_config();
    wider.d_model = 32;
    GPT<TinyMla> other(wider, kSeed);
    AdamW<float> other_opt(other.parameters(), AdamWOptions{});
    save_training_checkpoint(path, other, other_opt, progress);
  }
  refused({"d_model is 32 in the file but 24 in the model"});
  // A model-only checkpoint is not a training checkpoint.
  save_model(path, model);
  refused({"missing tensor 'optim."});
  // The intact file loads.
  write_with("", nullptr);
  CHECK(load_training_checkpoint(path, target, target_opt) == progress);
  CHECK(target_opt.steps() == 4);
}
