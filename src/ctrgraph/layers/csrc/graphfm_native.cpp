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
// The float loops are compiled for AVX-512, AVX2 and the baseline (target_clones), picked at load time,
// so a cached build runs on any x86-64 CPU.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

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

// <a, b> over d entries in 16 independent lanes (a vector register), then a pairwise sum of the lanes
template <typename scalar_t>
inline __attribute__((always_inline)) scalar_t dot16(const scalar_t* a, const scalar_t* b, int64_t d) {
  scalar_t acc[16] = {};
  int64_t c = 0;
  for (; c + 16 <= d; c += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[c + l] * b[c + l];
  for (int l = 0; c < d; ++c, ++l) acc[l] += a[c] * b[c];
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// W2 · ReLU(z) over q entries, lanes as dot16
template <typename scalar_t>
inline __attribute__((always_inline)) scalar_t relu_dot16(const scalar_t* w2, const scalar_t* z, int64_t q) {
  scalar_t acc[16] = {};
  int64_t c = 0;
  for (; c + 16 <= q; c += 16)
    for (int l = 0; l < 16; ++l) acc[l] += w2[c + l] * std::max(z[c + l], scalar_t(0));
  for (int l = 0; c < q; ++c, ++l) acc[l] += w2[c] * std::max(z[c], scalar_t(0));
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
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
  scalar_t Pt[256], C[4 * 256], Pl[16], e[16];
  int32_t rank[16];
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* z = a.Z + b * T * k;
    for (int64_t t = 0; t < T; ++t) {  // Eq. 7: P_ij = sigmoid(W2 ReLU(W1 (h_i ⊙ h_j) + b1) + b2)
      const scalar_t s = a.b2 + relu_dot16(a.w2, z + t * k, q);
      Pt[t] = scalar_t(1) / (scalar_t(1) + std::exp(-s));
    }
    scalar_t* Pb = a.P + b * n * n;
    bool* mb = a.mask + b * n * n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) Pb[i * n + j] = Pt[pr.tid[i * n + j]];
    mirror_scores(z, pr, n, k, q, H, C);
    for (int64_t i = 0; i < n; ++i) {  // Eq. 8-9: rank of each candidate in a stable descending sort
      for (int64_t j = 0; j < n; ++j) Pl[j] = Pb[i * n + j];
      if (!a.self_interaction) Pl[i] = scalar_t(-1);  // last (P > 0), never kept: m < n - 1 here
      for (int64_t j = 0; j < n; ++j) rank[j] = 0;
      if (!a.keep_all)
        for (int64_t l = 0; l < n; ++l) {
          const scalar_t v = Pl[l];
          for (int64_t j = 0; j < l; ++j) rank[j] += v > Pl[j];  // l after j: only a larger value ranks first
          for (int64_t j = l + 1; j < n; ++j) rank[j] += v >= Pl[j];  // l before j: ties too
        }
      for (int64_t j = 0; j < n; ++j) mb[i * n + j] = rank[j] < a.m && (a.self_interaction || j != i);
    }
    const scalar_t* hb = a.h + b * n * d;
    for (int64_t i = 0; i < n; ++i)  // Eq. 10-11 (LeakyReLU, softmax over N_i), w = alpha P on N_i, Eq. 12
      for (int64_t hh = 0; hh < H; ++hh) {
        const scalar_t* cr = C + (hh * n + i) * n;
        const bool* mr = mb + i * n;
        scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t v = cr[j] > 0 ? cr[j] : cr[j] * a.slope;
          e[j] = mr[j] ? v : -std::numeric_limits<scalar_t>::infinity();
          mx = std::max(mx, e[j]);
        }
        scalar_t sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          e[j] = std::exp(e[j] - mx);  // exp(-inf) = 0 outside N_i
          sum += e[j];
        }
        const int64_t r = ((b * n + i) * H + hh) * n;
        const scalar_t* Pi = Pb + i * n;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t al = e[j] / sum;
          a.alpha[r + j] = al;
          a.w[r + j] = al * Pi[j];
        }
        // x_ih = h_i ⊙ Σ_j w_ij h_j ("interaction", Eq. 12 before W_a) or Σ_j w_ij h_j ("feature")
        scalar_t* xr = a.x + ((b * n + i) * H + hh) * d;
        for (int64_t c = 0; c < d; ++c) xr[c] = 0;
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t wj = a.w[r + j];
          const scalar_t* hj = hb + j * d;
          for (int64_t c = 0; c < d; ++c) xr[c] += wj * hj[c];
        }
        if (a.interaction) {
          const scalar_t* hi = hb + i * d;
          for (int64_t c = 0; c < d; ++c) xr[c] *= hi[c];
        }
      }
  }
}

// the backward of rows b0..b1 (block-relative b - b0 in gz) up to the gradient of Z: Eq. 12 -> 7
template <typename scalar_t>
inline __attribute__((always_inline)) void backward_rows(const Args<scalar_t>& a, int64_t b0, int64_t b1) {
  const int64_t n = a.n, d = a.d, k = a.k, q = a.q, H = a.H, T = a.T;
  const Pairs& pr = *a.pr;
  scalar_t C[4 * 256], gc[4 * 256], gP[256], gw[16], S[512], gS[512];
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* z = a.Z + b * T * k;
    const scalar_t* Pb = a.P + b * n * n;
    const scalar_t* hb = a.h + b * n * d;
    scalar_t* ghb = a.gh + b * n * d;
    for (int64_t t = 0; t < n * n; ++t) gP[t] = 0;
    mirror_scores(z, pr, n, k, q, H, C);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t r = ((b * n + i) * H + hh) * n;
        const scalar_t* wr = a.w + r;
        const scalar_t* gxr = a.gx + ((b * n + i) * H + hh) * d;
        const scalar_t* hi = hb + i * d;
        // aggregation: S = Σ_j w_ij h_j (recomputed), gS = gx ⊙ h_i, gh_i += gx ⊙ S, gw_ij = <gS, h_j>
        if (a.interaction) {
          for (int64_t c = 0; c < d; ++c) S[c] = 0;
          for (int64_t j = 0; j < n; ++j) {
            const scalar_t* hj = hb + j * d;
            for (int64_t c = 0; c < d; ++c) S[c] += wr[j] * hj[c];
          }
          for (int64_t c = 0; c < d; ++c) {
            gS[c] = gxr[c] * hi[c];
            ghb[i * d + c] += gxr[c] * S[c];
          }
        } else {
          for (int64_t c = 0; c < d; ++c) gS[c] = gxr[c];
        }
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t* hj = hb + j * d;
          scalar_t* ghj = ghb + j * d;
          gw[j] = dot16(gS, hj, d);
          const scalar_t wj = wr[j];
          for (int64_t c = 0; c < d; ++c) ghj[c] += wj * gS[c];
        }
        const scalar_t* al = a.alpha + r;  // 0 outside N_i: no mask needed
        const scalar_t* Pi = Pb + i * n;
        const scalar_t* cr = C + (hh * n + i) * n;
        scalar_t* gcr = gc + (i * H + hh) * n;
        scalar_t dot = 0;  // softmax backward: alpha (g' - <g', alpha>), g' = gw P (Eq. 11-12)
        for (int64_t j = 0; j < n; ++j) dot += gw[j] * Pi[j] * al[j];
        for (int64_t j = 0; j < n; ++j) {
          const scalar_t v = al[j] * (gw[j] * Pi[j] - dot);
          gcr[j] = cr[j] > 0 ? v : v * a.slope;  // LeakyReLU' (Eq. 10)
          gP[i * n + j] += gw[j] * al[j];
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
      const scalar_t* zt = z + t * k;
      scalar_t* gt = gzb + t * k;
      for (int64_t c = 0; c < q; ++c) {  // ReLU' of the metric's hidden layer
        const bool on = zt[c] > 0;
        a.gw2[c] += gs * (on ? zt[c] : scalar_t(0));
        gt[c] = on ? gs * a.w2[c] : scalar_t(0);
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
  const auto wct = wc.t();
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
    at::parallel_for(0, nblocks, 1, [&](int64_t blk0, int64_t blk1) {
      auto prod = torch::empty({BLOCK * T, d}, h.options());
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t b0 = blk * BLOCK, bs = std::min(BLOCK, B - b0);
        products_f(a.h, pr, n, d, b0, b0 + bs, prod.data_ptr<scalar_t>());
        auto zb = Z.narrow(0, b0, bs).view({bs * T, k});
        at::addmm_out(zb, bc, prod.narrow(0, 0, bs * T), wct);  // Eq. 7's W1 and Eq. 10's a_h, all pairs
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
  auto gh = torch::zeros_like(h);
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
    at::parallel_for(0, nblocks, 1, [&](int64_t blk0, int64_t blk1) {
      auto prod = torch::empty({BLOCK * T, d}, h.options());
      auto gprod = torch::empty({BLOCK * T, d}, h.options());
      auto gz = torch::empty({BLOCK * T, k}, h.options());
      Args<scalar_t> a = a0;
      a.gz = gz.data_ptr<scalar_t>(), a.gprod = gprod.data_ptr<scalar_t>();
      for (int64_t blk = blk0; blk < blk1; ++blk) {
        const int64_t b0 = blk * BLOCK, bs = std::min(BLOCK, B - b0);
        a.gw2 = gw2_part.data_ptr<scalar_t>() + blk * q;
        a.gb2 = gb2_part.data_ptr<scalar_t>() + blk;
        backward_f(a, b0, b0 + bs);
        products_f(a.h, pr, n, d, b0, b0 + bs, prod.data_ptr<scalar_t>());
        auto gzv = gz.narrow(0, 0, bs * T);
        auto gwcb = gwc_part[blk];
        at::mm_out(gwcb, gzv.t(), prod.narrow(0, 0, bs * T));
        auto gbcb = gbc_part[blk];
        at::sum_out(gbcb, gzv, {0});
        auto gpv = gprod.narrow(0, 0, bs * T);
        at::mm_out(gpv, gzv, wc);
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
