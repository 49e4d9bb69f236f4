// GraphFM's layer up to W_a (Eq. 7-12 of Wu et al., Graph Factorization Machines), fused per block of
// batch rows (ctrgraph.layers.graphfm_native). Paper configuration: NMF metric, top-m selection, p_ij
// on the message, softmax over the selected neighbours only (other switches stay in PyTorch).
//
// graphfm_forward(h [B, n, d], wc [k, d], bc [k], w2 [q], b2 [1], m, self_interaction, slope, interaction)
//   with k = q + H (rows 0..q-1: W1 of Eq. 7, rows q..q+H-1: a_h of Eq. 10; bc = b1 ‖ score bias):
//   for each of the T = n(n+1)/2 unordered pairs (i <= j, row-major)
//     z_t      = wc (h_i ⊙ h_j) + bc                      [k]   (one MKL GEMM per block of 16 rows)
//     P_ij     = sigmoid(w2 · ReLU(z_t[:q]) + b2)                 (Eq. 7, symmetric)
//     c^h_ij   = LeakyReLU_slope(z_t[q + h])                      (Eq. 10, symmetric)
//   N_i = the m candidates of row i with the largest P_ij (ties to the lower j, as a stable descending
//   sort; the diagonal is a candidate when self_interaction; Eq. 8-9), alpha^h_ij = softmax over
//   j in N_i of c^h_ij (Eq. 11), w^h_ij = alpha^h_ij P_ij on N_i and 0 elsewhere, and returns
//     x [B, n, H, d] = h_i ⊙ Σ_j w^h_ij h_j (interaction; else Σ_j w^h_ij h_j: ablation -I), the
//     input of Eq. 12's W^h_a; w [B, n, H, n], P [B, n, n], mask [B, n, n] (bool); and, for the
//     backward, Z [B, T, k] and alpha [B, n, H, n].
// graphfm_backward(gx, h, wc, w2, Z, P, alpha, w, slope, interaction) -> (gh, gwc, gbc, gw2, gb2):
//   the gradients of x (w, P and mask are not differentiated). It recomputes Σ_j w h_j and the pair
//   products; the parameter gradients are summed per block of rows (threads take whole blocks: no
//   shared accumulators) and the blocks' partial sums added at the end.
// The per-row sums over j (softmax, Σ_j w h_j, <gS, h_j>, gh_j) run over N_i only, in ascending j: the
// terms outside are exact zeros (alpha = w = 0), so skipping them keeps every value (m_2, m_3 < n: half
// and a quarter of the work). Dot products and weighted sums use 16-lane vectors (Lanes), the rank the
// 16 candidates at once.
// The block GEMMs call libtorch's BLAS (sgemm_ / dgemm_) directly (at::mm_out where the symbol is absent); Eq. 7's
// sigmoid and Eq. 11's exps run 16 float lanes at once (exp_lanes; double: std::exp).
// The float loops are compiled for AVX-512, AVX2 and the baseline (target_clones), picked at load time,
// so a cached build runs on any x86-64 CPU.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

// The BLAS that libtorch carries (MKL's Fortran symbols on x86-64 builds), called directly per block: at::addmm_out /
// mm_out / sum_out cost a dispatch, views and a broadcast copy of the bias per call, 64 blocks per layer and pass.
// Weak: where the library has no such symbol the blocks fall back to at::mm_out / addmm_.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace {

constexpr int64_t BLOCK = 16;  // batch rows per block: products [16 T, d] stay in L2

struct Pairs {
  std::vector<int64_t> iu, ju, tid;  // pair t = (iu[t], ju[t]), i <= j; tid[i n + j] = tid[j n + i] = t
};

Pairs make_pairs(int64_t n) {
  Pairs p;
  p.tid.assign(n * n, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      p.tid[i * n + j] = p.tid[j * n + i] = static_cast<int64_t>(p.iu.size());
      p.iu.push_back(i);
      p.ju.push_back(j);
    }
  return p;
}

template <typename scalar_t>
inline __attribute__((always_inline)) void pair_products(const scalar_t* hb, const Pairs& pr, int64_t d, scalar_t* out) {
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* a = hb + pr.iu[t] * d;
    const scalar_t* c = hb + pr.ju[t] * d;
    scalar_t* o = out + t * d;
    for (int64_t x = 0; x < d; ++x) o[x] = a[x] * c[x];
  }
}

// the scores of Eq. 10 before the activation, mirrored onto C [H, n, n]
template <typename scalar_t>
inline __attribute__((always_inline)) void mirror_scores(const scalar_t* z, const Pairs& pr, int64_t n, int64_t k, int64_t q, int64_t H, scalar_t* C) {
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t hh = 0; hh < H; ++hh) {
      const scalar_t v = z[t * k + q + hh];
      C[(hh * n + pr.iu[t]) * n + pr.ju[t]] = v;
      C[(hh * n + pr.ju[t]) * n + pr.iu[t]] = v;
    }
}

// 16 lanes of scalar_t in one vector value (a zmm register for float; GCC lowers it on narrower targets)
template <typename scalar_t>
struct Lanes {
  typedef scalar_t v16 __attribute__((vector_size(16 * sizeof(scalar_t))));
  typedef scalar_t v8 __attribute__((vector_size(8 * sizeof(scalar_t))));
  typedef scalar_t v4 __attribute__((vector_size(4 * sizeof(scalar_t))));
  typedef scalar_t v2 __attribute__((vector_size(2 * sizeof(scalar_t))));
  static inline __attribute__((always_inline)) v16 load(const scalar_t* p) {
    v16 v;
    std::memcpy(&v, p, sizeof(v16));
    return v;
  }
  static inline __attribute__((always_inline)) void store(scalar_t* p, v16 v) { std::memcpy(p, &v, sizeof(v16)); }
  static inline __attribute__((always_inline)) v16 load_tail(const scalar_t* p, int64_t len) {  // len <= 16, zeros after
    v16 v{};
    std::memcpy(&v, p, len * sizeof(scalar_t));
    return v;
  }
  // the pairwise sum of the lanes: lane l += lane l + w for w = 8, 4, 2, 1
  static inline __attribute__((always_inline)) scalar_t sum(v16 a) {
    const v8 b = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    const v4 c = __builtin_shufflevector(b, b, 0, 1, 2, 3) + __builtin_shufflevector(b, b, 4, 5, 6, 7);
    const v2 e = __builtin_shufflevector(c, c, 0, 1) + __builtin_shufflevector(c, c, 2, 3);
    return e[0] + e[1];
  }
};

// exp of 16 floats at once (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r, times 2^n):
// within an ulp or two of libm's expf; for x > 88.376 (libm: >= 2.4e38, inf from 88.723) inf, for x < -87.336
// (libm: subnormals) 0. In place over v[0..16) whatever len (the lanes past len are scratch: the caller's buffers
// hold 16 entries from v; full-vector loads, no tail copies); double: std::exp on v[0..len).
inline __attribute__((always_inline)) void exp_lanes(float* v, int64_t) {
  using L = Lanes<float>;
  typedef int32_t vi16 __attribute__((vector_size(64)));
  typename L::v16 x = L::load(v);
  const typename L::v16 hi = x > 88.3762626647949f ? std::numeric_limits<float>::infinity() : 1.0f;
  const typename L::v16 lo = x < -87.3365447504f ? 0.0f : 1.0f;
  x = x > 88.3762626647949f ? 0.0f : x;
  x = x < -87.3365447504f ? 0.0f : x;
  const typename L::v16 fx = x * 1.44269504088896341f;
  const vi16 n = __builtin_convertvector(fx + (fx < 0.0f ? -0.5f : 0.5f), vi16);  // round half away from 0
  const typename L::v16 nf = __builtin_convertvector(n, typename L::v16);
  const typename L::v16 r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  typename L::v16 y = r * 1.9875691500e-4f + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const vi16 bits = (n + 127) << 23;
  typename L::v16 p2;
  std::memcpy(&p2, &bits, sizeof(p2));
  L::store(v, y * p2 * hi * lo);
}
inline __attribute__((always_inline)) void exp_lanes(double* v, int64_t len) {
  for (int64_t t = 0; t < len; ++t) v[t] = std::exp(v[t]);
}

// <a, b> over d entries in 16 independent lanes (a vector register), then a pairwise sum of the lanes
// (a zero-padded tail adds exact zeros to the lanes it does not fill)
template <typename scalar_t>
inline __attribute__((always_inline)) scalar_t dot16(const scalar_t* a, const scalar_t* b, int64_t d) {
  using L = Lanes<scalar_t>;
  typename L::v16 acc{};
  int64_t c = 0;
  for (; c + 16 <= d; c += 16) acc += L::load(a + c) * L::load(b + c);
  if (c < d) acc += L::load_tail(a + c, d - c) * L::load_tail(b + c, d - c);
  return L::sum(acc);
}

// W2 · ReLU(z) over q entries, lanes as dot16
template <typename scalar_t>
inline __attribute__((always_inline)) scalar_t relu_dot16(const scalar_t* w2, const scalar_t* z, int64_t q) {
  using L = Lanes<scalar_t>;
  const typename L::v16 zero{};
  typename L::v16 acc{};
  int64_t c = 0;
  for (; c + 16 <= q; c += 16) {
    const typename L::v16 zc = L::load(z + c);
    acc += L::load(w2 + c) * (zc < zero ? zero : zc);  // std::max(z, 0)
  }
  if (c < q) {
    const typename L::v16 zc = L::load_tail(z + c, q - c);
    acc += L::load_tail(w2 + c, q - c) * (zc < zero ? zero : zc);
  }
  return L::sum(acc);
}

// out = Σ_{j in J} w_j h_j (in the order of J, from 0; the weights outside J are 0), times h_i where hi is given
template <typename scalar_t>
inline __attribute__((always_inline)) void weighted_sum(const scalar_t* hb, int64_t d, const int32_t* J, int64_t nj,
                                                        const scalar_t* w, const scalar_t* hi, scalar_t* out) {
  using L = Lanes<scalar_t>;
  int64_t c = 0;
  for (; c + 16 <= d; c += 16) {  // 16 columns in a register across all j
    typename L::v16 acc{};
    for (int64_t t = 0; t < nj; ++t) acc += w[J[t]] * L::load(hb + J[t] * d + c);
    L::store(out + c, hi ? acc * L::load(hi + c) : acc);
  }
  for (; c < d; ++c) {
    scalar_t acc = 0;
    for (int64_t t = 0; t < nj; ++t) acc += w[J[t]] * hb[J[t] * d + c];
    out[c] = hi ? acc * hi[c] : acc;
  }
}

// rank[j] = the place of p[j] (j < n <= 16) in a stable descending sort: #{l : p_l > p_j} + #{l < j : p_l = p_j},
// over 16 lanes of j at once (the lanes j >= n are never read back)
template <typename scalar_t>
inline __attribute__((always_inline)) void top_rank(const scalar_t* p, int64_t n, int32_t* rank) {
  scalar_t pj[16] = {};
  for (int64_t j = 0; j < n; ++j) pj[j] = p[j];
  int32_t rk[16] = {};
  for (int64_t l = 0; l < n; ++l) {
    const scalar_t v = p[l];
    for (int j = 0; j < 16; ++j) rk[j] += (v > pj[j]) | ((v == pj[j]) & (l < j));  // l ranks before j
  }
  for (int64_t j = 0; j < n; ++j) rank[j] = rk[j];
}

// J = the j with sel[j] (ascending); returns their count
template <typename T>
inline __attribute__((always_inline)) int64_t selected(const T* sel, int64_t n, int32_t* J) {
  int64_t nj = 0;
  for (int64_t j = 0; j < n; ++j)
    if (sel[j]) J[nj++] = static_cast<int32_t>(j);
  return nj;
}

// C [M, N] = op(A) op(B) + beta C (beta 0 or 1), row-major with leading dimensions lda, ldb, ldc; op = transpose
// where ta / tb. A row-major product is the column-major one of the transposes: C^T = op(B)^T op(A)^T.
template <typename scalar_t>
void gemm_rm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda, const scalar_t* B,
             int64_t ldb, scalar_t beta, scalar_t* C, int64_t ldc) {
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const char tra = tb ? 'T' : 'N', trb = ta ? 'T' : 'N';
  const scalar_t one = 1;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (sgemm_) return sgemm_(&tra, &trb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  } else {
    if (dgemm_) return dgemm_(&tra, &trb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  }
  const auto opt = torch::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  auto a = torch::from_blob(const_cast<scalar_t*>(A), {ta ? K : M, ta ? M : K}, {lda, 1}, opt);
  auto b = torch::from_blob(const_cast<scalar_t*>(B), {tb ? N : K, tb ? K : N}, {ldb, 1}, opt);
  auto c = torch::from_blob(C, {M, N}, {ldc, 1}, opt);
  if (beta == scalar_t(0))
    at::mm_out(c, ta ? a.t() : a, tb ? b.t() : b);
  else
    c.addmm_(ta ? a.t() : a, tb ? b.t() : b);
}

void check(const torch::Tensor& h, const torch::Tensor& wc, const torch::Tensor& w2) {
  TORCH_CHECK(h.dim() == 3 && wc.dim() == 2 && wc.size(1) == h.size(2) && w2.dim() == 1 &&
                  w2.size(0) < wc.size(0),
              "graphfm_edges: h [B, n, d], wc [q + H, d], w2 [q] expected");
  TORCH_CHECK(!h.is_cuda(), "graphfm_edges: CPU tensors only");
}

// Everything a block of rows needs; pointers are to the whole batch.
template <typename scalar_t>
struct Args {
  const Pairs* pr;
  int64_t n, d, k, q, H, T, m;
  bool self_interaction, keep_all, interaction;
  scalar_t slope, b2;
  const scalar_t *h, *w2;
  scalar_t *Z, *P, *alpha, *w, *x;
  bool* mask;
  // backward
  const scalar_t* gx;
  scalar_t *gh, *gz, *gw2;  // gz: this block's [BLOCK T, k]; gw2: this block's [q]
  scalar_t* gb2;            // this block's
  scalar_t* gprod;          // this block's [BLOCK T, d]
};

// Eq. 7-12 (before W_a) of rows b0..b1 once their Z rows are there
template <typename scalar_t>
inline __attribute__((always_inline)) void forward_rows(const Args<scalar_t>& a, int64_t b0, int64_t b1) {
  const int64_t n = a.n, d = a.d, k = a.k, q = a.q, H = a.H, T = a.T;
  const Pairs& pr = *a.pr;
  scalar_t Pt[256 + 16] = {}, C[4 * 256], Pl[16], e[16] = {};  // Pt, e: whole 16-lane vectors for exp_lanes
  int32_t rank[16], J[16];
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* z = a.Z + b * T * k;
    for (int64_t t = 0; t < T; ++t)  // Eq. 7: P_ij = sigmoid(W2 ReLU(W1 (h_i ⊙ h_j) + b1) + b2) = 1 / (1 + exp(-s))
      Pt[t] = -(a.b2 + relu_dot16(a.w2, z + t * k, q));
    for (int64_t t = 0; t < T; t += 16) exp_lanes(Pt + t, std::min<int64_t>(16, T - t));  // 16 at once
    for (int64_t t = 0; t < T; ++t) Pt[t] = scalar_t(1) / (scalar_t(1) + Pt[t]);
    scalar_t* Pb = a.P + b * n * n;
    bool* mb = a.mask + b * n * n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) Pb[i * n + j] = Pt[pr.tid[i * n + j]];
    mirror_scores(z, pr, n, k, q, H, C);
    for (int64_t i = 0; i < n; ++i) {  // Eq. 8-9: rank of each candidate in a stable descending sort
      for (int64_t j = 0; j < n; ++j) Pl[j] = Pb[i * n + j];
      if (!a.self_interaction) Pl[i] = scalar_t(-1);  // last (P > 0), never kept: m < n - 1 here
      if (!a.keep_all) top_rank(Pl, n, rank);
      for (int64_t j = 0; j < n; ++j) mb[i * n + j] = (a.keep_all || rank[j] < a.m) && (a.self_interaction || j != i);
    }
    const scalar_t* hb = a.h + b * n * d;
    for (int64_t i = 0; i < n; ++i) {  // Eq. 10-11 (LeakyReLU, softmax over N_i), w = alpha P on N_i, Eq. 12
      const int64_t nj = selected(mb + i * n, n, J);  // every sum below runs over N_i: the other terms are 0
      const scalar_t* Pi = Pb + i * n;
      for (int64_t hh = 0; hh < H; ++hh) {
        const scalar_t* cr = C + (hh * n + i) * n;
        const int64_t r = ((b * n + i) * H + hh) * n;
        scalar_t* al = a.alpha + r;
        scalar_t* wr = a.w + r;
        scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t t = 0; t < nj; ++t) {
          const scalar_t c = cr[J[t]];
          e[t] = c > 0 ? c : c * a.slope;
          mx = std::max(mx, e[t]);
        }
        for (int64_t t = 0; t < nj; ++t) e[t] -= mx;
        exp_lanes(e, nj);  // nj <= 16: one vector
        scalar_t sum = 0;
        for (int64_t t = 0; t < nj; ++t) sum += e[t];
        for (int64_t j = 0; j < n; ++j) al[j] = wr[j] = 0;
        for (int64_t t = 0; t < nj; ++t) {
          al[J[t]] = e[t] / sum;
          wr[J[t]] = al[J[t]] * Pi[J[t]];
        }
        // x_ih = h_i ⊙ Σ_j w_ij h_j ("interaction", Eq. 12 before W_a) or Σ_j w_ij h_j ("feature")
        weighted_sum(hb, d, J, nj, wr, a.interaction ? hb + i * d : nullptr, a.x + ((b * n + i) * H + hh) * d);
      }
    }
  }
}

// the backward of rows b0..b1 (block-relative b - b0 in gz) up to the gradient of Z: Eq. 12 -> 7
template <typename scalar_t>
inline __attribute__((always_inline)) void backward_rows(const Args<scalar_t>& a, int64_t b0, int64_t b1) {
  const int64_t n = a.n, d = a.d, k = a.k, q = a.q, H = a.H, T = a.T;
  const Pairs& pr = *a.pr;
  scalar_t gc[4 * 256], gP[256], gw[16], S[512], gS[512];
  int32_t J[16];
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* z = a.Z + b * T * k;
    const scalar_t* Pb = a.P + b * n * n;
    const scalar_t* hb = a.h + b * n * d;
    scalar_t* ghb = a.gh + b * n * d;
    // Z is read at the selected pairs below (scattered over the row): fetch this row's (on the first) and the next's
    constexpr int64_t line = 64 / sizeof(scalar_t);
    if (b == b0)
      for (int64_t o = 0; o < T * k; o += line) __builtin_prefetch(z + o);
    if (b + 1 < b1)
      for (int64_t o = 0; o < T * k; o += line) __builtin_prefetch(z + T * k + o);
    std::memset(ghb, 0, n * d * sizeof(scalar_t));
    for (int64_t t = 0; t < n * n; ++t) gP[t] = 0;
    for (int64_t t = 0; t < H * n * n; ++t) gc[t] = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t r = ((b * n + i) * H + hh) * n;
        const scalar_t* wr = a.w + r;
        const scalar_t* al = a.alpha + r;
        const int64_t nj = selected(al, n, J);  // alpha = w = 0 outside: their terms are 0, skipped
        const scalar_t* gxr = a.gx + ((b * n + i) * H + hh) * d;
        const scalar_t* hi = hb + i * d;
        // aggregation: S = Σ_j w_ij h_j (recomputed), gS = gx ⊙ h_i, gh_i += gx ⊙ S, gw_ij = <gS, h_j>
        if (a.interaction) {
          weighted_sum(hb, d, J, nj, wr, static_cast<const scalar_t*>(nullptr), S);
          for (int64_t c = 0; c < d; ++c) {
            gS[c] = gxr[c] * hi[c];
            ghb[i * d + c] += gxr[c] * S[c];
          }
        } else {
          for (int64_t c = 0; c < d; ++c) gS[c] = gxr[c];
        }
        for (int64_t t = 0; t < nj; ++t) {
          const int64_t j = J[t];
          scalar_t* ghj = ghb + j * d;
          gw[t] = dot16(gS, hb + j * d, d);
          const scalar_t wj = wr[j];
          for (int64_t c = 0; c < d; ++c) ghj[c] += wj * gS[c];
        }
        const scalar_t* Pi = Pb + i * n;
        scalar_t* gcr = gc + (i * H + hh) * n;
        scalar_t dot = 0;  // softmax backward: alpha (g' - <g', alpha>), g' = gw P (Eq. 11-12)
        for (int64_t t = 0; t < nj; ++t) dot += gw[t] * Pi[J[t]] * al[J[t]];
        for (int64_t t = 0; t < nj; ++t) {
          const int64_t j = J[t];
          const scalar_t v = al[j] * (gw[t] * Pi[j] - dot);
          gcr[j] = z[pr.tid[i * n + j] * k + q + hh] > 0 ? v : v * a.slope;  // LeakyReLU' (Eq. 10)
          gP[i * n + j] += gw[t] * al[j];
        }
      }
    scalar_t* gzb = a.gz + (b - b0) * T * k;
    for (int64_t t = 0; t < T; ++t) {  // symmetric pairs: both directions
      const int64_t i = pr.iu[t], j = pr.ju[t];
      scalar_t gPt = gP[i * n + j];
      if (i != j) gPt += gP[j * n + i];
      const scalar_t Pv = Pb[i * n + j];
      const scalar_t gs = gPt * (scalar_t(1) - Pv) * Pv;  // sigmoid' (Eq. 7)
      *a.gb2 += gs;
      const scalar_t* __restrict zt = z + t * k;
      const scalar_t* __restrict w2 = a.w2;
      scalar_t* __restrict gw2 = a.gw2;
      scalar_t* __restrict gt = gzb + t * k;
      for (int64_t c = 0; c < q; ++c) {  // ReLU' of the metric's hidden layer
        const bool on = zt[c] > 0;
        gw2[c] += gs * (on ? zt[c] : scalar_t(0));
        gt[c] = on ? gs * w2[c] : scalar_t(0);
      }
      for (int64_t hh = 0; hh < H; ++hh) {
        scalar_t v = gc[(i * H + hh) * n + j];
        if (i != j) v += gc[(j * H + hh) * n + i];
        gt[q + hh] = v;
      }
    }
  }
}

// gh += d(h_i ⊙ h_j)/dh of the products' gradient gprod, rows b0..b1
template <typename scalar_t>
inline __attribute__((always_inline)) void product_grad_rows(const Args<scalar_t>& a, int64_t b0, int64_t b1) {
  const int64_t n = a.n, d = a.d, T = a.T;
  const Pairs& pr = *a.pr;
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* hb = a.h + b * n * d;
    scalar_t* ghb = a.gh + b * n * d;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = pr.iu[t], j = pr.ju[t];
      const scalar_t* g = a.gprod + ((b - b0) * T + t) * d;
      scalar_t* gi = ghb + i * d;
      scalar_t* gj = ghb + j * d;
      const scalar_t* hi = hb + i * d;
      const scalar_t* hj = hb + j * d;
      for (int64_t c = 0; c < d; ++c) gi[c] += g[c] * hj[c];
      for (int64_t c = 0; c < d; ++c) gj[c] += g[c] * hi[c];
    }
  }
}

// float: compiled for AVX-512, AVX2 and the baseline, picked at load time (a cached build runs on any x86-64)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GFM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GFM_CLONES
#endif
GFM_CLONES void forward_f(const Args<float>& a, int64_t b0, int64_t b1) { forward_rows<float>(a, b0, b1); }
GFM_CLONES void backward_f(const Args<float>& a, int64_t b0, int64_t b1) { backward_rows<float>(a, b0, b1); }
GFM_CLONES void product_grad_f(const Args<float>& a, int64_t b0, int64_t b1) { product_grad_rows<float>(a, b0, b1); }
GFM_CLONES void products_f(const float* h, const Pairs& pr, int64_t n, int64_t d, int64_t b0, int64_t b1, float* out) {
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  for (int64_t b = b0; b < b1; ++b) pair_products(h + b * n * d, pr, d, out + (b - b0) * T * d);
}
void forward_f(const Args<double>& a, int64_t b0, int64_t b1) { forward_rows<double>(a, b0, b1); }
void backward_f(const Args<double>& a, int64_t b0, int64_t b1) { backward_rows<double>(a, b0, b1); }
void product_grad_f(const Args<double>& a, int64_t b0, int64_t b1) { product_grad_rows<double>(a, b0, b1); }
void products_f(const double* h, const Pairs& pr, int64_t n, int64_t d, int64_t b0, int64_t b1, double* out) {
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  for (int64_t b = b0; b < b1; ++b) pair_products(h + b * n * d, pr, d, out + (b - b0) * T * d);
}

std::vector<torch::Tensor> graphfm_forward(torch::Tensor h, torch::Tensor wc, torch::Tensor bc, torch::Tensor w2,
                                           torch::Tensor b2, int64_t m, bool self_interaction, double slope,
                                           bool interaction) {
  check(h, wc, w2);
  h = h.contiguous();
  wc = wc.contiguous().to(h.scalar_type());
  bc = bc.contiguous().to(h.scalar_type());
  w2 = w2.contiguous().to(h.scalar_type());
  b2 = b2.contiguous().to(h.scalar_type());
  const int64_t B = h.size(0), n = h.size(1), d = h.size(2), k = wc.size(0), q = w2.size(0), H = k - q;
  TORCH_CHECK(n <= 16 && H <= 4 && d <= 512, "graphfm_forward: at most 16 fields, 4 heads and width 512");
  const Pairs pr = make_pairs(n);
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  auto Z = torch::empty({B, T, k}, h.options());
  auto P = torch::empty({B, n, n}, h.options());
  auto alpha = torch::empty({B, n, H, n}, h.options());
  auto w = torch::empty({B, n, H, n}, h.options());
  auto x = torch::empty({B, n, H, d}, h.options());
  auto mask = torch::empty({B, n, n}, h.options().dtype(torch::kBool));
  const int64_t nblocks = (B + BLOCK - 1) / BLOCK;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "graphfm_forward", [&] {
    Args<scalar_t> a{};
    a.pr = &pr;
    a.n = n, a.d = d, a.k = k, a.q = q, a.H = H, a.T = T, a.m = m;
    a.self_interaction = self_interaction, a.keep_all = m >= (self_interaction ? n : n - 1);
    a.interaction = interaction;
    a.slope = static_cast<scalar_t>(slope), a.b2 = b2.data_ptr<scalar_t>()[0];
    a.h = h.data_ptr<scalar_t>(), a.w2 = w2.data_ptr<scalar_t>();
    a.Z = Z.data_ptr<scalar_t>(), a.P = P.data_ptr<scalar_t>(), a.alpha = alpha.data_ptr<scalar_t>();
    a.w = w.data_ptr<scalar_t>(), a.x = x.data_ptr<scalar_t>(), a.mask = mask.data_ptr<bool>();
    const scalar_t* wcp = wc.data_ptr<scalar_t>();
    const scalar_t* bcp = bc.data_ptr<scalar_t>();
    at::parallel_for(0, nblocks, 1, [&](int64_t blk0, int64_t blk1) {
      std::vector<scalar_t> prod(BLOCK * T * d);
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t b0 = blk * BLOCK, bs = std::min(BLOCK, B - b0);
        products_f(a.h, pr, n, d, b0, b0 + bs, prod.data());
        // Eq. 7's W1 and Eq. 10's a_h on all pairs: Z = bc + prod wc^T (the bias rows first, as addmm does)
        scalar_t* zb = a.Z + b0 * T * k;
        for (int64_t r = 0; r < bs * T; ++r) std::memcpy(zb + r * k, bcp, k * sizeof(scalar_t));
        gemm_rm<scalar_t>(false, true, bs * T, k, d, prod.data(), d, wcp, d, scalar_t(1), zb, k);
        forward_f(a, b0, b0 + bs);
      }
    });
  });
  return {x, w, P, mask, Z, alpha};
}

std::vector<torch::Tensor> graphfm_backward(torch::Tensor gx, torch::Tensor h, torch::Tensor wc, torch::Tensor w2,
                                            torch::Tensor Z, torch::Tensor P, torch::Tensor alpha, torch::Tensor w,
                                            double slope, bool interaction) {
  check(h, wc, w2);
  h = h.contiguous();
  gx = gx.contiguous().to(h.scalar_type());
  wc = wc.contiguous().to(h.scalar_type());
  w2 = w2.contiguous().to(h.scalar_type());
  const int64_t B = h.size(0), n = h.size(1), d = h.size(2), k = wc.size(0), q = w2.size(0), H = k - q;
  const Pairs pr = make_pairs(n);
  const int64_t T = static_cast<int64_t>(pr.iu.size());
  TORCH_CHECK(Z.sizes() == torch::IntArrayRef({B, T, k}) && gx.sizes() == torch::IntArrayRef({B, n, H, d}) &&
                  w.sizes() == alpha.sizes(),
              "graphfm_backward: saved tensors do not match");
  const int64_t nblocks = (B + BLOCK - 1) / BLOCK;
  auto gh = torch::empty_like(h);  // each row zeroed where its backward starts (in cache, not a separate pass)
  auto gwc_part = torch::empty({nblocks, k, d}, h.options());
  auto gbc_part = torch::empty({nblocks, k}, h.options());
  auto gw2_part = torch::zeros({nblocks, q}, h.options());
  auto gb2_part = torch::zeros({nblocks}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "graphfm_backward", [&] {
    Args<scalar_t> a0{};
    a0.pr = &pr;
    a0.n = n, a0.d = d, a0.k = k, a0.q = q, a0.H = H, a0.T = T;
    a0.interaction = interaction;
    a0.slope = static_cast<scalar_t>(slope);
    a0.h = h.data_ptr<scalar_t>(), a0.w2 = w2.data_ptr<scalar_t>();
    a0.Z = Z.data_ptr<scalar_t>(), a0.P = P.data_ptr<scalar_t>(), a0.alpha = alpha.data_ptr<scalar_t>();
    a0.w = w.data_ptr<scalar_t>(), a0.gx = gx.data_ptr<scalar_t>(), a0.gh = gh.data_ptr<scalar_t>();
    const scalar_t* wcp = wc.data_ptr<scalar_t>();
    at::parallel_for(0, nblocks, 1, [&](int64_t blk0, int64_t blk1) {
      std::vector<scalar_t> prod(BLOCK * T * d), gprod(BLOCK * T * d), gz(BLOCK * T * k);
      Args<scalar_t> a = a0;
      a.gz = gz.data(), a.gprod = gprod.data();
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t b0 = blk * BLOCK, bs = std::min(BLOCK, B - b0), M = bs * T;
        a.gw2 = gw2_part.data_ptr<scalar_t>() + blk * q;
        a.gb2 = gb2_part.data_ptr<scalar_t>() + blk;
        backward_f(a, b0, b0 + bs);
        products_f(a.h, pr, n, d, b0, b0 + bs, prod.data());
        // this block's gwc = gz^T prod, gbc = the column sums of gz, gprod = gz wc
        gemm_rm<scalar_t>(true, false, k, d, M, gz.data(), k, prod.data(), d, scalar_t(0),
                          gwc_part.data_ptr<scalar_t>() + blk * k * d, d);
        scalar_t* gbcb = gbc_part.data_ptr<scalar_t>() + blk * k;
        for (int64_t c = 0; c < k; ++c) gbcb[c] = 0;
        for (int64_t r = 0; r < M; ++r)
          for (int64_t c = 0; c < k; ++c) gbcb[c] += gz[r * k + c];
        gemm_rm<scalar_t>(false, false, M, d, k, gz.data(), k, wcp, d, scalar_t(0), gprod.data(), d);
        product_grad_f(a, b0, b0 + bs);
      }
    });
  });
  return {gh, gwc_part.sum(0), gbc_part.sum(0), gw2_part.sum(0), gb2_part.sum(0, true)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("graphfm_forward", &graphfm_forward, "GraphFM Eq. 7-12 before W_a: x [B, n, H, d] (and w, P, mask)");
  m.def("graphfm_backward", &graphfm_backward, "gradients of graphfm_forward's x");
}
