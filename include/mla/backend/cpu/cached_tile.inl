// mla/backend/cpu/cached_tile.inl — the register tiles of cached attention, written once for
// every instruction set. cached_kernels.hpp includes it in the namespace of each (avx512 and
// avx2 inside their target regions, so the compiler emits them for that ISA whatever -march
// says; portable on Eigen's packets for the ISA the program was compiled for) after defining
// the vector operations it takes as S:
//
//   S::Scalar, S::V, S::kLanes    the element type, a vector of kLanes of them (kLanes may be 1)
//   S::kRegisters                 the vector registers the tiles are sized for
//   zero(), set1(x), loadu(p), storeu(p, v), fmadd(a, b, c), add(a, b), mul(a, b), hsum(v)
//   sums(V d[kLanes])             lane i = the sum of d[i]'s lanes, in a fixed order
//   load(source, j, d)            columns [d, d + kLanes) of row j of a source (WideRows,
//                                 Bf16Rows, Int8Rows), widened to Scalar in registers
//
// Every cached row of a block is used by all the query rows of a tile while it is in L1,
// straight from the cache: a GEMM would first pack (copy) each block, which costs more than the
// arithmetic when the query rows are few. Each dot product and each output element sums in a
// fixed order, so results do not depend on which thread runs them. Local arrays are declared
// alignas(64): GCC 12.2 at -O2 -march=native (AVX-512) otherwise stored to a plain float array
// on the stack with aligned 16-byte moves at an 8-byte boundary.
//
// No include guard: it is meant to be included once per ISA.

template <class S>
struct CachedTiles {
  using T = typename S::Scalar;
  using V = typename S::V;
  static constexpr int N = S::kLanes;

  /// p[r, j + i * stride] = scale * q_r . k_(j + i * stride) for Rt query rows and J keys, one
  /// from each of J parts of the block: Rt * J accumulators, each query vector loaded once for
  /// the J keys, summed over every segment of the keys. q_tail[segment] holds each row's last
  /// vector of that segment's columns, zero over the lanes the whole vectors already cover.
  template <int Rt, int J, class K>
  MLA_FLATTEN static void dot_keys(const T* q, std::int64_t ldq, const T (*q_tail)[Rt][N], const K& keys,
                                   std::int64_t j, std::int64_t stride, T scale, T* p, std::int64_t ldp) {
    alignas(64) V dot[Rt][J];
    alignas(64) V kd[J];
    MLA_UNROLL(16)
    for (int r = 0; r < Rt; ++r) {
      MLA_UNROLL(16)
      for (int i = 0; i < J; ++i) dot[r][i] = S::zero();
    }
    auto step = [&](auto query_vector) {
      MLA_UNROLL(16)
      for (int r = 0; r < Rt; ++r) {
        const V qd = query_vector(r);
        MLA_UNROLL(16)
        for (int i = 0; i < J; ++i) dot[r][i] = S::fmadd(qd, kd[i], dot[r][i]);
      }
    };
    int segment = 0;
    keys.segments([&](const auto& src, std::int64_t q0, std::int64_t width) {
      const std::int64_t full = width / N * N;
      for (std::int64_t d = 0; d < full; d += N) {
        MLA_UNROLL(16)
        for (int i = 0; i < J; ++i) kd[i] = S::load(src, j + i * stride, d);
        step([&](int r) { return S::loadu(q + r * ldq + q0 + d); });
      }
      if (full != width) {  // the last vector, loaded from inside the row: [width - N, width)
        MLA_UNROLL(16)
        for (int i = 0; i < J; ++i) kd[i] = S::load(src, j + i * stride, width - N);
        step([&](int r) { return S::loadu(q_tail[segment][r]); });
      }
      ++segment;
    });
    constexpr int D = Rt * J;
    if constexpr (N == 1 || D % N != 0) {
      for (int r = 0; r < Rt; ++r)
        for (int i = 0; i < J; ++i) p[r * ldp + i * stride] = scale * S::hsum(dot[r][i]);
    } else {
      // N dot products at a time, each a vector of partial sums: S::sums leaves their N sums in
      // one vector, for fewer instructions than a horizontal sum each.
      const V* flat = &dot[0][0];
      for (int b = 0; b < D; b += N) {
        alignas(64) T sums[N];
        S::storeu(sums, S::mul(S::set1(scale), S::sums(flat + b)));
        for (int i = 0; i < N; ++i) p[(b + i) / J * ldp + (b + i) % J * stride] = sums[i];
      }
    }
  }

  /// Query rows per score tile: few enough that a step takes four keys at a time (below) where
  /// 32 registers hold the accumulators, two where 16 do.
  static constexpr int kScoreRows = std::max(1, S::kRegisters >= 32 ? N / 4 : N / 2);

  /// p[r, j] = scale * q_r . k_j for Rt query rows q [Rt, Dk] and keys [n, Dk], every segment at
  /// least a vector wide: lanes / Rt keys at a time (at least one), so that the dot products of
  /// a step fill whole vectors when their sums are gathered (dot_keys). The keys of a step come
  /// from as many equal parts of the block, key i of step j being j + i * (n / J): J streams of
  /// rows, each followed by the hardware prefetchers on its own, keep J times the cache lines in
  /// flight that one stream would, which is what a core's share of the memory bandwidth needs
  /// when each line feeds Rt * J multiply-adds. The dot products run along each segment, one
  /// vector of columns at a time; when a segment is not a whole number of vectors, its last
  /// vector is loaded from width - lanes (inside the row) and multiplied by a query vector that
  /// is zero over the lanes already summed.
  template <int Rt, class K>
  static void scores(const T* q, std::int64_t ldq, const K& keys, std::int64_t n, T scale, T* p, std::int64_t ldp) {
    constexpr int J = Rt >= N ? 1 : N / Rt;
    static_assert(Rt * J <= 2 * S::kRegisters / 3, "the accumulators leave registers for keys and queries");
    alignas(64) T q_tail[2][Rt][N] = {};
    int segment = 0;
    keys.segments([&](const auto&, std::int64_t q0, std::int64_t width) {
      const std::int64_t full = width / N * N, tail = width - full;
      for (int r = 0; r < Rt; ++r) {
        std::copy(q + r * ldq + q0 + full, q + r * ldq + q0 + width, q_tail[segment][r] + N - tail);
      }
      ++segment;
    });
    auto prefetch = [&](std::int64_t row) {
      keys.segments([&](const auto& src, std::int64_t, std::int64_t width) {
        const auto* bytes = static_cast<const char*>(src.row(row));
        for (std::int64_t b = 0; b < width * src.kBytes; b += 64) __builtin_prefetch(bytes + b);
      });
    };
    const std::int64_t part = n / J;
    for (std::int64_t j = 0; j < part; ++j) {
      if (j + kPrefetchRows < part) {
        for (int i = 0; i < J; ++i) prefetch(j + kPrefetchRows + i * part);
      }
      dot_keys<Rt, J>(q, ldq, q_tail, keys, j, part, scale, p + j, ldp);
    }
    for (std::int64_t j = part * J; j < n; ++j) dot_keys<Rt, 1>(q, ldq, q_tail, keys, j, 1, scale, p + j, ldp);
  }

  /// Query rows per transposed score tile: 8 accumulators beside kLanes key vectors and a
  /// broadcast query element. Only where S transposes a block of kLanes vectors in registers and
  /// the registers hold all that (AVX-512's 32): with 4 rows per tile (AVX2's 16 registers), the
  /// 8 query heads of a group repeat each transpose and ran no faster than dot_keys.
  static constexpr int kTransposedRows = 8;
  static constexpr bool kTransposes =
      requires(V* r) { S::transpose(r); } && S::kRegisters >= N + kTransposedRows + 1;

  /// Vectors of keys ahead of the one in use whose rows scores_transposed() asks for.
  static constexpr std::int64_t kTransposedAhead = 2;

  /// Whether scores_transposed() takes these keys: one segment, a whole number of vectors and at
  /// most 4 wide (heads of 32 or 64 floats). The transposes grow with the width and the sums
  /// across lanes they save do not: MLA's 186-wide latent keys stay with dot_keys.
  template <class K>
  static bool transposes(const K& keys) {
    if constexpr (!kTransposes || requires { keys.b; }) {
      return false;
    } else {
      return keys.width_a % N == 0 && keys.width_a <= 4 * N;
    }
  }

  /// p[r, j] = scale * q_r . k_j for Rt query rows and keys [n, Dk] of one segment, Dk a whole
  /// number of vectors (transposes()): kLanes keys at a time, a vector of their columns loaded
  /// from each and the kLanes vectors transposed in registers, so that lane i holds key j + i's
  /// column. One multiply-add by a broadcast query element then advances kLanes dot products,
  /// each whole in its lane: no sums across lanes as dot_keys needs, and the transposes serve all
  /// Rt rows. Each dot product sums its columns in order, one chain. Keys past the last whole
  /// vector of them go to dot_keys one at a time.
  template <int Rt, class K>
  static void scores_transposed(const T* q, std::int64_t ldq, const K& keys, std::int64_t n, T scale, T* p,
                                std::int64_t ldp) {
    const auto& src = keys.a;
    const std::int64_t width = keys.width_a, row_bytes = width * src.kBytes;
    std::int64_t j = 0;
    for (; j + N <= n; j += N) {
      // The rows kTransposedAhead vectors of keys ahead: one stream of rows keeps too few lines
      // in flight for a core's share of the bandwidth on its own.
      for (std::int64_t i = j + kTransposedAhead * N; i < std::min(n, j + (kTransposedAhead + 1) * N); ++i) {
        const auto* bytes = static_cast<const char*>(src.row(i));
        for (std::int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(bytes + b);
      }
      alignas(64) V dot[Rt];
      MLA_UNROLL(16)
      for (int r = 0; r < Rt; ++r) dot[r] = S::zero();
      for (std::int64_t d = 0; d < width; d += N) {
        alignas(64) V kt[N];
        MLA_UNROLL(16)
        for (int i = 0; i < N; ++i) kt[i] = S::load(src, j + i, d);
        S::transpose(kt);
        MLA_UNROLL(16)
        for (int t = 0; t < N; ++t) {
          MLA_UNROLL(16)
          for (int r = 0; r < Rt; ++r) dot[r] = S::fmadd(S::set1(q[r * ldq + d + t]), kt[t], dot[r]);
        }
      }
      MLA_UNROLL(16)
      for (int r = 0; r < Rt; ++r) S::storeu(p + r * ldp + j, S::mul(S::set1(scale), dot[r]));
    }
    alignas(64) const T no_tail[2][Rt][N] = {};
    for (; j < n; ++j) dot_keys<Rt, 1>(q, ldq, no_tail, keys, j, 1, scale, p + j, ldp);
  }

  /// out[r, c] = acc[r, c] + sum_j p[r, j] v[j, c] for Rt rows and C vectors of columns, held in
  /// registers while the n value rows stream past.
  template <int Rt, int C, class Src>
  MLA_FLATTEN static void value_tile(const T* p, std::int64_t ldp, const Src& v, std::int64_t n, const T* acc,
                                     std::int64_t lda, T* out, std::int64_t ldo, Lookahead& ahead) {
    alignas(64) V a[Rt][C];
    MLA_UNROLL(16)
    for (int r = 0; r < Rt; ++r) {
      MLA_UNROLL(4)
      for (int c = 0; c < C; ++c) a[r][c] = S::loadu(acc + r * lda + c * N);
    }
    for (std::int64_t j = 0; j < n; ++j) {
      alignas(64) V vj[C];
      MLA_UNROLL(4)
      for (int c = 0; c < C; ++c) vj[c] = S::load(v, j, c * N);
      MLA_UNROLL(16)
      for (int r = 0; r < Rt; ++r) {
        const V pr = S::set1(p[r * ldp + j]);
        MLA_UNROLL(4)
        for (int c = 0; c < C; ++c) a[r][c] = S::fmadd(pr, vj[c], a[r][c]);
      }
      ahead.step();
    }
    MLA_UNROLL(16)
    for (int r = 0; r < Rt; ++r) {
      MLA_UNROLL(4)
      for (int c = 0; c < C; ++c) S::storeu(out + r * ldo + c * N, a[r][c]);
    }
  }

  /// Column tiles of C vectors over [c0, end) while they fit, then at most one of each narrower
  /// width for what is left.
  template <int Rt, int C, class Src>
  static void column_tiles(const T* p, std::int64_t ldp, const Src& v, std::int64_t n, std::int64_t c0,
                           std::int64_t end, T* acc, std::int64_t lda, Lookahead& ahead) {
    constexpr int W = C * N;
    for (; c0 + W <= end; c0 += W) value_tile<Rt, C>(p, ldp, v.cols_from(c0), n, acc + c0, lda, acc + c0, lda, ahead);
    if constexpr (C > 1) column_tiles<Rt, C - 1>(p, ldp, v, n, c0, end, acc, lda, ahead);
  }

  /// acc [Rt, Dv] += p [Rt, n] v [n, Dv], Dv >= lanes: column tiles as wide as the registers
  /// hold (Rt * C accumulators, C value vectors and a broadcast probability), so each value row
  /// is read once per tile. When Dv is not a whole number of vectors, the last vector of
  /// columns, [Dv - lanes, Dv), is computed from the original acc into a buffer first and its
  /// new columns copied in at the end; the columns it shares with the tiles before it come out
  /// the same, bit for bit, either way.
  template <int Rt, class Src>
  static void values(const T* p, std::int64_t ldp, const Src& v, std::int64_t n, std::int64_t Dv, T* acc,
                     std::int64_t lda, Lookahead& ahead) {
    constexpr int kRegisters = S::kRegisters;
    if constexpr (Rt > 1 && (kRegisters - 1) / (Rt + 1) < 2) {
      // Registers for one vector of columns only (8 rows in 16 registers): each value vector
      // would be loaded for 8 multiply-adds with 8 broadcasts, more loads than the ports serve.
      // Half the rows at a time, with two or more vectors of columns, load fewer per multiply-add.
      values<Rt / 2>(p, ldp, v, n, Dv, acc, lda, ahead);
      values<Rt / 2>(p + Rt / 2 * ldp, ldp, v, n, Dv, acc + Rt / 2 * lda, lda, ahead);
      return;
    }
    constexpr int C = std::clamp((kRegisters - 1) / (Rt + 1), 1, 4);
    const std::int64_t tail = Dv % N;
    alignas(64) T last[Rt][N];
    if (tail != 0) value_tile<Rt, 1>(p, ldp, v.cols_from(Dv - N), n, acc + Dv - N, lda, last[0], N, ahead);
    column_tiles<Rt, C>(p, ldp, v, n, 0, Dv - tail, acc, lda, ahead);
    if (tail != 0) {
      for (int r = 0; r < Rt; ++r) std::copy(last[r] + N - tail, last[r] + N, acc + r * lda + Dv - tail);
    }
  }
};
