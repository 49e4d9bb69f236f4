// The product of DG-ENN's per-step normalised adjacency with a dense matrix, CPU
// (ctrgraph.graphs.native.scaled_spmm; ctrgraph.graphs.ScaledAdjacency):
//
//   y[r, :] = s[r] * ( sum_{e in row r} s[col[e]] * x[col[e], :]  (+ the dropped-edge correction) )
//
// for a fixed 0/1 CSR structure A (rowptr, col: int32 or int64; no values are read: every stored
// entry is 1) and per-node scales s. The dropped edges (tgt[k], src[k]) are subtracted after the row
// sums, in one of the two orders of the PyTorch composition it replaces:
//
//   mode 0 (forward):  y[t] = (...((acc[t] + (-v1)) + (-v2)) ...)         (index_add of -v, in list order)
//   mode 1 (backward): y[t] = acc[t] + (((0 + (-v1)) + (-v2)) ...)        (a zero tensor's index_add, then add)
//
// with v = s[src] * x[src, :], then the row scale s[t]. Each row's sum runs over its entries in order,
// one rounded product s[c] * x[c, k] added at a time (no FMA: this file is compiled with
// -ffp-contract=off and without reassociation), the order of a sequential CSR product; the AVX-512 /
// AVX2 loops (chosen at run time) and the portable loop give the same bits.
//
// Optional epilogue (the layer sums of LightGCN, Eq. 13, fused): z[r] = (add[r] + y[r]) [/ div].
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

bool simd_enabled = true;  // set_simd(false): the portable loop only (tests compare the two)


template <typename scalar_t>
struct Epi {  // z[r] = (add[r] + y[r]) [/ div]; add == nullptr: none
  const scalar_t* add = nullptr;
  scalar_t* z = nullptr;
  scalar_t div = scalar_t(0);
  bool has_div = false;
  inline void row(int64_t r, const scalar_t* yr, int64_t d) const {
    const scalar_t* ar = add + r * d;
    scalar_t* zr = z + r * d;
    for (int64_t k = 0; k < d; ++k) {
      const scalar_t t = ar[k] + yr[k];
      zr[k] = has_div ? t / div : t;
    }
  }
};

template <typename scalar_t, typename index_t>
inline void rows_any(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                     const scalar_t* __restrict__ s, const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                     const uint8_t* __restrict__ deferred, const Epi<scalar_t>& ep, int64_t d, int64_t lo,
                     int64_t hi) {
  std::vector<scalar_t> acc(d);
  for (int64_t r = lo; r < hi; ++r) {
    for (int64_t k = 0; k < d; ++k) acc[k] = scalar_t(0);
    for (int64_t j = rowptr[r]; j < rowptr[r + 1]; ++j) {
      const int64_t c = col[j];
      const scalar_t sc = s[c];
      const scalar_t* xc = x + c * d;
      for (int64_t k = 0; k < d; ++k) {
        const scalar_t t = sc * xc[k];
        acc[k] = acc[k] + t;
      }
    }
    scalar_t* yr = y + r * d;
    const bool defer = deferred != nullptr && deferred[r];
    const scalar_t sr = s[r];
    for (int64_t k = 0; k < d; ++k) yr[k] = defer ? acc[k] : acc[k] * sr;
    if (ep.add != nullptr && !defer) ep.row(r, yr, d);
  }
}

// float rows of 16 / 32 / 64 values (one to four 512-bit registers): explicit multiply, then add
// (the rounding of the scalar loop above, lane by lane; no FMA), for CPUs with AVX-512F, chosen at
// run time (the extension is compiled without -march flags, so its cached build runs anywhere)
template <typename index_t, int V>
__attribute__((target("avx512f"))) void rows_avx512(const index_t* __restrict__ rowptr,
                                                    const index_t* __restrict__ col, const float* __restrict__ s,
                                                    const float* __restrict__ x, float* __restrict__ y,
                                                    const uint8_t* __restrict__ deferred, const Epi<float>& ep,
                                                    int64_t lo, int64_t hi) {
  constexpr int D = 16 * V;
  const __m512 dv = _mm512_set1_ps(ep.div);
  for (int64_t r = lo; r < hi; ++r) {
    __m512 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = _mm512_setzero_ps();
    const int64_t b = rowptr[r], e = rowptr[r + 1];
    for (int64_t j = b; j < e; ++j) {
      const int64_t c = col[j];
      const __m512 sc = _mm512_set1_ps(s[c]);
      const float* xc = x + c * D;
      for (int v = 0; v < V; ++v) acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(sc, _mm512_loadu_ps(xc + 16 * v)));
    }
    float* yr = y + r * D;
    if (deferred != nullptr && deferred[r]) {
      for (int v = 0; v < V; ++v) _mm512_storeu_ps(yr + 16 * v, acc[v]);
    } else {
      const __m512 sr = _mm512_set1_ps(s[r]);
      for (int v = 0; v < V; ++v) {
        const __m512 o = _mm512_mul_ps(acc[v], sr);
        _mm512_storeu_ps(yr + 16 * v, o);
        if (ep.add != nullptr) {
          const __m512 t = _mm512_add_ps(_mm512_loadu_ps(ep.add + r * D + 16 * v), o);
          _mm512_storeu_ps(ep.z + r * D + 16 * v, ep.has_div ? _mm512_div_ps(t, dv) : t);
        }
      }
    }
  }
}

// the same with 256-bit registers (AVX2 CPUs), rows of 8 / 16 / 32 / 64 floats
template <typename index_t, int V>
__attribute__((target("avx2"))) void rows_avx2(const index_t* __restrict__ rowptr, const index_t* __restrict__ col,
                                               const float* __restrict__ s, const float* __restrict__ x,
                                               float* __restrict__ y, const uint8_t* __restrict__ deferred,
                                               const Epi<float>& ep, int64_t lo, int64_t hi) {
  constexpr int D = 8 * V;
  const __m256 dv = _mm256_set1_ps(ep.div);
  for (int64_t r = lo; r < hi; ++r) {
    __m256 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = _mm256_setzero_ps();
    const int64_t b = rowptr[r], e = rowptr[r + 1];
    for (int64_t j = b; j < e; ++j) {
      const int64_t c = col[j];
      const __m256 sc = _mm256_set1_ps(s[c]);
      const float* xc = x + c * D;
      for (int v = 0; v < V; ++v) acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(sc, _mm256_loadu_ps(xc + 8 * v)));
    }
    float* yr = y + r * D;
    if (deferred != nullptr && deferred[r]) {
      for (int v = 0; v < V; ++v) _mm256_storeu_ps(yr + 8 * v, acc[v]);
    } else {
      const __m256 sr = _mm256_set1_ps(s[r]);
      for (int v = 0; v < V; ++v) {
        const __m256 o = _mm256_mul_ps(acc[v], sr);
        _mm256_storeu_ps(yr + 8 * v, o);
        if (ep.add != nullptr) {
          const __m256 t = _mm256_add_ps(_mm256_loadu_ps(ep.add + r * D + 8 * v), o);
          _mm256_storeu_ps(ep.z + r * D + 8 * v, ep.has_div ? _mm256_div_ps(t, dv) : t);
        }
      }
    }
  }
}

template <typename index_t>
bool rows_simd(const index_t* rowptr, const index_t* col, const float* s, const float* x, float* y,
               const uint8_t* deferred, const Epi<float>& ep, int64_t d, int64_t lo, int64_t hi) {
  static const bool avx512 = __builtin_cpu_supports("avx512f"), avx2 = __builtin_cpu_supports("avx2");
  if (avx512) {
    switch (d) {
      case 16: rows_avx512<index_t, 1>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
      case 32: rows_avx512<index_t, 2>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
      case 64: rows_avx512<index_t, 4>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
    }
  }
  if (avx2) {
    switch (d) {
      case 8: rows_avx2<index_t, 1>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
      case 16: rows_avx2<index_t, 2>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
      case 32: rows_avx2<index_t, 4>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
      case 64: rows_avx2<index_t, 8>(rowptr, col, s, x, y, deferred, ep, lo, hi); return true;
    }
  }
  return false;
}

template <typename scalar_t, typename index_t>
void run_rows(const index_t* rowptr, const index_t* col, const scalar_t* s, const scalar_t* x, scalar_t* y,
              const uint8_t* deferred, const Epi<scalar_t>& ep, int64_t n, int64_t d) {
  at::parallel_for(0, n, 512, [&](int64_t lo, int64_t hi) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (simd_enabled && rows_simd<index_t>(rowptr, col, s, x, y, deferred, ep, d, lo, hi)) return;
    }
    rows_any<scalar_t, index_t>(rowptr, col, s, x, y, deferred, ep, d, lo, hi);
  });
}

template <typename scalar_t, typename index_t>
void scaled_impl(const torch::Tensor& rowptr, const torch::Tensor& col, const torch::Tensor& s,
                 const torch::Tensor& x, torch::Tensor& y, const torch::Tensor& tgt, const torch::Tensor& src,
                 int64_t mode, const torch::Tensor& add, torch::Tensor& z, double div) {
  const int64_t n = x.size(0), d = x.size(1), K = tgt.numel();
  const scalar_t* sp = s.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* yp = y.data_ptr<scalar_t>();
  const int64_t* tp = tgt.data_ptr<int64_t>();
  const int64_t* srp = src.data_ptr<int64_t>();
  Epi<scalar_t> ep;
  if (add.numel()) {
    ep.add = add.data_ptr<scalar_t>();
    ep.z = z.data_ptr<scalar_t>();
    ep.has_div = div != 0.0;
    ep.div = static_cast<scalar_t>(div);
  }
  std::vector<uint8_t> deferred;
  std::vector<int64_t> rows;  // the distinct targets, in order of first appearance
  std::vector<int32_t> slot;
  if (K) {
    deferred.assign(n, 0);
    slot.assign(n, -1);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t t = tp[k];
      TORCH_CHECK(t >= 0 && t < n && srp[k] >= 0 && srp[k] < n, "scaled_spmm: dropped edge out of range");
      if (!deferred[t]) {
        deferred[t] = 1;
        slot[t] = static_cast<int32_t>(rows.size());
        rows.push_back(t);
      }
    }
  }
  run_rows<scalar_t, index_t>(rowptr.data_ptr<index_t>(), col.data_ptr<index_t>(), sp, xp, yp,
                              K ? deferred.data() : nullptr, ep, n, d);
  if (!K) return;
  if (mode == 0) {
    for (int64_t k = 0; k < K; ++k) {
      scalar_t* yt = yp + tp[k] * d;
      const int64_t c = srp[k];
      const scalar_t sc = sp[c];
      for (int64_t j = 0; j < d; ++j) {
        const scalar_t v = sc * xp[c * d + j];
        yt[j] = yt[j] + (-v);
      }
    }
  } else {
    std::vector<scalar_t> tmp(rows.size() * d, scalar_t(0));
    for (int64_t k = 0; k < K; ++k) {
      scalar_t* tt = tmp.data() + static_cast<int64_t>(slot[tp[k]]) * d;
      const int64_t c = srp[k];
      const scalar_t sc = sp[c];
      for (int64_t j = 0; j < d; ++j) {
        const scalar_t v = sc * xp[c * d + j];
        tt[j] = tt[j] + (-v);
      }
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      scalar_t* yt = yp + rows[i] * d;
      const scalar_t* tt = tmp.data() + static_cast<int64_t>(i) * d;
      for (int64_t j = 0; j < d; ++j) yt[j] = yt[j] + tt[j];
    }
  }
  for (int64_t t : rows) {
    scalar_t* yt = yp + t * d;
    const scalar_t st = sp[t];
    for (int64_t j = 0; j < d; ++j) yt[j] = yt[j] * st;
    if (ep.add != nullptr) ep.row(t, yt, d);
  }
}

std::vector<torch::Tensor> scaled_spmm(torch::Tensor rowptr, torch::Tensor col, torch::Tensor s, torch::Tensor x,
                                       torch::Tensor tgt, torch::Tensor src, int64_t mode, torch::Tensor add,
                                       double div) {
  TORCH_CHECK(!x.is_cuda(), "scaled_spmm native kernel: CPU tensors only");
  TORCH_CHECK(x.dim() == 2 && s.dim() == 1 && s.size(0) == x.size(0) && rowptr.size(0) == x.size(0) + 1,
              "scaled_spmm: shapes do not agree");
  TORCH_CHECK(rowptr.scalar_type() == col.scalar_type(), "scaled_spmm: rowptr and col must share a dtype");
  TORCH_CHECK(s.scalar_type() == x.scalar_type(), "scaled_spmm: s and x must share a dtype");
  TORCH_CHECK(mode == 0 || mode == 1, "scaled_spmm: mode must be 0 or 1");
  x = x.contiguous(); s = s.contiguous(); rowptr = rowptr.contiguous(); col = col.contiguous();
  tgt = tgt.to(torch::kInt64).contiguous(); src = src.to(torch::kInt64).contiguous();
  TORCH_CHECK(tgt.numel() == src.numel(), "scaled_spmm: dropped-edge lists differ in length");
  if (add.numel()) {
    TORCH_CHECK(add.sizes() == x.sizes() && add.scalar_type() == x.scalar_type(), "scaled_spmm: add must match x");
    add = add.contiguous();
  }
  auto y = torch::empty_like(x);
  auto z = add.numel() ? torch::empty_like(x) : torch::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "scaled_spmm", [&] {
    if (rowptr.scalar_type() == torch::kInt32) {
      scaled_impl<scalar_t, int32_t>(rowptr, col, s, x, y, tgt, src, mode, add, z, div);
    } else {
      TORCH_CHECK(rowptr.scalar_type() == torch::kInt64, "scaled_spmm: int32 or int64 indices");
      scaled_impl<scalar_t, int64_t>(rowptr, col, s, x, y, tgt, src, mode, add, z, div);
    }
  });
  return {y, z};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_simd", [](bool on) { simd_enabled = on; }, "use the AVX-512 / AVX2 loops where the CPU has them");
  m.def("scaled_spmm", &scaled_spmm, "s * (A (s x) - dropped edges) for a 0/1 CSR structure A, and (add + that) [/ div]");
}
