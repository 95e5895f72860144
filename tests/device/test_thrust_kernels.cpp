// The Thrust/CUDA kernels against the CPU backend's, on the same random inputs: element-wise,
// layout, norms, softmax and cross-entropy, embedding, RoPE, dropout, the optimizer. Built
// with -DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP the Cuda kernels run on host threads;
// every buffer still goes through Cuda::allocate / copy_from_host / copy_to_host, so the test
// reads the same on a GPU.
//
// Outputs that a kernel overwrites are poisoned with NaN first (an element left unwritten
// fails); outputs it adds into start from the same random values on both sides; every
// `accumulate` flag is run both ways. Agreement: |cuda - cpu| <= tol * (|cpu| + scale / 100),
// tol 1e-5 in float and 1e-12 in double, scale the largest |cpu| of the output (the floor
// covers elements that cancel to near zero); copies, gathers and dropout masks must match
// exactly. The fused loss-row kernels and mean_of_sums are checked against a direct host
// computation in double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "mla/backend/cpu/dropout.hpp"
#include "mla/backend/cpu/elementwise.hpp"
#include "mla/backend/cpu/embedding.hpp"
#include "mla/backend/cpu/layout.hpp"
#include "mla/backend/cpu/norm.hpp"
#include "mla/backend/cpu/optimizer.hpp"
#include "mla/backend/cpu/rope.hpp"
#include "mla/backend/cpu/softmax.hpp"
#include "mla/backend/cuda/dropout.hpp"
#include "mla/backend/cuda/elementwise.hpp"
#include "mla/backend/cuda/embedding.hpp"
#include "mla/backend/cuda/layout.hpp"
#include "mla/backend/cuda/norm.hpp"
#include "mla/backend/cuda/optimizer.hpp"
#include "mla/backend/cuda/rope.hpp"
#include "mla/backend/cuda/softmax.hpp"

namespace {

using mla::Cpu;
using mla::Cuda;
namespace k = mla::kernels;
using I64 = std::int64_t;

template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

/// n elements of device memory, filled from and read back to the host.
template <class T>
struct Dev {
  std::shared_ptr<std::byte> mem;
  I64 n;
  explicit Dev(I64 count) : mem(Cuda::allocate(static_cast<std::size_t>(count) * sizeof(T))), n(count) {}
  explicit Dev(const std::vector<T>& h) : Dev(static_cast<I64>(h.size())) { set(h); }
  T* ptr() const { return reinterpret_cast<T*>(mem.get()); }
  void set(const std::vector<T>& h) { Cuda::copy_from_host(ptr(), h.data(), h.size() * sizeof(T)); }
  void poison() { set(std::vector<T>(static_cast<std::size_t>(n), std::numeric_limits<T>::quiet_NaN())); }
  std::vector<T> host() const {
    std::vector<T> h(static_cast<std::size_t>(n));
    Cuda::copy_to_host(h.data(), ptr(), h.size() * sizeof(T));
    return h;
  }
};

template <class T>
std::vector<T> random(I64 n, std::uint64_t seed, double lo = -2.0, double hi = 2.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(u(rng));
  return v;
}

template <class T>
std::vector<T> nans(I64 n) {
  return std::vector<T>(static_cast<std::size_t>(n), std::numeric_limits<T>::quiet_NaN());
}

std::vector<std::int32_t> random_ids(I64 n, I64 V, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> u(0, static_cast<std::int32_t>(V - 1));
  std::vector<std::int32_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = u(rng);
  return v;
}

/// got (the Cuda kernel's) agrees with want (the CPU's) within the file's tolerance.
template <class T, class U>
void check_close(const std::vector<T>& got, const std::vector<U>& want, const std::string& what,
                 double tol = kTol<T>) {
  REQUIRE(got.size() == want.size());
  double scale = 0;
  for (const auto w : want) scale = std::max(scale, std::abs(static_cast<double>(w)));
  std::size_t bad = 0, first = got.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!(std::abs(g - w) <= tol * (std::abs(w) + scale / 100))) {
      if (bad++ == 0) first = i;
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements differ; first at " << first
            << (first < got.size() ? ": cuda " + std::to_string(static_cast<double>(got[first])) +
                                         ", want " + std::to_string(static_cast<double>(want[first]))
                                   : std::string()));
  CHECK(bad == 0);
}

/// Exactly equal: for copies, gathers, masks and single roundings. Anything with a product
/// and a sum (x += s * y, a rotation) goes through check_close: the compiler may contract it
/// into an FMA in one backend's loop and not in the other's.
template <class T>
void check_equal(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) bad += !(got[i] == want[i]);
  INFO(what << ": " << bad << " of " << got.size() << " elements differ");
  CHECK(bad == 0);
}

constexpr I64 R = 37, C = 53;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Element-wise

TEST_CASE_TEMPLATE("thrust elementwise: binary forward and backward match the CPU", T, float, double) {
  const auto a = random<T>(R * C, 1), b = random<T>(R * C, 2), brow = random<T>(C, 3);
  const auto dout = random<T>(R * C, 4), da0 = random<T>(R * C, 5), db0 = random<T>(R * C, 6);
  const auto dbrow0 = random<T>(C, 7);
  Dev<T> da_(a), db_(b), dbrow_(brow), ddout(dout);
  for (const auto op : {k::Binary::Add, k::Binary::Sub, k::Binary::Mul}) {
    for (const bool b_row : {false, true}) {
      CAPTURE(static_cast<int>(op));
      CAPTURE(b_row);
      const std::vector<T>& bh = b_row ? brow : b;
      const T* bd = b_row ? dbrow_.ptr() : db_.ptr();
      std::vector<T> want = nans<T>(R * C);
      k::binary_forward(Cpu{}, op, a.data(), bh.data(), b_row, want.data(), R, C);
      Dev<T> out(R * C);
      out.poison();
      k::binary_forward(Cuda{}, op, da_.ptr(), bd, b_row, out.ptr(), R, C);
      check_equal(out.host(), want, "binary_forward");

      for (const bool acc : {true, false}) {
        CAPTURE(acc);
        const I64 nb = b_row ? C : R * C;
        const std::vector<T>& dbinit = b_row ? dbrow0 : db0;
        // The CPU adds a broadcast row's gradient whatever the flag: "overwrite" is adding to 0.
        std::vector<T> ga = acc ? da0 : nans<T>(R * C);
        std::vector<T> gb = acc ? dbinit : b_row ? std::vector<T>(C, T(0)) : nans<T>(nb);
        k::binary_backward(Cpu{}, op, a.data(), bh.data(), b_row, dout.data(), ga.data(), gb.data(), R, C,
                           acc, acc || b_row);
        Dev<T> gda(R * C), gdb(nb);
        if (acc) {
          gda.set(da0);
          gdb.set(dbinit);
        } else {
          gda.poison();
          gdb.poison();
        }
        k::binary_backward(Cuda{}, op, da_.ptr(), bd, b_row, ddout.ptr(), gda.ptr(), gdb.ptr(), R, C, acc, acc);
        check_close(gda.host(), ga, "binary_backward da");
        check_close(gdb.host(), gb, "binary_backward db");
        // One gradient at a time (the other null).
        Dev<T> only(nb);
        only.set(dbinit);
        k::binary_backward(Cuda{}, op, da_.ptr(), bd, b_row, ddout.ptr(), static_cast<T*>(nullptr), only.ptr(), R,
                           C, true, true);
        std::vector<T> want_only = dbinit;
        k::binary_backward(Cpu{}, op, a.data(), bh.data(), b_row, dout.data(), static_cast<T*>(nullptr),
                           want_only.data(), R, C, true, true);
        check_close(only.host(), want_only, "binary_backward db alone");
      }
    }
  }
}

TEST_CASE_TEMPLATE("thrust elementwise: column sums, broadcast, scale, fill, accumulate", T, float, double) {
  const auto x = random<T>(R * C, 11), w = random<T>(R * C, 12), row = random<T>(C, 13);
  const auto init = random<T>(R * C, 14);
  Dev<T> dx(x), dw(w), drow(row);

  SUBCASE("accumulate_column_sums, with and without weights and sign") {
    for (const bool weighted : {false, true}) {
      for (const T sign : {T(1), T(-1)}) {
        std::vector<T> want(row);
        k::accumulate_column_sums(Cpu{}, x.data(), want.data(), R, C, weighted ? w.data() : nullptr, sign);
        Dev<T> got(row);
        k::accumulate_column_sums(Cuda{}, dx.ptr(), got.ptr(), R, C, weighted ? dw.ptr() : nullptr, sign);
        check_close(got.host(), want, "accumulate_column_sums");
      }
    }
  }
  SUBCASE("broadcast_rows") {
    std::vector<T> want = nans<T>(R * C);
    k::broadcast_rows(Cpu{}, row.data(), want.data(), R, C);
    Dev<T> got(R * C);
    got.poison();
    k::broadcast_rows(Cuda{}, drow.ptr(), got.ptr(), R, C);
    check_equal(got.host(), want, "broadcast_rows");
  }
  SUBCASE("scale forward, backward, and backward by a factor in device memory") {
    const T s = T(-0.75);
    std::vector<T> want = nans<T>(R * C);
    k::scale_forward(Cpu{}, x.data(), s, want.data(), R * C);
    Dev<T> got(R * C);
    got.poison();
    k::scale_forward(Cuda{}, dx.ptr(), s, got.ptr(), R * C);
    check_equal(got.host(), want, "scale_forward");
    Dev<T> ds(std::vector<T>{s});
    for (const bool acc : {true, false}) {
      CAPTURE(acc);
      std::vector<T> wb = acc ? init : nans<T>(R * C);
      k::scale_backward(Cpu{}, s, x.data(), wb.data(), R * C, acc);
      Dev<T> gb(R * C), gby(R * C);
      if (acc) {
        gb.set(init);
        gby.set(init);
      } else {
        gb.poison();
        gby.poison();
      }
      k::scale_backward(Cuda{}, s, dx.ptr(), gb.ptr(), R * C, acc);
      k::scale_by_backward(Cuda{}, ds.ptr(), dx.ptr(), gby.ptr(), R * C, acc);
      check_close(gb.host(), wb, "scale_backward");
      check_close(gby.host(), wb, "scale_by_backward");
    }
  }
  SUBCASE("sum_forward, fill_backward, accumulate") {
    std::vector<T> want = nans<T>(1);
    k::sum_forward(Cpu{}, x.data(), want.data(), R * C);
    Dev<T> got(1);
    got.poison();
    k::sum_forward(Cuda{}, dx.ptr(), got.ptr(), R * C);
    check_close(got.host(), want, "sum_forward");

    const std::vector<T> g1 = {T(0.625)};
    Dev<T> dg1(g1);
    std::vector<T> wf = init;
    k::fill_backward(Cpu{}, g1.data(), T(1) / T(7), wf.data(), R * C);
    Dev<T> gf(init);
    k::fill_backward(Cuda{}, dg1.ptr(), T(1) / T(7), gf.ptr(), R * C);
    check_close(gf.host(), wf, "fill_backward");

    std::vector<T> wa = init;
    k::accumulate(Cpu{}, x.data(), wa.data(), R * C);
    Dev<T> ga(init);
    k::accumulate(Cuda{}, dx.ptr(), ga.ptr(), R * C);
    check_equal(ga.host(), wa, "accumulate");
  }
}

TEST_CASE_TEMPLATE("thrust elementwise: relu and gelu match the CPU", T, float, double) {
  const I64 n = R * C;
  const auto x = random<T>(n, 21, -4, 4), dout = random<T>(n, 22), init = random<T>(n, 23);
  Dev<T> dx(x), ddout(dout);
  for (const bool gelu : {false, true}) {
    CAPTURE(gelu);
    std::vector<T> want = nans<T>(n);
    Dev<T> got(n);
    got.poison();
    if (gelu) {
      k::gelu_forward(Cpu{}, x.data(), want.data(), n);
      k::gelu_forward(Cuda{}, dx.ptr(), got.ptr(), n);
    } else {
      k::relu_forward(Cpu{}, x.data(), want.data(), n);
      k::relu_forward(Cuda{}, dx.ptr(), got.ptr(), n);
    }
    check_close(got.host(), want, "forward");
    for (const bool acc : {true, false}) {
      CAPTURE(acc);
      std::vector<T> wb = acc ? init : nans<T>(n);
      Dev<T> gb(n);
      acc ? gb.set(init) : gb.poison();
      if (gelu) {
        k::gelu_backward(Cpu{}, x.data(), dout.data(), wb.data(), n, acc);
        k::gelu_backward(Cuda{}, dx.ptr(), ddout.ptr(), gb.ptr(), n, acc);
      } else {
        k::relu_backward(Cpu{}, x.data(), dout.data(), wb.data(), n, acc);
        k::relu_backward(Cuda{}, dx.ptr(), ddout.ptr(), gb.ptr(), n, acc);
      }
      check_close(gb.host(), wb, "backward");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Layout

TEST_CASE_TEMPLATE("thrust layout: column blocks and permutations match the CPU", T, float, double) {
  SUBCASE("copy_columns and accumulate_columns, strided and contiguous") {
    const I64 ld_src = 29, ld_dst = 41;
    const auto src = random<T>(R * ld_src, 31), dst0 = random<T>(R * ld_dst, 32);
    Dev<T> dsrc(src);
    for (const I64 n : {I64{17}, I64{29}}) {
      CAPTURE(n);
      std::vector<T> want = dst0;
      k::copy_columns(Cpu{}, src.data(), ld_src, want.data(), ld_dst, R, n);
      Dev<T> got(dst0);
      k::copy_columns(Cuda{}, dsrc.ptr(), ld_src, got.ptr(), ld_dst, R, n);
      check_equal(got.host(), want, "copy_columns");
      want = dst0;
      k::accumulate_columns(Cpu{}, src.data(), ld_src, want.data(), ld_dst, R, n);
      got.set(dst0);
      k::accumulate_columns(Cuda{}, dsrc.ptr(), ld_src, got.ptr(), ld_dst, R, n);
      check_equal(got.host(), want, "accumulate_columns");
    }
    std::vector<T> want = nans<T>(R * ld_src);  // both contiguous: one block
    k::copy_columns(Cpu{}, src.data(), ld_src, want.data(), ld_src, R, ld_src);
    Dev<T> got(R * ld_src);
    got.poison();
    k::copy_columns(Cuda{}, dsrc.ptr(), ld_src, got.ptr(), ld_src, R, ld_src);
    check_equal(got.host(), want, "copy_columns contiguous");
  }
  SUBCASE("permute_forward and permute_backward") {
    const k::Dims4 dims = {3, 5, 7, 4};
    const I64 n = 3 * 5 * 7 * 4;
    const auto x = random<T>(n, 33), dout = random<T>(n, 34), init = random<T>(n, 35);
    Dev<T> dx(x), ddout(dout);
    const k::Perm4 perms[] = {{0, 1, 2, 3}, {0, 2, 1, 3}, {0, 1, 3, 2}, {3, 2, 1, 0}, {1, 0, 3, 2}, {2, 0, 3, 1}};
    for (const auto& perm : perms) {
      CAPTURE(perm[0] * 1000 + perm[1] * 100 + perm[2] * 10 + perm[3]);
      std::vector<T> want = nans<T>(n);
      k::permute_forward(Cpu{}, x.data(), dims, perm, want.data());
      Dev<T> got(n);
      got.poison();
      k::permute_forward(Cuda{}, dx.ptr(), dims, perm, got.ptr());
      check_equal(got.host(), want, "permute_forward");
      for (const bool acc : {true, false}) {
        CAPTURE(acc);
        std::vector<T> wb = acc ? init : nans<T>(n);
        k::permute_backward(Cpu{}, dout.data(), dims, perm, wb.data(), acc);
        Dev<T> gb(n);
        acc ? gb.set(init) : gb.poison();
        k::permute_backward(Cuda{}, ddout.ptr(), dims, perm, gb.ptr(), acc);
        check_equal(gb.host(), wb, "permute_backward");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Norms

TEST_CASE_TEMPLATE("thrust norm: layernorm and rmsnorm match the CPU", T, float, double) {
  for (const I64 rows : {I64{5}, R, I64{70}}) {  // one chunk of the column sums, two, three
    CAPTURE(rows);
    const I64 n = rows * C;
    const auto x = random<T>(n, 41), w = random<T>(C, 42), b = random<T>(C, 43), dy = random<T>(n, 44);
    const auto dx0 = random<T>(n, 45), dw0 = random<T>(C, 46), db0 = random<T>(C, 47);
    Dev<T> dx_(x), dw_(w), db_(b), ddy(dy);
    const T eps = T(1e-5);

    // LayerNorm forward, with and without the saved statistics.
    std::vector<T> y = nans<T>(n), mean = nans<T>(rows), rstd = nans<T>(rows);
    k::layernorm_forward(Cpu{}, x.data(), w.data(), b.data(), eps, y.data(), mean.data(), rstd.data(), rows, C);
    Dev<T> gy(n), gmean(rows), grstd(rows);
    gy.poison();
    gmean.poison();
    grstd.poison();
    k::layernorm_forward(Cuda{}, dx_.ptr(), dw_.ptr(), db_.ptr(), eps, gy.ptr(), gmean.ptr(), grstd.ptr(), rows, C);
    check_close(gy.host(), y, "layernorm_forward y");
    check_close(gmean.host(), mean, "layernorm_forward mean");
    check_close(grstd.host(), rstd, "layernorm_forward rstd");
    gy.poison();
    k::layernorm_forward(Cuda{}, dx_.ptr(), dw_.ptr(), db_.ptr(), eps, gy.ptr(), static_cast<T*>(nullptr),
                         static_cast<T*>(nullptr), rows, C);
    check_close(gy.host(), y, "layernorm_forward y without statistics");

    // LayerNorm backward: all gradients, then each alone. The statistics are the CPU's on both.
    Dev<T> dmean(mean), drstd(rstd);
    const I64 cpu_scratch = k::layernorm_backward_scratch(Cpu{}, rows, C);
    const I64 cuda_scratch = k::layernorm_backward_scratch(Cuda{}, rows, C);
    for (const int mask : {7, 1, 2, 4}) {
      CAPTURE(mask);
      const bool want_dx = mask & 1, want_dw = mask & 2, want_db = mask & 4;
      std::vector<T> hx = dx0, hw = dw0, hb = db0, hs(static_cast<std::size_t>(std::max<I64>(cpu_scratch, 1)));
      k::layernorm_backward(Cpu{}, dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                            want_dx ? hx.data() : nullptr, want_dw ? hw.data() : nullptr,
                            want_db ? hb.data() : nullptr, hs.data(), rows, C);
      Dev<T> gx(dx0), gw(dw0), gb(db0), gs(std::max<I64>(cuda_scratch, 1));
      gs.poison();
      k::layernorm_backward(Cuda{}, ddy.ptr(), dx_.ptr(), dw_.ptr(), dmean.ptr(), drstd.ptr(),
                            want_dx ? gx.ptr() : nullptr, want_dw ? gw.ptr() : nullptr,
                            want_db ? gb.ptr() : nullptr, cuda_scratch > 0 ? gs.ptr() : nullptr, rows, C);
      check_close(gx.host(), hx, "layernorm_backward dx");
      check_close(gw.host(), hw, "layernorm_backward dw");
      check_close(gb.host(), hb, "layernorm_backward db");
    }

    // RMSNorm forward and backward.
    std::vector<T> ry = nans<T>(n), rr = nans<T>(rows);
    k::rmsnorm_forward(Cpu{}, x.data(), w.data(), eps, ry.data(), rr.data(), rows, C);
    gy.poison();
    grstd.poison();
    k::rmsnorm_forward(Cuda{}, dx_.ptr(), dw_.ptr(), eps, gy.ptr(), grstd.ptr(), rows, C);
    check_close(gy.host(), ry, "rmsnorm_forward y");
    check_close(grstd.host(), rr, "rmsnorm_forward rstd");
    Dev<T> drr(rr);
    const I64 cpu_rscratch = k::rmsnorm_backward_scratch(Cpu{}, rows, C);
    const I64 cuda_rscratch = k::rmsnorm_backward_scratch(Cuda{}, rows, C);
    for (const int mask : {3, 1, 2}) {
      CAPTURE(mask);
      const bool want_dx = mask & 1, want_dw = mask & 2;
      std::vector<T> hx = dx0, hw = dw0, hs(static_cast<std::size_t>(std::max<I64>(cpu_rscratch, 1)));
      k::rmsnorm_backward(Cpu{}, dy.data(), x.data(), w.data(), rr.data(), want_dx ? hx.data() : nullptr,
                          want_dw ? hw.data() : nullptr, hs.data(), rows, C);
      Dev<T> gx(dx0), gw(dw0), gs(std::max<I64>(cuda_rscratch, 1));
      gs.poison();
      k::rmsnorm_backward(Cuda{}, ddy.ptr(), dx_.ptr(), dw_.ptr(), drr.ptr(), want_dx ? gx.ptr() : nullptr,
                          want_dw ? gw.ptr() : nullptr, cuda_rscratch > 0 ? gs.ptr() : nullptr, rows, C);
      check_close(gx.host(), hx, "rmsnorm_backward dx");
      check_close(gw.host(), hw, "rmsnorm_backward dw");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy

TEST_CASE_TEMPLATE("thrust softmax: forward and backward match the CPU", T, float, double) {
  const auto x = random<T>(R * C, 51, -6, 6), dy = random<T>(R * C, 52), init = random<T>(R * C, 53);
  Dev<T> dx_(x), ddy(dy);
  std::vector<T> y = nans<T>(R * C);
  k::softmax_forward(Cpu{}, x.data(), y.data(), R, C);
  Dev<T> gy(R * C);
  gy.poison();
  k::softmax_forward(Cuda{}, dx_.ptr(), gy.ptr(), R, C);
  check_close(gy.host(), y, "softmax_forward");

  Dev<T> dy_saved(y);
  std::vector<T> want = init;
  k::softmax_backward(Cpu{}, y.data(), dy.data(), want.data(), R, C);
  Dev<T> got(init);
  k::softmax_backward(Cuda{}, dy_saved.ptr(), ddy.ptr(), got.ptr(), R, C);
  check_close(got.host(), want, "softmax_backward");
  // accumulate false: the CPU's from zero.
  want.assign(static_cast<std::size_t>(R * C), T(0));
  k::softmax_backward(Cpu{}, y.data(), dy.data(), want.data(), R, C);
  got.poison();
  k::softmax_backward(Cuda{}, dy_saved.ptr(), ddy.ptr(), got.ptr(), R, C, false);
  check_close(got.host(), want, "softmax_backward overwrite");
}

TEST_CASE_TEMPLATE("thrust cross-entropy: forward, backward and grad match the CPU", T, float, double) {
  const I64 V = 61;
  const auto logits = random<T>(R * V, 61, -5, 5), init = random<T>(R * V, 62);
  const auto targets = random_ids(R, V, 63);
  Dev<T> dlogits(logits);
  Dev<std::int32_t> dtargets(targets);

  SUBCASE("find_bad_target") {
    CHECK(k::find_bad_target(Cuda{}, dtargets.ptr(), R, V) == -1);
    auto bad = targets;
    bad[30] = static_cast<std::int32_t>(V);
    bad[17] = -1;
    Dev<std::int32_t> dbad(bad);
    CHECK(k::find_bad_target(Cuda{}, dbad.ptr(), R, V) == 17);
    CHECK(k::find_bad_target(Cuda{}, dbad.ptr(), R, V) == k::find_bad_target(Cpu{}, bad.data(), R, V));
    CHECK(k::find_bad_target(Cuda{}, dbad.ptr(), 0, V) == -1);
  }
  SUBCASE("crossentropy_forward and crossentropy_backward") {
    std::vector<T> lse = nans<T>(R), loss = nans<T>(1);
    k::crossentropy_forward(Cpu{}, logits.data(), targets.data(), lse.data(), loss.data(), R, V);
    Dev<T> glse(R), gloss(1);
    glse.poison();
    gloss.poison();
    k::crossentropy_forward(Cuda{}, dlogits.ptr(), dtargets.ptr(), glse.ptr(), gloss.ptr(), R, V);
    check_close(glse.host(), lse, "crossentropy_forward lse");
    check_close(gloss.host(), loss, "crossentropy_forward loss");

    const std::vector<T> dloss = {T(1.5)};
    Dev<T> ddloss(dloss), dlse(lse);
    for (const bool acc : {true, false}) {
      CAPTURE(acc);
      std::vector<T> want = acc ? init : nans<T>(R * V);
      k::crossentropy_backward(Cpu{}, logits.data(), targets.data(), lse.data(), dloss.data(), want.data(), R, V, acc);
      Dev<T> got(R * V);
      acc ? got.set(init) : got.poison();
      k::crossentropy_backward(Cuda{}, dlogits.ptr(), dtargets.ptr(), dlse.ptr(), ddloss.ptr(), got.ptr(), R, V, acc);
      check_close(got.host(), want, "crossentropy_backward");

      want = acc ? init : nans<T>(R * V);
      k::crossentropy_grad(Cpu{}, logits.data(), targets.data(), lse.data(), T(0.25), want.data(), R, V, acc);
      acc ? got.set(init) : got.poison();
      k::crossentropy_grad(Cuda{}, dlogits.ptr(), dtargets.ptr(), dlse.ptr(), T(0.25), got.ptr(), R, V, acc);
      check_close(got.host(), want, "crossentropy_grad");
    }
    // In place: dlogits are the logits.
    std::vector<T> want = logits;
    k::crossentropy_grad(Cpu{}, want.data(), targets.data(), lse.data(), T(0.25), want.data(), R, V, false);
    Dev<T> inplace(logits);
    k::crossentropy_grad(Cuda{}, inplace.ptr(), dtargets.ptr(), dlse.ptr(), T(0.25), inplace.ptr(), R, V, false);
    check_close(inplace.host(), want, "crossentropy_grad in place");
  }
  SUBCASE("crossentropy_rows, crossentropy_rows_grad and mean_of_sums against the host") {
    // The reference in double: lse, the loss sum, and the gradient g * (softmax - onehot).
    const T g = T(1) / T(3);
    std::vector<double> lse(R), grad(static_cast<std::size_t>(R * V));
    double sum = 0;
    for (I64 r = 0; r < R; ++r) {
      const T* xr = logits.data() + r * V;
      double m = xr[0], s = 0;
      for (I64 v = 1; v < V; ++v) m = std::max(m, static_cast<double>(xr[v]));
      for (I64 v = 0; v < V; ++v) s += std::exp(xr[v] - m);
      lse[r] = m + std::log(s);
      for (I64 v = 0; v < V; ++v) grad[r * V + v] = std::exp(xr[v] - lse[r]) * g - (v == targets[r] ? g : 0.0);
      sum += lse[r] - static_cast<double>(xr[targets[r]]);
    }
    Dev<T> glse(R);
    Dev<double> gsum(1);
    glse.poison();
    gsum.poison();
    k::crossentropy_rows(Cuda{}, dlogits.ptr(), dtargets.ptr(), glse.ptr(), R, V, gsum.ptr());
    check_close(glse.host(), lse, "crossentropy_rows lse");
    check_close(gsum.host(), std::vector<double>{sum}, "crossentropy_rows sum", kTol<T>);

    Dev<T> inout(logits), tl(R);
    glse.poison();
    tl.poison();
    gsum.poison();
    k::crossentropy_rows_grad(Cuda{}, inout.ptr(), dtargets.ptr(), glse.ptr(), tl.ptr(), g, R, V, gsum.ptr());
    std::vector<T> want_tl(R);
    for (I64 r = 0; r < R; ++r) want_tl[r] = logits[r * V + targets[r]];
    check_equal(tl.host(), want_tl, "crossentropy_rows_grad target logits");
    check_close(glse.host(), lse, "crossentropy_rows_grad lse");
    check_close(inout.host(), grad, "crossentropy_rows_grad dlogits");
    check_close(gsum.host(), std::vector<double>{sum}, "crossentropy_rows_grad sum", kTol<T>);

    const auto sums = random<double>(7, 64, 0, 100);
    double total = 0;
    for (const double s : sums) total += s;
    Dev<double> dsums(sums);
    Dev<T> out(1);
    out.poison();
    k::mean_of_sums(Cuda{}, dsums.ptr(), 7, 1000, out.ptr());
    check_equal(out.host(), std::vector<T>{static_cast<T>(total / 1000.0)}, "mean_of_sums");
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding, RoPE, dropout

TEST_CASE_TEMPLATE("thrust embedding: checks, gather and ordered scatter-add match the CPU", T, float, double) {
  const I64 V = 11;
  const auto ids = random_ids(R, V, 71);  // 37 ids over 11 rows: many repeats
  Dev<std::int32_t> dids(ids);
  CHECK(k::embedding_first_bad_id(Cuda{}, dids.ptr(), R, V) == -1);
  auto bad = ids;
  bad[20] = 99;
  bad[33] = -3;
  Dev<std::int32_t> dbad(bad);
  CHECK(k::embedding_first_bad_id(Cuda{}, dbad.ptr(), R, V) == 20);
  CHECK(k::embedding_id_at(Cuda{}, dbad.ptr(), 33) == -3);

  for (const I64 cols : {C, I64{3}, I64{1500}}) {  // 64, 64 and 43 buckets of vocabulary rows
    CAPTURE(cols);
    const auto weight = random<T>(V * cols, 72), dout = random<T>(R * cols, 73), dw0 = random<T>(V * cols, 74);
    Dev<T> dweight(weight), ddout(dout);
    std::vector<T> want = nans<T>(R * cols);
    k::embedding_forward(Cpu{}, weight.data(), ids.data(), want.data(), R, cols);
    Dev<T> got(R * cols);
    got.poison();
    k::embedding_forward(Cuda{}, dweight.ptr(), dids.ptr(), got.ptr(), R, cols);
    check_equal(got.host(), want, "embedding_forward");

    std::vector<T> wb = dw0;
    k::embedding_backward(Cpu{}, ids.data(), dout.data(), wb.data(), R, cols);
    Dev<T> gb(dw0);
    k::embedding_backward(Cuda{}, dids.ptr(), ddout.ptr(), gb.ptr(), R, cols);
    check_equal(gb.host(), wb, "embedding_backward (the same order of additions)");
  }
}

TEST_CASE_TEMPLATE("thrust rope: table against the host, rotations against the CPU", T, float, double) {
  const I64 B = 3, Tn = 5, H = 4, Rr = 10, n = B * Tn * H * Rr;
  const double theta = 10000.0;
  const std::vector<std::int32_t> starts = {0, 7, 123};
  for (const I64 P : {I64{1}, B}) {
    CAPTURE(P);
    Dev<std::int32_t> dstart(starts);
    Dev<T> table(P * Tn * Rr);
    table.poison();
    k::rope_table(Cuda{}, dstart.ptr(), 0, P, Tn, Rr, theta, table.ptr());
    const auto th = table.host();
    std::vector<double> want(static_cast<std::size_t>(P * Tn * Rr));
    for (I64 p = 0; p < P; ++p) {
      for (I64 t = 0; t < Tn; ++t) {
        for (I64 i = 0; i < Rr / 2; ++i) {
          const double angle = static_cast<double>(starts[p] + t) * std::pow(theta, -2.0 * i / Rr);
          want[(p * Tn + t) * Rr + i] = static_cast<T>(std::cos(angle));
          want[(p * Tn + t) * Rr + Rr / 2 + i] = static_cast<T>(std::sin(angle));
        }
      }
    }
    check_close(th, want, "rope_table");
    if (P == 1) {  // no starts: every row at `base`, the table of a start of `base`
      Dev<std::int32_t> seven(std::vector<std::int32_t>{7});
      Dev<T> from_start(Tn * Rr), from_base(Tn * Rr);
      from_base.poison();
      k::rope_table(Cuda{}, seven.ptr(), 0, 1, Tn, Rr, theta, from_start.ptr());
      k::rope_table(Cuda{}, static_cast<const std::int32_t*>(nullptr), 7, 1, Tn, Rr, theta, from_base.ptr());
      check_equal(from_base.host(), from_start.host(), "rope_table from a base");
    }

    const auto x = random<T>(n, 81), dout = random<T>(n, 82), init = random<T>(n, 83);
    Dev<T> dx(x), ddout(dout);
    std::vector<T> wf = nans<T>(n);
    k::rope_forward(Cpu{}, x.data(), th.data(), wf.data(), B, Tn, H, Rr, P);
    Dev<T> gf(n);
    gf.poison();
    k::rope_forward(Cuda{}, dx.ptr(), table.ptr(), gf.ptr(), B, Tn, H, Rr, P);
    check_close(gf.host(), wf, "rope_forward");
    Dev<T> inplace(x);
    k::rope_forward(Cuda{}, inplace.ptr(), table.ptr(), inplace.ptr(), B, Tn, H, Rr, P);
    check_close(inplace.host(), wf, "rope_forward in place");
    for (const bool acc : {true, false}) {
      CAPTURE(acc);
      std::vector<T> wb = acc ? init : nans<T>(n);
      k::rope_backward(Cpu{}, th.data(), dout.data(), wb.data(), B, Tn, H, Rr, P, acc);
      Dev<T> gb(n);
      acc ? gb.set(init) : gb.poison();
      k::rope_backward(Cuda{}, table.ptr(), ddout.ptr(), gb.ptr(), B, Tn, H, Rr, P, acc);
      check_close(gb.host(), wb, "rope_backward");
    }
  }
}

TEST_CASE_TEMPLATE("thrust dropout: bit-identical masks to the CPU", T, float, double) {
  const I64 n = 1001;
  const auto x = random<T>(n, 91), init = random<T>(n, 92);
  Dev<T> dx(x);
  for (const T p : {T(0), T(0.3), T(0.9)}) {
    CAPTURE(p);
    std::vector<T> want = nans<T>(n);
    k::dropout_forward(Cpu{}, x.data(), want.data(), n, p, 1234);
    Dev<T> got(n);
    got.poison();
    k::dropout_forward(Cuda{}, dx.ptr(), got.ptr(), n, p, 1234);
    check_equal(got.host(), want, "dropout_forward");
    std::vector<T> wb = init;
    k::dropout_backward(Cpu{}, x.data(), wb.data(), n, p, 1234);
    Dev<T> gb(init);
    k::dropout_backward(Cuda{}, dx.ptr(), gb.ptr(), n, p, 1234);
    check_close(gb.host(), wb, "dropout_backward");
  }
}

// ---------------------------------------------------------------------------------------------
// The optimizer

TEST_CASE_TEMPLATE("thrust optimizer: adamw_update and sum_of_squares match the CPU", T, float, double) {
  const I64 n = 1001;
  const auto p = random<T>(n, 101), g = random<T>(n, 102), m = random<T>(n, 103);
  const auto v = random<T>(n, 104, 0, 1);
  const k::AdamWStep<T> step{T(0.9), T(0.95), T(3e-4), T(0.3), T(1e-8), T(0.5)};
  const T keep = T(1) - T(3e-4) * T(0.1);
  std::vector<T> hp = p, hm = m, hv = v;
  k::adamw_update(Cpu{}, step, hp.data(), g.data(), hm.data(), hv.data(), n, keep);
  Dev<T> dp(p), dg(g), dm(m), dv(v);
  k::adamw_update(Cuda{}, step, dp.ptr(), dg.ptr(), dm.ptr(), dv.ptr(), n, keep);
  check_close(dp.host(), hp, "adamw_update p");
  check_close(dm.host(), hm, "adamw_update m");
  check_close(dv.host(), hv, "adamw_update v");

  const double want = k::sum_of_squares(Cpu{}, g.data(), n);
  CHECK(k::sum_of_squares(Cuda{}, dg.ptr(), n) == doctest::Approx(want).epsilon(1e-12));
  CHECK(k::sum_of_squares(Cuda{}, dg.ptr(), 0) == 0.0);
}
