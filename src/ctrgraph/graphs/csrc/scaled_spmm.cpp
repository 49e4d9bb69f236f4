// The product of DG-ENN's per-step normalised adjacency with a dense matrix, CPU
// (ctrgraph.graphs.native; ctrgraph.graphs.ScaledAdjacency and the fused LightGCN stage):
//
//   y[r, :] = s[r] * ( sum_{e in row r} s[col[e]] * x[col[e], :]  (+ the dropped-edge correction) )
//
// for a fixed 0/1 CSR structure A (rowptr, col: int32 or int64; no values are read: every stored
// entry is 1) and per-node scales s. The dropped edges (tgt[k], src[k]) are subtracted from their row's
// sum right after it is formed (each row's drops kept in list order, Drops), in one of the two orders of
// the PyTorch composition it replaces:
//
//   mode 0 (forward):  y[t] = (...((acc[t] + (-v1)) + (-v2)) ...)         (index_add of -v, in list order)
//   mode 1 (backward): y[t] = acc[t] + (((0 + (-v1)) + (-v2)) ...)        (a zero tensor's index_add, then add)
//
// with v = s[src] * x[src, :], then the row scale s[t]. The products s[c] * x[c, :] are formed once per
// node (xs); each row's sum: entry j (counted from the row's first) adds xs[col[j]] to partial sum j % 4,
// in order, and the row is (p0 + p1) + (p2 + p3) (no FMA: this file is compiled with -ffp-contract=off
// and without reassociation); the AVX-512 / AVX2 loops (chosen at run time) and the portable loop give
// the same bits.
//
// Each row's y goes through an epilogue in the same pass (Epi): store y; t = a + y with a = add[r]
// [/ div]; store t [/ div]; store the next layer's s[r] * (y or t). LightGCN's layers and their sum
// (Eqs. 11, 13) then run without separate passes over the node arrays (lightgcn()).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

bool simd_enabled = true;  // set_simd(false): the portable loop only (tests compare the two)

// W partial sums per row (see above): W independent addition chains instead of one
constexpr int W = 4;

template <typename scalar_t>
struct Epi {
  scalar_t* y = nullptr;             // y[r] = s[r] * acc
  const scalar_t* add = nullptr;     // a[r] = add[r] (/ div if add_div); t = a + y
  scalar_t* z = nullptr;             // z[r] = t (/ div if out_div)
  scalar_t* xsn = nullptr;           // xsn[r] = s[r] * (xsn_from_t ? t : y)
  scalar_t div = scalar_t(1);
  bool add_div = false, out_div = false, xsn_from_t = false;
  // the dropped edges by target row: row r's sources dsrc[dptr[r] .. dptr[r + 1]) in list order (null:
  // none); mode 0 subtracts them from the row sum one by one, mode 1 adds their sum from zero
  const int64_t* dptr = nullptr;
  const int64_t* dsrc = nullptr;
  int64_t mode = 0;

  inline void row(int64_t r, const scalar_t* acc, scalar_t sr, int64_t d) const {
    for (int64_t k = 0; k < d; ++k) {
      const scalar_t yv = acc[k] * sr;
      if (y != nullptr) y[r * d + k] = yv;
      if (add != nullptr) {
        const scalar_t a = add_div ? add[r * d + k] / div : add[r * d + k];
        const scalar_t t = a + yv;
        if (z != nullptr) z[r * d + k] = out_div ? t / div : t;
        if (xsn != nullptr) xsn[r * d + k] = sr * (xsn_from_t ? t : yv);
      } else if (xsn != nullptr) {
        xsn[r * d + k] = sr * yv;
      }
    }
  }
};

template <typename scalar_t, typename index_t>
void rows_any(const index_t* __restrict__ rowptr, const index_t* __restrict__ col, const scalar_t* __restrict__ s,
              const scalar_t* __restrict__ x, const Epi<scalar_t>& ep, int64_t d, int64_t lo, int64_t hi) {
  std::vector<scalar_t> part(W * d), acc(d);
  for (int64_t r = lo; r < hi; ++r) {
    for (int64_t k = 0; k < W * d; ++k) part[k] = scalar_t(0);
    const int64_t b = rowptr[r], e = rowptr[r + 1];
    for (int64_t j = b; j < e; ++j) {
      const scalar_t* xc = x + static_cast<int64_t>(col[j]) * d;
      scalar_t* pw = part.data() + ((j - b) % W) * d;
      for (int64_t k = 0; k < d; ++k) pw[k] = pw[k] + xc[k];
    }
    for (int64_t k = 0; k < d; ++k) acc[k] = (part[k] + part[d + k]) + (part[2 * d + k] + part[3 * d + k]);
    if (ep.dptr != nullptr && ep.dptr[r] < ep.dptr[r + 1]) {
      if (ep.mode == 0) {  // acc + (-v1) + (-v2) ... (a - b is a + (-b) in IEEE arithmetic)
        for (int64_t q = ep.dptr[r]; q < ep.dptr[r + 1]; ++q) {
          const scalar_t* v = x + ep.dsrc[q] * d;
          for (int64_t k = 0; k < d; ++k) acc[k] = acc[k] - v[k];
        }
      } else {  // acc + ((0 + (-v1)) + (-v2) ...)
        for (int64_t k = 0; k < d; ++k) part[k] = scalar_t(0);
        for (int64_t q = ep.dptr[r]; q < ep.dptr[r + 1]; ++q) {
          const scalar_t* v = x + ep.dsrc[q] * d;
          for (int64_t k = 0; k < d; ++k) part[k] = part[k] - v[k];
        }
        for (int64_t k = 0; k < d; ++k) acc[k] = acc[k] + part[k];
      }
    }
    ep.row(r, acc.data(), s[r], d);
  }
}

// float rows of 16 / 32 / 64 values (one to four 512-bit registers; AVX-512F) or 8 ... 64 (256-bit,
// AVX2): the portable loop's additions lane by lane, chosen at run time (the extension is compiled
// without -march flags, so its cached build runs anywhere)
#define CTRGRAPH_ROWS_SIMD(NAME, TARGET, VT, PRE, LANES)                                                   \
  template <typename index_t, int V>                                                                      \
  __attribute__((target(TARGET))) void NAME(const index_t* __restrict__ rowptr,                           \
                                            const index_t* __restrict__ col, const float* __restrict__ s,  \
                                            const float* __restrict__ x, const Epi<float>& ep, int64_t lo,  \
                                            int64_t hi) {                                                  \
    constexpr int D = LANES * V;                                                                          \
    const VT dv = PRE##_set1_ps(ep.div);                                                                  \
    for (int64_t r = lo; r < hi; ++r) {                                                                   \
      VT p0[V], p1[V], p2[V], p3[V];                                                                      \
      for (int v = 0; v < V; ++v) p0[v] = p1[v] = p2[v] = p3[v] = PRE##_setzero_ps();                     \
      const int64_t b = rowptr[r], e = rowptr[r + 1];                                                     \
      int64_t j = b;                                                                                      \
      for (; j + 4 <= e; j += 4) {                                                                        \
        const float* x0 = x + static_cast<int64_t>(col[j]) * D;                                           \
        const float* x1 = x + static_cast<int64_t>(col[j + 1]) * D;                                       \
        const float* x2 = x + static_cast<int64_t>(col[j + 2]) * D;                                       \
        const float* x3 = x + static_cast<int64_t>(col[j + 3]) * D;                                       \
        for (int v = 0; v < V; ++v) {                                                                     \
          p0[v] = PRE##_add_ps(p0[v], PRE##_loadu_ps(x0 + LANES * v));                                    \
          p1[v] = PRE##_add_ps(p1[v], PRE##_loadu_ps(x1 + LANES * v));                                    \
          p2[v] = PRE##_add_ps(p2[v], PRE##_loadu_ps(x2 + LANES * v));                                    \
          p3[v] = PRE##_add_ps(p3[v], PRE##_loadu_ps(x3 + LANES * v));                                    \
        }                                                                                                 \
      }                                                                                                   \
      if (j < e) {                                                                                        \
        const float* xc = x + static_cast<int64_t>(col[j]) * D;                                           \
        for (int v = 0; v < V; ++v) p0[v] = PRE##_add_ps(p0[v], PRE##_loadu_ps(xc + LANES * v));          \
      }                                                                                                   \
      if (j + 1 < e) {                                                                                    \
        const float* xc = x + static_cast<int64_t>(col[j + 1]) * D;                                       \
        for (int v = 0; v < V; ++v) p1[v] = PRE##_add_ps(p1[v], PRE##_loadu_ps(xc + LANES * v));          \
      }                                                                                                   \
      if (j + 2 < e) {                                                                                    \
        const float* xc = x + static_cast<int64_t>(col[j + 2]) * D;                                       \
        for (int v = 0; v < V; ++v) p2[v] = PRE##_add_ps(p2[v], PRE##_loadu_ps(xc + LANES * v));          \
      }                                                                                                   \
      VT acc[V];                                                                                          \
      for (int v = 0; v < V; ++v) acc[v] = PRE##_add_ps(PRE##_add_ps(p0[v], p1[v]), PRE##_add_ps(p2[v], p3[v])); \
      if (ep.dptr != nullptr && ep.dptr[r] < ep.dptr[r + 1]) { /* this row's drops, as rows_any */        \
        if (ep.mode == 0) {                                                                               \
          for (int64_t q = ep.dptr[r]; q < ep.dptr[r + 1]; ++q) {                                         \
            const float* xv = x + ep.dsrc[q] * D;                                                         \
            for (int v = 0; v < V; ++v) acc[v] = PRE##_sub_ps(acc[v], PRE##_loadu_ps(xv + LANES * v));    \
          }                                                                                               \
        } else {                                                                                          \
          for (int v = 0; v < V; ++v) p0[v] = PRE##_setzero_ps();                                         \
          for (int64_t q = ep.dptr[r]; q < ep.dptr[r + 1]; ++q) {                                         \
            const float* xv = x + ep.dsrc[q] * D;                                                         \
            for (int v = 0; v < V; ++v) p0[v] = PRE##_sub_ps(p0[v], PRE##_loadu_ps(xv + LANES * v));      \
          }                                                                                               \
          for (int v = 0; v < V; ++v) acc[v] = PRE##_add_ps(acc[v], p0[v]);                               \
        }                                                                                                 \
      }                                                                                                   \
      const VT sr = PRE##_set1_ps(s[r]);                                                                  \
      for (int v = 0; v < V; ++v) {                                                                       \
        const int64_t o = r * D + LANES * v;                                                              \
        const VT yv = PRE##_mul_ps(acc[v], sr);                                                           \
        if (ep.y != nullptr) PRE##_storeu_ps(ep.y + o, yv);                                               \
        if (ep.add != nullptr) {                                                                          \
          VT a = PRE##_loadu_ps(ep.add + o);                                                              \
          if (ep.add_div) a = PRE##_div_ps(a, dv);                                                        \
          const VT t = PRE##_add_ps(a, yv);                                                               \
          if (ep.z != nullptr) PRE##_storeu_ps(ep.z + o, ep.out_div ? PRE##_div_ps(t, dv) : t);           \
          if (ep.xsn != nullptr) PRE##_storeu_ps(ep.xsn + o, PRE##_mul_ps(sr, ep.xsn_from_t ? t : yv));  \
        } else if (ep.xsn != nullptr) {                                                                   \
          PRE##_storeu_ps(ep.xsn + o, PRE##_mul_ps(sr, yv));                                              \
        }                                                                                                 \
      }                                                                                                   \
    }                                                                                                     \
  }

CTRGRAPH_ROWS_SIMD(rows_avx512, "avx512f", __m512, _mm512, 16)
CTRGRAPH_ROWS_SIMD(rows_avx2, "avx2", __m256, _mm256, 8)
#undef CTRGRAPH_ROWS_SIMD

template <typename index_t>
bool rows_simd(const index_t* rowptr, const index_t* col, const float* s, const float* x, const Epi<float>& ep,
               int64_t d, int64_t lo, int64_t hi) {
  static const bool avx512 = __builtin_cpu_supports("avx512f"), avx2 = __builtin_cpu_supports("avx2");
  if (avx512) {
    switch (d) {
      case 16: rows_avx512<index_t, 1>(rowptr, col, s, x, ep, lo, hi); return true;
      case 32: rows_avx512<index_t, 2>(rowptr, col, s, x, ep, lo, hi); return true;
      case 64: rows_avx512<index_t, 4>(rowptr, col, s, x, ep, lo, hi); return true;
    }
  }
  if (avx2) {
    switch (d) {
      case 8: rows_avx2<index_t, 1>(rowptr, col, s, x, ep, lo, hi); return true;
      case 16: rows_avx2<index_t, 2>(rowptr, col, s, x, ep, lo, hi); return true;
      case 32: rows_avx2<index_t, 4>(rowptr, col, s, x, ep, lo, hi); return true;
      case 64: rows_avx2<index_t, 8>(rowptr, col, s, x, ep, lo, hi); return true;
    }
  }
  return false;
}

// The dropped edges of one product grouped by target row, each row's in list order (a stable counting
// sort): row r's sources are src[ptr[r] .. ptr[r + 1]), applied right after the row's sum
struct Drops {
  int64_t K = 0;
  std::vector<int64_t> ptr, src;

  Drops(const torch::Tensor& t, const torch::Tensor& s, int64_t n) : K(t.numel()) {
    if (!K) return;
    const int64_t* tgt = t.data_ptr<int64_t>();
    const int64_t* sp = s.data_ptr<int64_t>();
    ptr.assign(n + 1, 0);
    for (int64_t k = 0; k < K; ++k) {
      TORCH_CHECK(tgt[k] >= 0 && tgt[k] < n && sp[k] >= 0 && sp[k] < n, "scaled_spmm: dropped edge out of range");
      ++ptr[tgt[k] + 1];
    }
    for (int64_t r = 0; r < n; ++r) ptr[r + 1] += ptr[r];
    std::vector<int64_t> fill(ptr.begin(), ptr.end() - 1);
    src.resize(K);
    for (int64_t k = 0; k < K; ++k) src[fill[tgt[k]]++] = sp[k];
  }
};

// One product xs -> epilogue, each row's drops (mode 0 / 1) applied to its sum before its epilogue
template <typename scalar_t, typename index_t>
void product(const index_t* rowptr, const index_t* col, const scalar_t* s, const scalar_t* xs, Epi<scalar_t> ep,
             const Drops& dr, int64_t mode, int64_t n, int64_t d) {
  if (dr.K) {
    ep.dptr = dr.ptr.data();
    ep.dsrc = dr.src.data();
    ep.mode = mode;
  }
  at::parallel_for(0, n, 512, [&](int64_t lo, int64_t hi) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (simd_enabled && rows_simd<index_t>(rowptr, col, s, xs, ep, d, lo, hi)) return;
    }
    rows_any<scalar_t, index_t>(rowptr, col, s, xs, ep, d, lo, hi);
  });
}

// product() for the structure's index type (int32 or int64 CSR)
template <typename scalar_t>
void product_any_index(const torch::Tensor& rowptr, const torch::Tensor& col, const torch::Tensor& s,
                       const torch::Tensor& xs, const Epi<scalar_t>& ep, const Drops& dr, int64_t mode,
                       int64_t n, int64_t d) {
  if (rowptr.scalar_type() == torch::kInt32) {
    product<scalar_t, int32_t>(rowptr.data_ptr<int32_t>(), col.data_ptr<int32_t>(), s.data_ptr<scalar_t>(),
                               xs.data_ptr<scalar_t>(), ep, dr, mode, n, d);
  } else {
    product<scalar_t, int64_t>(rowptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), s.data_ptr<scalar_t>(),
                               xs.data_ptr<scalar_t>(), ep, dr, mode, n, d);
  }
}

void check(const torch::Tensor& rowptr, const torch::Tensor& col, const torch::Tensor& s, const torch::Tensor& x,
           const torch::Tensor& tgt, const torch::Tensor& src, int64_t mode) {
  TORCH_CHECK(!x.is_cuda(), "scaled_spmm native kernel: CPU tensors only");
  TORCH_CHECK(x.dim() == 2 && s.dim() == 1 && s.size(0) == x.size(0) && rowptr.size(0) == x.size(0) + 1,
              "scaled_spmm: shapes do not agree");
  TORCH_CHECK(rowptr.scalar_type() == col.scalar_type(), "scaled_spmm: rowptr and col must share a dtype");
  TORCH_CHECK(rowptr.scalar_type() == torch::kInt32 || rowptr.scalar_type() == torch::kInt64,
              "scaled_spmm: int32 or int64 indices");
  TORCH_CHECK(s.scalar_type() == x.scalar_type(), "scaled_spmm: s and x must share a dtype");
  TORCH_CHECK(mode == 0 || mode == 1, "scaled_spmm: mode must be 0 or 1");
  TORCH_CHECK(tgt.numel() == src.numel(), "scaled_spmm: dropped-edge lists differ in length");
}

// y = s * (A (s x) - drops); with add: z = (add + y) [/ div]
std::vector<torch::Tensor> scaled_spmm(torch::Tensor rowptr, torch::Tensor col, torch::Tensor s, torch::Tensor x,
                                       torch::Tensor tgt, torch::Tensor src, int64_t mode, torch::Tensor add,
                                       double div) {
  check(rowptr, col, s, x, tgt, src, mode);
  x = x.contiguous(); s = s.contiguous(); rowptr = rowptr.contiguous(); col = col.contiguous();
  tgt = tgt.to(torch::kInt64).contiguous(); src = src.to(torch::kInt64).contiguous();
  if (add.numel()) {
    TORCH_CHECK(add.sizes() == x.sizes() && add.scalar_type() == x.scalar_type(), "scaled_spmm: add must match x");
    add = add.contiguous();
  }
  const torch::Tensor xs = x * s.unsqueeze(1);  // s[c] x[c] once per node (the same rounded products)
  auto y = torch::empty_like(x);
  auto z = add.numel() ? torch::empty_like(x) : torch::empty({0}, x.options());
  const int64_t n = x.size(0), d = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scaled_spmm", [&] {
    Epi<scalar_t> ep;
    ep.y = y.data_ptr<scalar_t>();
    if (add.numel()) {
      ep.add = add.data_ptr<scalar_t>();
      ep.z = z.data_ptr<scalar_t>();
      ep.out_div = div != 0.0;
      ep.div = static_cast<scalar_t>(div != 0.0 ? div : 1.0);
    }
    Drops dr(tgt, src, n);
    product_any_index<scalar_t>(rowptr, col, s, xs, ep, dr, mode, n, d);
  });
  return {y, z};
}

// LightGCN's L layers of Â and their sum (Eq. 13), div = L + 1 for the mean (0: the sum):
//   mode 0 (forward of x):  h0 = x, h_{l+1} = Â h_l, returns ((h0 + h1) + ... + h_L) [/ div]
//   mode 1 (backward of g): g' = g [/ div], u_L = g', u_l = g' + Â u_{l+1}, returns u_0
// the operations (and their order per element) of the layer loop over scaled_spmm, without
// materialising the layers: each product's epilogue writes the running sum and the next layer's s * h.
// Product l (in the order computed) uses structure rowptrs[l], cols[l] and drops tgts[l], srcs[l], or
// the only ones given (one structure for every layer: lightgcn()); lightgcn_parts() gives one per layer.
torch::Tensor lightgcn_impl(std::vector<torch::Tensor> rowptrs, std::vector<torch::Tensor> cols, torch::Tensor s,
                            torch::Tensor x, std::vector<torch::Tensor> tgts, std::vector<torch::Tensor> srcs,
                            int64_t mode, int64_t n_layers, double div) {
  TORCH_CHECK(n_layers >= 1, "lightgcn: at least one layer");
  const size_t P = rowptrs.size();
  TORCH_CHECK(P >= 1 && cols.size() == P && tgts.size() == P && srcs.size() == P &&
                  (P == 1 || static_cast<int64_t>(P) == n_layers),
              "lightgcn: one structure, or one per layer, each with its drops");
  for (size_t p = 0; p < P; ++p) {
    check(rowptrs[p], cols[p], s, x, tgts[p], srcs[p], mode);
    rowptrs[p] = rowptrs[p].contiguous(); cols[p] = cols[p].contiguous();
    tgts[p] = tgts[p].to(torch::kInt64).contiguous(); srcs[p] = srcs[p].to(torch::kInt64).contiguous();
  }
  x = x.contiguous(); s = s.contiguous();
  const bool has_div = div != 0.0;
  // the first layer's input times s: forward s * x; backward s * (g / div), as the unfused loop forms them
  torch::Tensor xs = mode == 0 ? x * s.unsqueeze(1) : (has_div ? x / div : x) * s.unsqueeze(1);
  torch::Tensor xsn = n_layers > 1 ? torch::empty_like(x) : torch::Tensor();
  auto out = torch::empty_like(x);
  const int64_t n = x.size(0), d = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lightgcn", [&] {
    std::vector<Drops> drops;
    for (size_t p = 0; p < P; ++p) drops.emplace_back(tgts[p], srcs[p], n);
    for (int64_t l = 0; l < n_layers; ++l) {
      const size_t p = P == 1 ? 0 : static_cast<size_t>(l);
      const bool last = l == n_layers - 1;
      Epi<scalar_t> ep;
      ep.div = static_cast<scalar_t>(has_div ? div : 1.0);
      if (mode == 0) {  // t = (running sum) + h_{l+1}; the next input s * h_{l+1}
        ep.add = (l == 0 ? x : out).data_ptr<scalar_t>();
        ep.z = out.data_ptr<scalar_t>();  // in place from the second layer on: row r reads and writes row r only
        ep.out_div = last && has_div;
        ep.xsn_from_t = false;
      } else {  // t = g' + Â u; the next input s * t; the last layer returns t
        ep.add = x.data_ptr<scalar_t>();
        ep.add_div = has_div;
        ep.z = last ? out.data_ptr<scalar_t>() : nullptr;
        ep.xsn_from_t = true;
      }
      ep.xsn = last ? nullptr : xsn.data_ptr<scalar_t>();
      product_any_index<scalar_t>(rowptrs[p], cols[p], s, xs, ep, drops[p], mode, n, d);
      if (!last) std::swap(xs, xsn);
    }
  });
  return out;
}

torch::Tensor lightgcn(torch::Tensor rowptr, torch::Tensor col, torch::Tensor s, torch::Tensor x, torch::Tensor tgt,
                       torch::Tensor src, int64_t mode, int64_t n_layers, double div) {
  return lightgcn_impl({rowptr}, {col}, s, x, {tgt}, {src}, mode, n_layers, div);
}

// lightgcn() with structure l (and its drops) for the l-th product computed (DG-ENN's edge-part sampler,
// embeddings/dg.py ``edge_parts``: the caller passes the backward's in reverse layer order)
torch::Tensor lightgcn_parts(std::vector<torch::Tensor> rowptrs, std::vector<torch::Tensor> cols, torch::Tensor s,
                             torch::Tensor x, std::vector<torch::Tensor> tgts, std::vector<torch::Tensor> srcs,
                             int64_t mode, double div) {
  return lightgcn_impl(rowptrs, cols, s, x, tgts, srcs, mode, static_cast<int64_t>(rowptrs.size()), div);
}

// out = ((base + t_1) + t_2) + ... row by row (DG-ENN's linear attribute stage, e W_0^T + sum_f R_f P_f): term
// i is a dense [n, d] tensor (sels[i] empty) or the rows p_i[sels[i][r]] of a small table, where
// sels[i][r] == p_i.size(0) adds a zero row: the additions of ``base + cat([p, 0])[sel] + ...`` in that
// order, one pass and no gathered [n, d] copies
torch::Tensor ordered_sum(torch::Tensor base, std::vector<torch::Tensor> terms, std::vector<torch::Tensor> sels) {
  TORCH_CHECK(!base.is_cuda() && base.dim() == 2 && terms.size() == sels.size(), "ordered_sum: CPU [n, d] base, one sel per term");
  base = base.contiguous();
  const int64_t n = base.size(0), d = base.size(1);
  const size_t T = terms.size();
  std::vector<int64_t> rows(T);
  for (size_t i = 0; i < T; ++i) {
    terms[i] = terms[i].contiguous();
    TORCH_CHECK(terms[i].dim() == 2 && terms[i].size(1) == d && terms[i].scalar_type() == base.scalar_type(),
                "ordered_sum: terms must be [*, d] of the base's dtype");
    rows[i] = terms[i].size(0);
    if (sels[i].numel()) {
      sels[i] = sels[i].to(torch::kInt64).contiguous();
      TORCH_CHECK(sels[i].numel() == n, "ordered_sum: one index per row");
      const int64_t* sp = sels[i].data_ptr<int64_t>();
      for (int64_t r = 0; r < n; ++r) TORCH_CHECK(sp[r] >= 0 && sp[r] <= rows[i], "ordered_sum: index out of range");
    } else {
      TORCH_CHECK(rows[i] == n, "ordered_sum: a dense term needs n rows");
    }
  }
  auto out = torch::empty_like(base);
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "ordered_sum", [&] {
    std::vector<const scalar_t*> tp(T);
    std::vector<const int64_t*> sp(T, nullptr);
    for (size_t i = 0; i < T; ++i) {
      tp[i] = terms[i].data_ptr<scalar_t>();
      if (sels[i].numel()) sp[i] = sels[i].data_ptr<int64_t>();
    }
    const scalar_t* b = base.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t r = 0; r < n; ++r) {
      scalar_t* orow = o + r * d;
      for (int64_t k = 0; k < d; ++k) orow[k] = b[r * d + k];
      for (size_t i = 0; i < T; ++i) {
        const int64_t j = sp[i] == nullptr ? r : sp[i][r];
        if (j < rows[i]) {
          const scalar_t* t = tp[i] + j * d;
          for (int64_t k = 0; k < d; ++k) orow[k] = orow[k] + t[k];
        } else {  // the zero row (x + 0 is not always x: -0 + 0 = +0)
          for (int64_t k = 0; k < d; ++k) orow[k] = orow[k] + scalar_t(0);
        }
      }
    }
  });
  return out;
}

// DG-ENN's per-step target drops and the two operators' inputs in one call (DualGraphEmbedding.step_operators;
// the numpy steps of _target_drops_np and DropGraph.operator for LightGCN's literal norm, the same results):
// every positive row (label > 0) of the batch, key q = u * n_items + v, is looked up in the sorted keys of
// the drop table (within user u's range keys[uptr[u] .. uptr[u + 1]), the same index as a search of all
// keys), and its uv pair id (ids[0]) and vv pair ids (ids[1], ids[2]) are counted where >= 0. Per graph
// (g = {pair_cnt f32, pair_keys i64, s0 f32, deg0 i64, table f32}, empty: no such graph): the pairs whose
// count reaches 0 (pair_cnt > 0 and pair_cnt - drops <= 0), ascending; their directed edges
// (lo, hi), (hi, lo) as rows / cols; the node scales s0 with each changed node's set to
// table[max(deg0 - lost edges, 0)]. Returns {rows_uv, cols_uv, s_uv, rows_vv, cols_vv, s_vv}: rows empty
// where no pair is gone (s is then s0 itself).
namespace dg {

// the drop-table index of every positive's key (none where it has no entry), ascending: the keys sorted, each
// found by a forward scan from the larger of the previous find and its user's first key (one user's keys are
// a short run; the table is read front to back, never by dependent binary-search probes, which cost a cache
// miss each inside a training loop)
template <typename label_t>
void positives(const label_t* lab, const int64_t* u, const int64_t* v, int64_t B, int64_t n_items,
               const int64_t* keys, const int64_t* uptr, int64_t n_users, std::vector<int64_t>& at) {
  std::vector<int64_t> q;
  q.reserve(B);
  for (int64_t i = 0; i < B; ++i) {
    if (!(lab[i] > 0)) continue;
    TORCH_CHECK(u[i] >= 0 && u[i] < n_users && v[i] >= 0 && v[i] < n_items, "dg_drops: id out of range");
    q.push_back(u[i] * n_items + v[i]);
  }
  std::sort(q.begin(), q.end());
  int64_t p = 0;
  for (const int64_t key : q) {
    const int64_t user = key / n_items, end = uptr[user + 1];
    p = std::max(p, uptr[user]);
    while (p < end && keys[p] < key) ++p;
    if (p < end && keys[p] == key) at.push_back(p);
  }
}

void graph(std::vector<int64_t>& ids, const std::vector<torch::Tensor>& g, std::vector<torch::Tensor>& out) {
  if (g.empty()) {
    out.insert(out.end(), {torch::Tensor(), torch::Tensor(), torch::Tensor()});
    return;
  }
  const float* cnt = g[0].data_ptr<float>();
  const int64_t* pkeys = g[1].data_ptr<int64_t>();
  const torch::Tensor& s0 = g[2];
  const int64_t* deg0 = g[3].data_ptr<int64_t>();
  const float* table = g[4].data_ptr<float>();
  const int64_t n = s0.size(0), n_pairs = g[0].numel(), n_table = g[4].numel();
  std::sort(ids.begin(), ids.end());
  std::vector<int64_t> gone;
  for (size_t a = 0; a < ids.size();) {
    size_t b = a;
    while (b < ids.size() && ids[b] == ids[a]) ++b;
    TORCH_CHECK(ids[a] >= 0 && ids[a] < n_pairs, "dg_drops: pair id out of range");
    const double was = cnt[ids[a]];
    if (was > 0 && was - static_cast<double>(b - a) <= 0) gone.push_back(ids[a]);
    a = b;
  }
  if (gone.empty()) {
    out.insert(out.end(), {torch::empty({0}, torch::kInt64), torch::empty({0}, torch::kInt64), s0});
    return;
  }
  const int64_t K = static_cast<int64_t>(gone.size());
  auto rows = torch::empty({2 * K}, torch::kInt64), cols = torch::empty({2 * K}, torch::kInt64);
  int64_t* rp = rows.data_ptr<int64_t>();
  int64_t* cp = cols.data_ptr<int64_t>();
  std::vector<int32_t> lost(n, 0);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t key = pkeys[gone[k]], lo = key / n, hi = key % n;
    rp[2 * k] = lo; rp[2 * k + 1] = hi;
    cp[2 * k] = hi; cp[2 * k + 1] = lo;
    ++lost[lo]; ++lost[hi];
  }
  auto s = s0.clone();
  float* sp = s.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    if (!lost[r]) continue;
    const int64_t d = std::max<int64_t>(deg0[r] - lost[r], 0);
    TORCH_CHECK(d < n_table, "dg_drops: degree beyond the scale table");
    sp[r] = table[d];
  }
  out.insert(out.end(), {rows, cols, s});
}

}  // namespace dg

std::vector<torch::Tensor> dg_drops(torch::Tensor label, torch::Tensor user, torch::Tensor item, int64_t n_items,
                                    torch::Tensor keys, torch::Tensor uptr, std::vector<torch::Tensor> ids,
                                    std::vector<torch::Tensor> uv, std::vector<torch::Tensor> vv) {
  TORCH_CHECK(!label.is_cuda() && label.dim() == 1 && user.numel() == label.numel() && item.numel() == label.numel(),
              "dg_drops: CPU label, user and item of one batch");
  TORCH_CHECK(ids.size() == 3 && keys.scalar_type() == torch::kInt64 && uptr.scalar_type() == torch::kInt64,
              "dg_drops: int64 keys, user offsets and three id arrays");
  for (const auto* g : {&uv, &vv}) {
    TORCH_CHECK(g->empty() || (g->size() == 5 && (*g)[0].scalar_type() == torch::kFloat32 &&
                               (*g)[1].scalar_type() == torch::kInt64 && (*g)[2].scalar_type() == torch::kFloat32 &&
                               (*g)[3].scalar_type() == torch::kInt64 && (*g)[4].scalar_type() == torch::kFloat32 &&
                               (*g)[0].is_contiguous() && (*g)[1].is_contiguous() && (*g)[2].is_contiguous() &&
                               (*g)[3].is_contiguous() && (*g)[4].is_contiguous() && (*g)[3].numel() == (*g)[2].numel()),
                "dg_drops: a graph is {pair_cnt f32, pair_keys i64, s0 f32, deg0 i64, table f32}, contiguous");
  }
  user = user.to(torch::kInt64).contiguous();
  item = item.to(torch::kInt64).contiguous();
  label = label.contiguous();
  keys = keys.contiguous();
  uptr = uptr.contiguous();
  const int64_t B = label.numel(), n_users = uptr.numel() - 1;
  std::vector<int64_t> at;
  at.reserve(B);
  AT_DISPATCH_ALL_TYPES(label.scalar_type(), "dg_drops", [&] {
    dg::positives<scalar_t>(label.data_ptr<scalar_t>(), user.data_ptr<int64_t>(), item.data_ptr<int64_t>(), B, n_items,
                            keys.data_ptr<int64_t>(), uptr.data_ptr<int64_t>(), n_users, at);
  });
  for (const auto& t : ids) TORCH_CHECK(t.scalar_type() == torch::kInt64 && t.is_contiguous() && t.numel() == keys.numel(),
                                        "dg_drops: one int64 id per key");
  const int64_t* uv_id = ids[0].data_ptr<int64_t>();
  const int64_t* pv = ids[1].data_ptr<int64_t>();
  const int64_t* nv = ids[2].data_ptr<int64_t>();
  std::vector<int64_t> du, dv;
  for (int64_t a : at) {
    if (uv_id[a] >= 0) du.push_back(uv_id[a]);
    if (pv[a] >= 0) dv.push_back(pv[a]);
    if (nv[a] >= 0) dv.push_back(nv[a]);
  }
  std::vector<torch::Tensor> out;
  dg::graph(du, uv, out);
  dg::graph(dv, vv, out);
  return out;
}

// DG-ENN's linear attribute stage e W_0^T + sum_f R_f (T_f W_f^T) (W's column blocks W_f; embeddings/dg.py,
// _LinearAttributes) with the ATen operations the Python node runs, in the same order (so the same bits),
// without a Python call per operation: forward and backward. A field with an index (sels[f] non-empty: a
// one-hot R_f) is applied as a gather inside ordered_sum; otherwise R_f (CSR) by torch.sparse.mm's
// at::_sparse_mm.
torch::Tensor linear_attr_forward(torch::Tensor e, torch::Tensor weight, std::vector<torch::Tensor> tables,
                                  std::vector<torch::Tensor> sels, std::vector<torch::Tensor> mats) {
  TORCH_CHECK(tables.size() == sels.size() && tables.size() == mats.size(), "linear_attr_forward: one sel, one matrix per table");
  const auto w = weight.split(e.size(1), 1);
  TORCH_CHECK(w.size() == tables.size() + 1, "linear_attr_forward: weight has one block per table and one for e");
  torch::Tensor out = e.mm(w[0].t());
  std::vector<torch::Tensor> terms;
  for (size_t f = 0; f < tables.size(); ++f) {
    torch::Tensor p = tables[f].mm(w[f + 1].t());
    terms.push_back(sels[f].numel() ? p : at::_sparse_mm(mats[f], p));
  }
  return ordered_sum(out, terms, sels);
}

// (d a, d b) of a.mm(b) for the output gradient g, as autograd's MmBackward0 forms them (embeddings/dg.py, _mm_grads)
std::pair<torch::Tensor, torch::Tensor> mm_grads(const torch::Tensor& g, const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor ga = (a.stride(0) == 1 && a.stride(1) == a.size(0)) ? b.mm(g.t()).t() : g.mm(b.t());
  torch::Tensor gb = (b.stride(0) == 1 && b.stride(1) == b.size(0)) ? g.t().mm(a).t() : a.t().mm(g);
  return {ga, gb};
}

// {d e, d weight, d T_1, ...} (mats_t: the transposes R_f^T, CSR)
std::vector<torch::Tensor> linear_attr_backward(torch::Tensor g, torch::Tensor e, torch::Tensor weight,
                                                std::vector<torch::Tensor> tables, std::vector<torch::Tensor> mats_t) {
  TORCH_CHECK(tables.size() == mats_t.size(), "linear_attr_backward: one transposed matrix per table");
  const auto w = weight.split(e.size(1), 1);
  TORCH_CHECK(w.size() == tables.size() + 1, "linear_attr_backward: weight has one block per table and one for e");
  auto g0 = mm_grads(g, e, w[0].t());
  std::vector<torch::Tensor> gws{g0.second.t()}, out{g0.first, torch::Tensor()};
  for (size_t f = 0; f < tables.size(); ++f) {
    auto gf = mm_grads(at::_sparse_mm(mats_t[f], g), tables[f], w[f + 1].t());
    out.push_back(gf.first);
    gws.push_back(gf.second.t());
  }
  out[1] = at::cat(gws, 1);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_simd", [](bool on) { simd_enabled = on; }, "use the AVX-512 / AVX2 loops where the CPU has them");
  m.def("scaled_spmm", &scaled_spmm, "s * (A (s x) - dropped edges) for a 0/1 CSR structure A, and (add + that) [/ div]");
  m.def("ordered_sum", &ordered_sum, "base + term_1 + term_2 ... row by row; a term dense or gathered rows of a small table");
  m.def("dg_drops", &dg_drops, "DG-ENN's per-step dropped pairs and node scales of its uv and uu + vv graphs");
  m.def("linear_attr_forward", &linear_attr_forward, "DG-ENN's linear attribute stage, forward");
  m.def("linear_attr_backward", &linear_attr_backward, "DG-ENN's linear attribute stage, backward");
  m.def("lightgcn", &lightgcn, "LightGCN's layers of the scaled product and their sum (forward / backward)");
  m.def("lightgcn_parts", &lightgcn_parts, "lightgcn with one structure and drop list per product (sampled edge parts)");
}
