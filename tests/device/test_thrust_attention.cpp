// The Thrust/CUDA backend's attention kernels: training forward and backward against the CPU
// reference (attention_reference.hpp), the cache kernels (append, MLA absorption, cached and
// latent cached attention) against the plain host loops below. Data moves through
// Cuda::copy_from_host / copy_to_host, so the same test is right on a GPU and on the host
// build (THRUST_DEVICE_SYSTEM_OMP). Every output is poisoned with NaN before a run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <thrust/system_error.h>

#include <mla/backend/cpu/attention_reference.hpp>
#include <mla/backend/cuda/attention.hpp>
#include <mla/backend/cuda/cached_attention.hpp>
#include <mla/backend/cuda/launch.hpp>

namespace {

namespace kernels = mla::kernels;
using mla::Cuda;
using mla::kernels::AttentionShape;
using mla::kernels::CachedAttentionShape;

/// Tolerance of a kernel against a reference in the same type, relative to the reference's
/// largest magnitude.
template <class T>
constexpr double kTol = sizeof(T) == 4 ? 1e-5 : 1e-12;

template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> out(n);
  for (T& x : out) x = static_cast<T>(u(rng));
  return out;
}

template <class T>
std::vector<T> nans(std::size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

/// max |a - b| / max |b| (b the reference; a NaN in a fails).
template <class T>
double rel_diff(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, d);
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

/// A device array of n elements, filled from the host.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host)
      : n_(host.size()), mem_(Cuda::allocate(n_ * sizeof(T))) {
    Cuda::copy_from_host(mem_.get(), host.data(), n_ * sizeof(T));
  }
  T* get() const { return reinterpret_cast<T*>(mem_.get()); }
  std::vector<T> to_host() const {
    std::vector<T> out(n_);
    Cuda::copy_to_host(out.data(), mem_.get(), n_ * sizeof(T));
    return out;
  }

 private:
  std::size_t n_;
  std::shared_ptr<std::byte> mem_;
};

std::string describe(const AttentionShape& s) {
  return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " G=" + std::to_string(s.G) +
         " Tq=" + std::to_string(s.Tq) + " Tk=" + std::to_string(s.Tk) +
         " Dk=" + std::to_string(s.Dk) + " Dv=" + std::to_string(s.Dv);
}

/// Training shapes: MHA, GQA, MQA head maps; Tq == Tk and Tq < Tk; Dk == Dv and Dk != Dv.
std::vector<AttentionShape> training_cases() {
  struct Heads {
    std::int64_t H, G;
  };
  struct Lens {
    std::int64_t Tq, Tk;
  };
  struct Dims {
    std::int64_t Dk, Dv;
  };
  const Heads heads[] = {{2, 2}, {4, 2}, {3, 1}};
  const Lens lens[] = {{1, 1}, {5, 5}, {33, 33}, {1, 9}, {7, 20}, {30, 41}};
  const Dims dims[] = {{8, 8}, {12, 5}, {3, 16}};
  std::vector<AttentionShape> out;
  std::size_t n = 0;
  for (std::int64_t B : {1, 2})
    for (const Heads& h : heads)
      for (const Lens& l : lens) {
        const Dims& d = dims[n++ % 3];
        out.push_back({B, h.H, h.G, l.Tq, l.Tk, d.Dk, d.Dv});
      }
  return out;
}

/// Host inputs of one training case (q in [-2, 2) so that the softmax is not flat).
template <class T>
struct TrainingInputs {
  std::vector<T> q, k, v, dout, dq0, dk0, dv0;
  TrainingInputs(const AttentionShape& s, std::uint64_t seed)
      : q(random_values<T>(s.B * s.H * s.Tq * s.Dk, seed, -2.0, 2.0)),
        k(random_values<T>(s.B * s.G * s.Tk * s.Dk, seed + 1)),
        v(random_values<T>(s.B * s.G * s.Tk * s.Dv, seed + 2)),
        dout(random_values<T>(s.B * s.H * s.Tq * s.Dv, seed + 3)),
        dq0(random_values<T>(q.size(), seed + 4)),
        dk0(random_values<T>(k.size(), seed + 5)),
        dv0(random_values<T>(v.size(), seed + 6)) {}
};

/// Which gradients a backward run asks for.
struct Wanted {
  bool dq, dk, dv;
};

/// The Cuda kernels' o, lse and the gradients (initial values dq0, dk0, dv0 plus the
/// backward's), for the gradients in `want`; the others stay at their initial values.
template <class T>
struct CudaRun {
  std::vector<T> o, lse, dq, dk, dv;
};

template <class T>
CudaRun<T> run_cuda(const AttentionShape& s, T scale, const TrainingInputs<T>& in, Wanted want) {
  const DeviceArray<T> q(in.q), k(in.k), v(in.v), dout(in.dout);
  const DeviceArray<T> o(nans<T>(s.B * s.H * s.Tq * s.Dv)), lse(nans<T>(s.B * s.H * s.Tq));
  const DeviceArray<T> dq(in.dq0), dk(in.dk0), dv(in.dv0);
  const std::int64_t scratch = kernels::attention_backward_scratch(Cuda{}, s, want.dq || want.dk);
  const DeviceArray<T> drow(nans<T>(static_cast<std::size_t>(scratch)));
  kernels::attention_forward(Cuda{}, s, scale, q.get(), k.get(), v.get(), o.get(), lse.get());
  kernels::attention_backward(Cuda{}, s, scale, q.get(), k.get(), v.get(), o.get(), lse.get(),
                              dout.get(), want.dq ? dq.get() : nullptr,
                              want.dk ? dk.get() : nullptr, want.dv ? dv.get() : nullptr,
                              scratch > 0 ? drow.get() : nullptr);
  return {o.to_host(), lse.to_host(), dq.to_host(), dk.to_host(), dv.to_host()};
}

}  // namespace

TEST_CASE_TEMPLATE("thrust attention: forward and backward match the reference", T, float, double) {
  for (const AttentionShape& s : training_cases()) {
    CAPTURE(describe(s));
    const T scale = T(1) / std::sqrt(T(s.Dk));
    const TrainingInputs<T> in(s, static_cast<std::uint64_t>(s.Tq * 131 + s.Tk * 7 + s.H + s.Dk));
    // The reference: o and lse, then the gradients added into the same initial values.
    std::vector<T> o(s.B * s.H * s.Tq * s.Dv), lse(s.B * s.H * s.Tq);
    kernels::attention_reference_forward(mla::Cpu{}, s, scale, in.q.data(), in.k.data(),
                                              in.v.data(), o.data(), lse.data());
    std::vector<T> dq = in.dq0, dk = in.dk0, dv = in.dv0;
    kernels::attention_reference_backward(mla::Cpu{}, s, scale, in.q.data(), in.k.data(),
                                               in.v.data(), in.dout.data(), dq.data(), dk.data(),
                                               dv.data());

    SUBCASE("all gradients") {
      const CudaRun<T> got = run_cuda(s, scale, in, {true, true, true});
      CHECK(rel_diff(got.o, o) <= kTol<T>);
      CHECK(rel_diff(got.lse, lse) <= kTol<T>);
      CHECK(rel_diff(got.dq, dq) <= kTol<T>);
      CHECK(rel_diff(got.dk, dk) <= kTol<T>);
      CHECK(rel_diff(got.dv, dv) <= kTol<T>);
      // Deterministic: a second run gives the same bytes.
      const CudaRun<T> again = run_cuda(s, scale, in, {true, true, true});
      CHECK(again.o == got.o);
      CHECK(again.dq == got.dq);
      CHECK(again.dk == got.dk);
      CHECK(again.dv == got.dv);
    }
    SUBCASE("some gradients null: the others as before, the null ones untouched") {
      for (const Wanted want : {Wanted{true, false, false}, Wanted{false, true, false},
                                Wanted{false, false, true}, Wanted{false, true, true},
                                Wanted{true, false, true}, Wanted{false, false, false}}) {
        CAPTURE(want.dq);
        CAPTURE(want.dk);
        CAPTURE(want.dv);
        const CudaRun<T> got = run_cuda(s, scale, in, want);
        CHECK(rel_diff(got.dq, want.dq ? dq : in.dq0) <= kTol<T>);
        CHECK(rel_diff(got.dk, want.dk ? dk : in.dk0) <= kTol<T>);
        CHECK(rel_diff(got.dv, want.dv ? dv : in.dv0) <= kTol<T>);
        if (!want.dq) CHECK(got.dq == in.dq0);
        if (!want.dk) CHECK(got.dk == in.dk0);
        if (!want.dv) CHECK(got.dv == in.dv0);
      }
    }
  }
}

TEST_CASE_TEMPLATE("thrust attention: forward without lse gives the same o", T, float, double) {
  const AttentionShape s{2, 4, 2, 6, 11, 7, 9};
  const TrainingInputs<T> in(s, 99);
  const T scale = T(0.4);
  const DeviceArray<T> q(in.q), k(in.k), v(in.v);
  const DeviceArray<T> o1(nans<T>(s.B * s.H * s.Tq * s.Dv)), o2(nans<T>(s.B * s.H * s.Tq * s.Dv));
  const DeviceArray<T> lse(nans<T>(s.B * s.H * s.Tq));
  kernels::attention_forward(Cuda{}, s, scale, q.get(), k.get(), v.get(), o1.get(), lse.get());
  kernels::attention_forward(Cuda{}, s, scale, q.get(), k.get(), v.get(), o2.get(),
                             static_cast<T*>(nullptr));
  CHECK(o1.to_host() == o2.to_host());
}

// ---- The cache kernels, against plain host loops --------------------------------------------

namespace {

/// out [Dv] = softmax_j(scale q . k_j) v_j over keys j < n, in T, two passes.
template <class T>
void host_attend_row(const T* q, const T* k, std::int64_t ldk, std::int64_t Dk, const T* v,
                     std::int64_t ldv, std::int64_t Dv, std::int64_t n, T scale, T* out) {
  std::vector<T> p(static_cast<std::size_t>(n));
  T mx = -std::numeric_limits<T>::infinity();
  for (std::int64_t j = 0; j < n; ++j) {
    T dot = 0;
    for (std::int64_t d = 0; d < Dk; ++d) dot += q[d] * k[j * ldk + d];
    p[j] = scale * dot;
    mx = std::max(mx, p[j]);
  }
  T sum = 0;
  for (std::int64_t j = 0; j < n; ++j) sum += p[j] = std::exp(p[j] - mx);
  for (std::int64_t d = 0; d < Dv; ++d) {
    T acc = 0;
    for (std::int64_t j = 0; j < n; ++j) acc += p[j] * v[j * ldv + d];
    out[d] = acc / sum;
  }
}

/// Caches of S slots with the first lengths[b] valid and NaN after, so that reading a slot
/// past a row's length shows in the result.
template <class T>
std::vector<T> poisoned_cache(std::int64_t B, std::int64_t G, std::int64_t S, std::int64_t D,
                              const std::vector<std::int32_t>& lengths, std::uint64_t seed) {
  std::vector<T> c = random_values<T>(B * G * S * D, seed);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t j = lengths[b]; j < S; ++j)
        for (std::int64_t d = 0; d < D; ++d)
          c[((b * G + g) * S + j) * D + d] = std::numeric_limits<T>::quiet_NaN();
  return c;
}

/// Ragged lengths of 3 batch rows, each at least Tq: the shortest possible, one in the middle,
/// a full cache.
std::vector<std::int32_t> ragged_lengths(std::int64_t Tq, std::int64_t S) {
  return {static_cast<std::int32_t>(Tq), static_cast<std::int32_t>((Tq + S) / 2),
          static_cast<std::int32_t>(S)};
}

std::int64_t max_of(const std::vector<std::int32_t>& v) {
  return *std::max_element(v.begin(), v.end());
}

}  // namespace

TEST_CASE_TEMPLATE("thrust cached_attention matches the host loops", T, float, double) {
  struct Heads {
    std::int64_t H, G;
  };
  for (const Heads h : {Heads{4, 4}, Heads{4, 2}, Heads{3, 1}}) {
    for (const std::int64_t Tq : {1, 4}) {
      const CachedAttentionShape s{3, h.H, h.G, Tq, 19, 8, 6};
      CAPTURE(s.H);
      CAPTURE(s.G);
      CAPTURE(s.Tq);
      const std::vector<std::int32_t> lengths = ragged_lengths(Tq, s.S);
      const T scale = T(0.35);
      const std::vector<T> q = random_values<T>(s.B * s.H * s.Tq * s.Dk, 7, -2.0, 2.0);
      const std::vector<T> kc = poisoned_cache<T>(s.B, s.G, s.S, s.Dk, lengths, 8);
      const std::vector<T> vc = poisoned_cache<T>(s.B, s.G, s.S, s.Dv, lengths, 9);

      std::vector<T> want(s.B * s.H * s.Tq * s.Dv);
      for (std::int64_t b = 0; b < s.B; ++b)
        for (std::int64_t hh = 0; hh < s.H; ++hh)
          for (std::int64_t i = 0; i < s.Tq; ++i) {
            const std::int64_t r = (b * s.H + hh) * s.Tq + i, bg = b * s.G + hh / (s.H / s.G);
            host_attend_row(q.data() + r * s.Dk, kc.data() + bg * s.S * s.Dk, s.Dk, s.Dk,
                            vc.data() + bg * s.S * s.Dv, s.Dv, s.Dv, lengths[b] - s.Tq + i + 1,
                            scale, want.data() + r * s.Dv);
          }

      const DeviceArray<T> dq(q), dk(kc), dv(vc), out(nans<T>(want.size()));
      const DeviceArray<std::int32_t> dlen(lengths);
      kernels::cached_attention(Cuda{}, s, scale, dq.get(), dk.get(), dv.get(), dlen.get(),
                                max_of(lengths), out.get());
      CHECK(rel_diff(out.to_host(), want) <= kTol<T>);
    }
  }
}

TEST_CASE_TEMPLATE("thrust latent_cached_attention matches the host loops", T, float, double) {
  for (const std::int64_t Dr : {0, 4}) {
    for (const std::int64_t Tq : {1, 3}) {
      const std::int64_t B = 3, H = 4, S = 17, Dc = 7, W = Dc + Dr;
      CAPTURE(Dr);
      CAPTURE(Tq);
      const std::vector<std::int32_t> lengths = ragged_lengths(Tq, S);
      const T scale = T(0.3);
      const std::vector<T> q = random_values<T>(B * H * Tq * W, 11, -2.0, 2.0);
      const std::vector<T> cache = poisoned_cache<T>(B, 1, S, W, lengths, 12);

      std::vector<T> want(B * H * Tq * Dc);
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t r = b * H * Tq; r < (b + 1) * H * Tq; ++r) {
          const T* rows = cache.data() + b * S * W;
          host_attend_row(q.data() + r * W, rows, W, W, rows, W, Dc, lengths[b] - Tq + r % Tq + 1,
                          scale, want.data() + r * Dc);
        }

      const DeviceArray<T> dq(q), dc(cache), out(nans<T>(want.size()));
      const DeviceArray<std::int32_t> dlen(lengths);
      kernels::latent_cached_attention(Cuda{}, B, H, Tq, S, Dc, Dr, scale, dq.get(), dc.get(),
                                       dlen.get(), max_of(lengths), out.get());
      CHECK(rel_diff(out.to_host(), want) <= kTol<T>);
    }
  }
}

TEST_CASE_TEMPLATE("thrust append_heads and append_rows write the new slots only", T, float,
                   double) {
  const std::int64_t B = 3, Tn = 2, G = 2, S = 9, Dh = 5, W = 6;
  const std::vector<std::int32_t> starts = {0, 4, 7};  // the last fills the cache
  const DeviceArray<std::int32_t> dstarts(starts);

  SUBCASE("append_heads") {
    const std::vector<T> src = random_values<T>(B * Tn * G * Dh, 21);
    std::vector<T> cache = random_values<T>(B * G * S * Dh, 22);
    const DeviceArray<T> dsrc(src), dcache(cache);
    kernels::append_heads(Cuda{}, B, Tn, G, S, Dh, dsrc.get(), dstarts.get(), dcache.get());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < Tn; ++t)
        for (std::int64_t g = 0; g < G; ++g)
          for (std::int64_t d = 0; d < Dh; ++d)
            cache[((b * G + g) * S + starts[b] + t) * Dh + d] =
                src[((b * Tn + t) * G + g) * Dh + d];
    CHECK(dcache.to_host() == cache);
  }
  SUBCASE("append_rows") {
    const std::vector<T> src = random_values<T>(B * Tn * W, 23);
    std::vector<T> cache = random_values<T>(B * S * W, 24);
    const DeviceArray<T> dsrc(src), dcache(cache);
    kernels::append_rows(Cuda{}, B, Tn, S, W, dsrc.get(), dstarts.get(), dcache.get());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < Tn; ++t)
        for (std::int64_t w = 0; w < W; ++w)
          cache[(b * S + starts[b] + t) * W + w] = src[(b * Tn + t) * W + w];
    CHECK(dcache.to_host() == cache);
  }
}

TEST_CASE_TEMPLATE("thrust absorb_query and absorb_output match the host loops", T, float, double) {
  const std::int64_t B = 2, Tn = 3, H = 3, N = 5, Dv = 4, Dc = 6;
  const std::vector<T> kv_b = random_values<T>(H * (N + Dv) * Dc, 31);  // per head: W_UK, W_UV
  const DeviceArray<T> dkv(kv_b);

  for (const std::int64_t Dr : {0, 2}) {
    CAPTURE(Dr);
    const std::int64_t Wq = N + Dr, Wc = Dc + Dr;
    const std::vector<T> q = random_values<T>(B * Tn * H * Wq, 32);
    std::vector<T> want(B * H * Tn * Wc);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t t = 0; t < Tn; ++t) {
          const T* row = q.data() + ((b * Tn + t) * H + h) * Wq;
          T* o = want.data() + ((b * H + h) * Tn + t) * Wc;
          for (std::int64_t c = 0; c < Dc; ++c) {
            T acc = 0;
            for (std::int64_t n = 0; n < N; ++n) acc += row[n] * kv_b[(h * (N + Dv) + n) * Dc + c];
            o[c] = acc;
          }
          for (std::int64_t c = 0; c < Dr; ++c) o[Dc + c] = row[N + c];
        }
    const DeviceArray<T> dq(q), dout(nans<T>(want.size()));
    kernels::absorb_query(Cuda{}, B, Tn, H, N, Dr, Dv, Dc, dq.get(), dkv.get(), dout.get());
    CHECK(rel_diff(dout.to_host(), want) <= kTol<T>);
  }

  const std::vector<T> o_lat = random_values<T>(B * H * Tn * Dc, 33);
  std::vector<T> want(B * Tn * H * Dv);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < Tn; ++t)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t e = 0; e < Dv; ++e) {
          T acc = 0;
          for (std::int64_t c = 0; c < Dc; ++c)
            acc += kv_b[(h * (N + Dv) + N + e) * Dc + c] * o_lat[((b * H + h) * Tn + t) * Dc + c];
          want[((b * Tn + t) * H + h) * Dv + e] = acc;
        }
  const DeviceArray<T> dlat(o_lat), dout(nans<T>(want.size()));
  kernels::absorb_output(Cuda{}, B, Tn, H, N, Dv, Dc, dlat.get(), dkv.get(), dout.get());
  CHECK(rel_diff(dout.to_host(), want) <= kTol<T>);
}

TEST_CASE("gpu::launch turns a Thrust failure into a DeviceError naming the kernel") {
  try {
    mla::gpu::launch("attention_forward", [] {
      throw thrust::system_error(1, thrust::generic_category(), "the kernel failed");
    });
    FAIL("no exception");
  } catch (const mla::DeviceError& e) {
    const std::string what = e.what();
    CHECK(what.find("cuda attention_forward") != std::string::npos);
    CHECK(what.find("the kernel failed") != std::string::npos);
  }
}
