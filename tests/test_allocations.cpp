// No heap allocation in the steady state of training or decoding (issue 5).
//
// This program replaces malloc and its relatives with versions that forward to glibc's own
// (__libc_malloc & co.) and count every call made while counting is switched on, from any
// thread (OpenMP workers included). operator new reaches malloc (or aligned_alloc) in
// libstdc++, so every allocation of the process is seen. Each case warms up for a few steps,
// then counts over a few more and requires zero.
//
// MLA_ALLOC_TRACE=1 in the environment prints a backtrace of every counted allocation to
// stderr (the program is linked with exported symbols, so frames carry mangled names).
//
// Under a sanitizer the allocator belongs to the sanitizer's runtime, which cannot be
// replaced; the program then says so, still runs every step (for the sanitizer to check),
// and asserts no count.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <mla/mla.hpp>

#include "support/check.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MLA_ALLOC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MLA_ALLOC_SANITIZED 1
#endif
#endif
#if !defined(MLA_ALLOC_SANITIZED) && defined(__GLIBC__)
#define MLA_ALLOC_COUNTING 1
#else
#define MLA_ALLOC_COUNTING 0
#endif

#if MLA_ALLOC_COUNTING
#include <cerrno>
#include <execinfo.h>
#include <unistd.h>
#endif

namespace alloc_count {

std::atomic<bool> counting{false};        // count only inside a measured region
std::atomic<std::int64_t> allocations{0};  // calls of malloc & co. while counting
bool trace = false;                        // print a backtrace per counted allocation

}  // namespace alloc_count

#if MLA_ALLOC_COUNTING

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void __libc_free(void*);
void* __libc_memalign(std::size_t, std::size_t);
void* __libc_valloc(std::size_t);
void* __libc_pvalloc(std::size_t);
}

namespace alloc_count {
namespace {

thread_local bool in_hook = false;  // the tracer's own allocations are not counted

void write_str(const char* s) {
  std::size_t n = 0;
  while (s[n]) ++n;
  (void)!::write(2, s, n);
}

void write_uint(std::size_t v) {
  char buf[24];
  char* p = buf + sizeof buf;
  *--p = '\0';
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  write_str(p);
}

void note(const char* fn, std::size_t bytes) {
  if (!counting.load(std::memory_order_relaxed) || in_hook) return;
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (!trace) return;
  in_hook = true;
  write_str("---- counted allocation: ");
  write_str(fn);
  write_str("(");
  write_uint(bytes);
  write_str(")\n");
  void* frames[48];
  const int n = ::backtrace(frames, 48);
  ::backtrace_symbols_fd(frames, n, 2);  // writes without allocating
  in_hook = false;
}

// Reads MLA_ALLOC_TRACE and loads what backtrace() needs (it may allocate on first use)
// before anything is counted.
const bool initialized = [] {
  const char* env = std::getenv("MLA_ALLOC_TRACE");
  trace = env != nullptr && env[0] != '\0' && env[0] != '0';
  void* frames[4];
  (void)::backtrace(frames, 4);
  return true;
}();

}  // namespace
}  // namespace alloc_count

extern "C" {

void* malloc(std::size_t n) {
  alloc_count::note("malloc", n);
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  alloc_count::note("calloc", n * size);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  alloc_count::note("realloc", n);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(std::size_t alignment, std::size_t n) {
  alloc_count::note("memalign", n);
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  alloc_count::note("aligned_alloc", n);
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  alloc_count::note("posix_memalign", n);
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr && n != 0) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(std::size_t n) {
  alloc_count::note("valloc", n);
  return __libc_valloc(n);
}
void* pvalloc(std::size_t n) {
  alloc_count::note("pvalloc", n);
  return __libc_pvalloc(n);
}

}  // extern "C"

#endif  // MLA_ALLOC_COUNTING

using namespace mla;  // NOLINT: test file

namespace {

constexpr int kWarmup = 2;
constexpr int kMeasured = 3;

/// Heap allocations made by `kMeasured` calls of `step` after `kWarmup` unmeasured ones.
template <class Step>
std::int64_t allocations_in(Step&& step) {
  for (int i = 0; i < kWarmup; ++i) step();
  alloc_count::allocations.store(0);
  alloc_count::counting.store(true);
  for (int i = 0; i < kMeasured; ++i) step();
  alloc_count::counting.store(false);
  return alloc_count::allocations.load();
}

/// Whether this build counts allocations; if not, says so (once per case).
bool counts() {
  if (MLA_ALLOC_COUNTING) return true;
  MESSAGE("allocation counting is off in this build (a sanitizer owns malloc): the steps run, "
          "their allocations are not checked");
  return false;
}


ModelConfig config() {
  return ModelConfig{.vocab_size = 97, .d_model = 64, .n_heads = 4, .n_layers = 2, .max_seq_len = 16};
}

using MhaRope = MHA<Rope::Full>;
using GqaRope = GQA<2, Rope::Full>;
using MqaNoRope = MQA<Rope::None>;  // learned positions (wpe)
using MhaDecoupled = MHA<Rope::Decoupled>;
using MlaRope = MLA<>;                       // q_rank = D/2 > 0
using MlaNoQ = MLA<Dynamic, Dynamic, 0>;     // q_rank = 0: a plain query projection
using MlaNoRope = MLA<Dynamic, 0, Dynamic>;  // no RoPE at all (wpe)

}  // namespace

#define ALLOC_POLICIES MhaRope, GqaRope, MqaNoRope, MhaDecoupled, MlaRope, MlaNoQ, MlaNoRope

TEST_CASE_TEMPLATE("allocations: a training step allocates nothing once warm", P, ALLOC_POLICIES) {
  const bool check = counts();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    const test::ThreadsGuard scope(threads);
    GPT<P> model(config(), 1);
    ParameterStore<float>& store = model.parameters();
    AdamW<float> opt(store, {});
    Tape<float> tape;
    const auto ids = test::random_ids({2, 16}, 97, 2), targets = test::random_ids({2, 16}, 97, 3);
    std::uint64_t seed = 0;
    float last_loss = 0;
    const std::int64_t n = allocations_in([&] {
      store.zero_grad();
      tape.clear();
      const Var<float> loss = model.loss(tape, ids, targets, {.dropout = 0.1f, .seed = ++seed});
      loss.backward();
      last_loss = loss.value()[0];
      opt.step(store, 1e-3, clip_factor(grad_norm(store), 1.0));
    });
    CHECK(std::isfinite(last_loss));
    if (check) CHECK_MESSAGE(n == 0, n << " heap allocations in " << kMeasured << " training steps");
  }
}

namespace {

/// Allocations of kMeasured decode steps of a `batch`-row cache, after a prompt and warm-up.
template <class P>
std::int64_t decode_allocations(const GPT<P>& model, std::int64_t batch, CacheMode mode, DecodePath path,
                                CacheDtype dtype) {
  auto cache = model.make_cache(batch, 16, mode, dtype);
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t b = 0; b < batch; ++b) prompts.push_back({1, 2, static_cast<std::int32_t>(3 + b)});
  Tensor<float> logits = model.prefill(prompts, cache, path);
  std::vector<std::int32_t> next(static_cast<std::size_t>(batch));
  const std::int64_t V = model.config().vocab_size;
  return allocations_in([&] {
    for (std::int64_t b = 0; b < batch; ++b) {  // greedy, by hand: no sampler in the way
      const float* row = logits.data() + b * V;
      next[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    }
    logits = model.decode(std::span<const std::int32_t>(next), cache, path);
  });
}

}  // namespace

TEST_CASE_TEMPLATE("allocations: a decode step allocates nothing once warm", P, ALLOC_POLICIES) {
  const bool check = counts();
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    const test::ThreadsGuard scope(threads);
    GPT<P> model(config(), 4);
    for (std::int64_t batch : {1, 3}) {
      CAPTURE(batch);
      for (CacheDtype dtype : {CacheDtype::F32, CacheDtype::BF16, CacheDtype::Int8}) {
        const std::string stored = to_string(dtype);
        CAPTURE(stored);
        if constexpr (LatentPolicy<P>) {
          for (DecodePath path : {DecodePath::Absorbed, DecodePath::Materialized}) {
            const std::string what = path == DecodePath::Absorbed ? "absorbed" : "materialized";
            INFO("latent cache, " << what << " path");
            const std::int64_t n = decode_allocations(model, batch, CacheMode::Latent, path, dtype);
            if (check) CHECK_MESSAGE(n == 0, n << " heap allocations in " << kMeasured << " decode steps");
          }
        }
        const std::int64_t n = decode_allocations(model, batch, CacheMode::Full, DecodePath::Auto, dtype);
        if (check) {
          CHECK_MESSAGE(n == 0, n << " heap allocations in " << kMeasured << " decode steps (full cache)");
        }
      }
    }
  }
}

TEST_CASE_TEMPLATE("allocations: generating more tokens allocates nothing more", P, MhaRope, MlaRope) {
  const bool check = counts();
  GPT<P> model(config(), 5);
  Sampler sampler({.temperature = 0.8, .top_k = 20, .seed = 6});
  const std::vector<std::vector<std::int32_t>> prompts{{1, 2, 3}, {4, 5}};
  auto count = [&](std::int64_t max_new) {
    alloc_count::allocations.store(0);
    alloc_count::counting.store(true);
    const auto out = generate(model, prompts, max_new, sampler);
    alloc_count::counting.store(false);
    return alloc_count::allocations.load();
  };
  (void)count(12);  // warm: the model's activation arena, the sampler's buffers
  const std::int64_t few = count(4), many = count(12);
  if (check) {
    CHECK_MESSAGE(many == few, "generating 4 tokens made " << few << " heap allocations, 12 tokens " << many);
  }
}
