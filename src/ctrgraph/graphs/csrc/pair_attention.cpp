// Fused GAT-style attention over a CSR edge list, CPU (ctrgraph.graphs.native; DemiNet's r_sim, Eqs. 6-8).
//
//   score[e, p] = LeakyReLU(s_i[n, p] + s_j[col[e], p])           for the edges e of receiver n
//   alpha[e, p] = softmax over n's edges of score[., p]
//   out[n, p, :] = sum_e alpha[e, p] * v[col[e], p, :]
//
// Shapes: s_i, s_j [N, P]; v [N, P, C]; rowptr [N + 1] (receivers' edge ranges, int64); col [E]
// (senders, int64); inst [B + 1] (node ranges of independent instances: every edge stays inside one,
// so the backward's scatters to the senders run in parallel over instances without races).
// The forward keeps only alpha [E, P]; the backward recomputes the LeakyReLU sign.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

template <typename T>
inline T leaky(T x, double slope) {  // branch-free: the sign of a score is a coin flip for the predictor
  return std::max(x, T(0)) + static_cast<T>(slope) * std::min(x, T(0));
}

template <typename T>
inline T dleaky(T x, double slope) {  // LeakyReLU'(x), branch-free
  return static_cast<T>(slope) + (T(1) - static_cast<T>(slope)) * static_cast<T>(x > T(0));
}

std::vector<torch::Tensor> forward(torch::Tensor s_i, torch::Tensor s_j, torch::Tensor v, torch::Tensor z,
                                   torch::Tensor rowptr, torch::Tensor col, double slope) {
  // z [N, P] (or empty): a second, scalar message aggregated with the same weights (DemiNet: w_d . h).
  TORCH_CHECK(!s_i.is_cuda(), "pair_attention native kernel: CPU tensors only");
  s_i = s_i.contiguous(); s_j = s_j.contiguous(); v = v.contiguous(); z = z.contiguous();
  rowptr = rowptr.contiguous(); col = col.contiguous();
  const int64_t N = v.size(0), P = v.size(1), C = v.size(2), E = col.size(0);
  const bool has_z = z.numel() > 0;
  auto out = torch::zeros_like(v);
  auto oz = torch::zeros({has_z ? N : 0, P}, v.options());
  auto alpha = torch::empty({E, P}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "pair_attention_forward", [&] {
    const scalar_t* si = s_i.data_ptr<scalar_t>();
    const scalar_t* sj = s_j.data_ptr<scalar_t>();
    const scalar_t* vv = v.data_ptr<scalar_t>();
    const scalar_t* zz = has_z ? z.data_ptr<scalar_t>() : nullptr;
    const int64_t* rp = rowptr.data_ptr<int64_t>();
    const int64_t* cc = col.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* ozp = has_z ? oz.data_ptr<scalar_t>() : nullptr;
    scalar_t* al = alpha.data_ptr<scalar_t>();
    at::parallel_for(0, N, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        const int64_t e0 = rp[n], e1 = rp[n + 1];
        if (e0 == e1) continue;
        for (int64_t p = 0; p < P; ++p) {
          const scalar_t a = si[n * P + p];
          scalar_t m = -std::numeric_limits<scalar_t>::infinity();
          for (int64_t e = e0; e < e1; ++e) {
            const scalar_t sc = leaky(a + sj[cc[e] * P + p], slope);
            al[e * P + p] = sc;
            m = sc > m ? sc : m;
          }
          scalar_t zs = 0;
          for (int64_t e = e0; e < e1; ++e) {
            const scalar_t w = std::exp(al[e * P + p] - m);
            al[e * P + p] = w;
            zs += w;
          }
          const scalar_t inv = scalar_t(1) / zs;
          scalar_t* op = o + (n * P + p) * C;
          scalar_t accz = 0;
          for (int64_t e = e0; e < e1; ++e) {
            const scalar_t w = al[e * P + p] * inv;
            al[e * P + p] = w;
            const scalar_t* vp = vv + (cc[e] * P + p) * C;
            for (int64_t c = 0; c < C; ++c) op[c] += w * vp[c];
            if (has_z) accz += w * zz[cc[e] * P + p];
          }
          if (has_z) ozp[n * P + p] = accz;
        }
      }
    });
  });
  return {out, oz, alpha};
}

std::vector<torch::Tensor> backward(torch::Tensor g, torch::Tensor gz, torch::Tensor s_i, torch::Tensor s_j,
                                    torch::Tensor v, torch::Tensor z, torch::Tensor alpha, torch::Tensor rowptr,
                                    torch::Tensor col, torch::Tensor inst, double slope) {
  g = g.contiguous(); gz = gz.contiguous(); s_i = s_i.contiguous(); s_j = s_j.contiguous(); v = v.contiguous();
  z = z.contiguous(); alpha = alpha.contiguous(); rowptr = rowptr.contiguous(); col = col.contiguous();
  inst = inst.contiguous();
  const int64_t P = v.size(1), C = v.size(2), B = inst.size(0) - 1;
  const bool has_z = z.numel() > 0;
  auto gi = torch::zeros_like(s_i), gj = torch::zeros_like(s_j), gv = torch::zeros_like(v);
  auto gzz = torch::zeros_like(z);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "pair_attention_backward", [&] {
    const scalar_t* gg = g.data_ptr<scalar_t>();
    const scalar_t* ggz = has_z ? gz.data_ptr<scalar_t>() : nullptr;
    const scalar_t* si = s_i.data_ptr<scalar_t>();
    const scalar_t* sj = s_j.data_ptr<scalar_t>();
    const scalar_t* vv = v.data_ptr<scalar_t>();
    const scalar_t* zz = has_z ? z.data_ptr<scalar_t>() : nullptr;
    const scalar_t* al = alpha.data_ptr<scalar_t>();
    const int64_t* rp = rowptr.data_ptr<int64_t>();
    const int64_t* cc = col.data_ptr<int64_t>();
    const int64_t* ip = inst.data_ptr<int64_t>();
    scalar_t* gip = gi.data_ptr<scalar_t>();
    scalar_t* gjp = gj.data_ptr<scalar_t>();
    scalar_t* gvp = gv.data_ptr<scalar_t>();
    scalar_t* gzp = has_z ? gzz.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, 8, [&](int64_t blo, int64_t bhi) {
      for (int64_t n = ip[blo]; n < ip[bhi]; ++n) {
        const int64_t e0 = rp[n], e1 = rp[n + 1];
        for (int64_t p = 0; p < P; ++p) {
          const scalar_t* gn = gg + (n * P + p) * C;
          const scalar_t gzn = has_z ? ggz[n * P + p] : scalar_t(0);
          scalar_t s = 0;  // sum_e alpha_e (g_n . v_e + gz_n z_e)
          for (int64_t e = e0; e < e1; ++e) {
            const scalar_t* vp = vv + (cc[e] * P + p) * C;
            scalar_t d = has_z ? gzn * zz[cc[e] * P + p] : scalar_t(0);
            for (int64_t c = 0; c < C; ++c) d += gn[c] * vp[c];
            s += al[e * P + p] * d;
          }
          const scalar_t a = si[n * P + p];
          for (int64_t e = e0; e < e1; ++e) {
            const int64_t j = cc[e];
            const scalar_t w = al[e * P + p];
            const scalar_t* vp = vv + (j * P + p) * C;
            scalar_t* gvj = gvp + (j * P + p) * C;
            scalar_t d = 0;
            for (int64_t c = 0; c < C; ++c) {
              d += gn[c] * vp[c];
              gvj[c] += w * gn[c];
            }
            if (has_z) {
              d += gzn * zz[j * P + p];
              gzp[j * P + p] += w * gzn;
            }
            const scalar_t ds = w * (d - s) * dleaky(a + sj[j * P + p], slope);
            gip[n * P + p] += ds;
            gjp[j * P + p] += ds;
          }
        }
      }
    });
  });
  return {gi, gj, gv, gzz};
}

// Banded message sum of the contextual relations (DemiNet's r_in / r_out / r_self, Eqs. 8 and 11):
//   out[n, p, :] = sum_o w[o, n, p] * x[n + offsets[o], p, :]   (terms with n + offsets[o] outside [0, N) skipped)
// x [N, P, C], w [O, N, P]; the backward gathers (gx[m] = sum_o w[o, m - o] g[m - o]), so every output
// row is written by one thread.
torch::Tensor banded_forward(torch::Tensor x, torch::Tensor w, std::vector<int64_t> offsets) {
  x = x.contiguous(); w = w.contiguous();
  const int64_t N = x.size(0), P = x.size(1), C = x.size(2), O = static_cast<int64_t>(offsets.size());
  TORCH_CHECK(w.size(0) == O && w.size(1) == N && w.size(2) == P, "banded_sum native kernel: w must be [O, N, P]");
  auto out = torch::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "banded_forward", [&] {
    const scalar_t* xx = x.data_ptr<scalar_t>();
    const scalar_t* ww = w.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t q = 0; q < O; ++q) {
          const int64_t m = n + offsets[q];
          if (m < 0 || m >= N) continue;
          for (int64_t p = 0; p < P; ++p) {
            const scalar_t wq = ww[(q * N + n) * P + p];
            if (wq == scalar_t(0)) continue;
            const scalar_t* xm = xx + (m * P + p) * C;
            scalar_t* on = o + (n * P + p) * C;
            for (int64_t c = 0; c < C; ++c) on[c] += wq * xm[c];
          }
        }
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> banded_backward(torch::Tensor g, torch::Tensor x, torch::Tensor w,
                                           std::vector<int64_t> offsets) {
  g = g.contiguous(); x = x.contiguous(); w = w.contiguous();
  const int64_t N = x.size(0), P = x.size(1), C = x.size(2), O = static_cast<int64_t>(offsets.size());
  auto gx = torch::zeros_like(x), gw = torch::zeros_like(w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "banded_backward", [&] {
    const scalar_t* gg = g.data_ptr<scalar_t>();
    const scalar_t* xx = x.data_ptr<scalar_t>();
    const scalar_t* ww = w.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* gwp = gw.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t q = 0; q < O; ++q) {
          const int64_t m = n + offsets[q];  // gw[q, n] from the receiver n
          if (m >= 0 && m < N) {
            for (int64_t p = 0; p < P; ++p) {
              const scalar_t* gn = gg + (n * P + p) * C;
              const scalar_t* xm = xx + (m * P + p) * C;
              scalar_t d = 0;
              for (int64_t c = 0; c < C; ++c) d += gn[c] * xm[c];
              gwp[(q * N + n) * P + p] = d;
            }
          }
          const int64_t r = n - offsets[q];  // gx[n] from the receiver r = n - offset
          if (r >= 0 && r < N) {
            for (int64_t p = 0; p < P; ++p) {
              const scalar_t wq = ww[(q * N + r) * P + p];
              if (wq == scalar_t(0)) continue;
              const scalar_t* gr = gg + (r * P + p) * C;
              scalar_t* gxn = gxp + (n * P + p) * C;
              for (int64_t c = 0; c < C; ++c) gxn[c] += wq * gr[c];
            }
          }
        }
      }
    });
  });
  return {gx, gw};
}

// Attention of one banded relation (DemiNet's r_in / r_out, Eqs. 6-7, and Eqs. 8-9 on the scalar z = w_d . h):
//   a[o, n, p] = LeakyReLU(s_i[n, p] + s_j[n + offsets[o], p]),  alpha = softmax over the o with mask[n, o]
//   e[n, p] = sum_o alpha[o, n, p] * z[n + offsets[o], p]
// s_i, s_j, z [N, P]; mask [N, O] (bool: False where n + offset leaves n's instance); alpha [O, N, P] is
// zero on masked entries. The backward works in two gather passes (no scatter, no races).
std::vector<torch::Tensor> band_att_forward(torch::Tensor s_i, torch::Tensor s_j, torch::Tensor z,
                                            torch::Tensor mask, std::vector<int64_t> offsets, double slope) {
  s_i = s_i.contiguous(); s_j = s_j.contiguous(); z = z.contiguous(); mask = mask.contiguous();
  const int64_t N = s_i.size(0), P = s_i.size(1), O = static_cast<int64_t>(offsets.size());
  TORCH_CHECK(mask.size(0) == N && mask.size(1) == O && mask.scalar_type() == torch::kBool,
              "band attention native kernel: mask must be bool [N, O]");
  auto alpha = torch::zeros({O, N, P}, s_i.options());
  auto e = torch::zeros_like(s_i);
  AT_DISPATCH_FLOATING_TYPES(s_i.scalar_type(), "band_att_forward", [&] {
    const scalar_t* si = s_i.data_ptr<scalar_t>();
    const scalar_t* sj = s_j.data_ptr<scalar_t>();
    const scalar_t* zz = z.data_ptr<scalar_t>();
    const bool* mk = mask.data_ptr<bool>();
    scalar_t* al = alpha.data_ptr<scalar_t>();
    scalar_t* ep = e.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t p = 0; p < P; ++p) {
          scalar_t m = -std::numeric_limits<scalar_t>::infinity();
          bool any = false;
          for (int64_t q = 0; q < O; ++q) {
            if (!mk[n * O + q] || n + offsets[q] < 0 || n + offsets[q] >= N) continue;  // out of range: memory safety
            const scalar_t sc = leaky(si[n * P + p] + sj[(n + offsets[q]) * P + p], slope);
            al[(q * N + n) * P + p] = sc;
            m = sc > m ? sc : m;
            any = true;
          }
          if (!any) continue;
          scalar_t zsum = 0;
          for (int64_t q = 0; q < O; ++q) {
            if (!mk[n * O + q] || n + offsets[q] < 0 || n + offsets[q] >= N) continue;  // out of range: memory safety
            const scalar_t w = std::exp(al[(q * N + n) * P + p] - m);
            al[(q * N + n) * P + p] = w;
            zsum += w;
          }
          scalar_t acc = 0;
          for (int64_t q = 0; q < O; ++q) {
            if (!mk[n * O + q] || n + offsets[q] < 0 || n + offsets[q] >= N) continue;  // out of range: memory safety
            const scalar_t w = al[(q * N + n) * P + p] / zsum;
            al[(q * N + n) * P + p] = w;
            acc += w * zz[(n + offsets[q]) * P + p];
          }
          ep[n * P + p] = acc;
        }
      }
    });
  });
  return {alpha, e};
}

std::vector<torch::Tensor> band_att_backward(torch::Tensor g_alpha, torch::Tensor g_e, torch::Tensor s_i,
                                             torch::Tensor s_j, torch::Tensor z, torch::Tensor alpha,
                                             torch::Tensor mask, std::vector<int64_t> offsets, double slope) {
  g_alpha = g_alpha.contiguous(); g_e = g_e.contiguous(); s_i = s_i.contiguous(); s_j = s_j.contiguous();
  z = z.contiguous(); alpha = alpha.contiguous(); mask = mask.contiguous();
  const int64_t N = s_i.size(0), P = s_i.size(1), O = static_cast<int64_t>(offsets.size());
  auto gi = torch::zeros_like(s_i), gj = torch::zeros_like(s_j), gz = torch::zeros_like(z);
  auto ds = torch::zeros({O, N, P}, s_i.options());
  AT_DISPATCH_FLOATING_TYPES(s_i.scalar_type(), "band_att_backward", [&] {
    const scalar_t* ga = g_alpha.data_ptr<scalar_t>();
    const scalar_t* ge = g_e.data_ptr<scalar_t>();
    const scalar_t* si = s_i.data_ptr<scalar_t>();
    const scalar_t* sj = s_j.data_ptr<scalar_t>();
    const scalar_t* zz = z.data_ptr<scalar_t>();
    const scalar_t* al = alpha.data_ptr<scalar_t>();
    const bool* mk = mask.data_ptr<bool>();
    scalar_t* dsp = ds.data_ptr<scalar_t>();
    scalar_t* gip = gi.data_ptr<scalar_t>();
    scalar_t* gjp = gj.data_ptr<scalar_t>();
    scalar_t* gzp = gz.data_ptr<scalar_t>();
    at::parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {  // pass 1: d score, per receiver
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t p = 0; p < P; ++p) {
          scalar_t s = 0;
          for (int64_t q = 0; q < O; ++q) {
            if (!mk[n * O + q] || n + offsets[q] < 0 || n + offsets[q] >= N) continue;  // out of range: memory safety
            const int64_t i = (q * N + n) * P + p;
            s += al[i] * (ga[i] + ge[n * P + p] * zz[(n + offsets[q]) * P + p]);
          }
          scalar_t acc = 0;
          for (int64_t q = 0; q < O; ++q) {
            if (!mk[n * O + q] || n + offsets[q] < 0 || n + offsets[q] >= N) continue;  // out of range: memory safety
            const int64_t i = (q * N + n) * P + p;
            const int64_t j = (n + offsets[q]) * P + p;
            const scalar_t d = al[i] * (ga[i] + ge[n * P + p] * zz[j] - s) *
                               dleaky(si[n * P + p] + sj[j], slope);
            dsp[i] = d;
            acc += d;
          }
          gip[n * P + p] = acc;
        }
      }
    });
    at::parallel_for(0, N, 256, [&](int64_t lo, int64_t hi) {  // pass 2: the senders' gradients, gathered
      for (int64_t m = lo; m < hi; ++m) {
        for (int64_t q = 0; q < O; ++q) {
          const int64_t n = m - offsets[q];
          if (n < 0 || n >= N || !mk[n * O + q]) continue;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t i = (q * N + n) * P + p;
            gjp[m * P + p] += dsp[i];
            gzp[m * P + p] += al[i] * ge[n * P + p];
          }
        }
      }
    });
  });
  return {gi, gj, gz};
}

// Second layer of K small per-head scorers after a LeakyReLU (DemiNet's Eq. 13 feed-forward heads):
//   s[n, k] = b[k] + sum_h w[k, h] * LeakyReLU(x[n, k * H + h])
// x [N, K * H] (the first layer's pre-activations), w [K, H], b [K]; the backward recomputes the
// activation from x, so nothing [N, K * H]-sized is kept besides x.
torch::Tensor head_score_forward(torch::Tensor x, torch::Tensor w, torch::Tensor b, double slope) {
  x = x.contiguous(); w = w.contiguous(); b = b.contiguous();
  const int64_t N = x.size(0), K = w.size(0), H = w.size(1);
  TORCH_CHECK(x.size(1) == K * H, "head score native kernel: x must be [N, K * H]");
  auto s = torch::empty({N, K}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "head_score_forward", [&] {
    const scalar_t* xx = x.data_ptr<scalar_t>();
    const scalar_t* ww = w.data_ptr<scalar_t>();
    const scalar_t* bb = b.data_ptr<scalar_t>();
    scalar_t* sp = s.data_ptr<scalar_t>();
    at::parallel_for(0, N, 512, [&](int64_t lo, int64_t hi) {
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t* xr = xx + n * K * H + k * H;
          const scalar_t* wr = ww + k * H;
          scalar_t acc = 0;
          for (int64_t h = 0; h < H; ++h) {
            const scalar_t v = xr[h];
            acc += wr[h] * leaky(v, slope);
          }
          sp[n * K + k] = acc + bb[k];
        }
      }
    });
  });
  return s;
}

std::vector<torch::Tensor> head_score_backward(torch::Tensor g, torch::Tensor x, torch::Tensor w, double slope) {
  g = g.contiguous(); x = x.contiguous(); w = w.contiguous();
  const int64_t N = x.size(0), K = w.size(0), H = w.size(1);
  auto gx = torch::empty_like(x);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, (N + 2047) / 2048));
  auto partial = torch::zeros({chunks, K, H}, x.options());  // per-chunk sums for w's gradient
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "head_score_backward", [&] {
    const scalar_t* gg = g.data_ptr<scalar_t>();
    const scalar_t* xx = x.data_ptr<scalar_t>();
    const scalar_t* ww = w.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* pp = partial.data_ptr<scalar_t>();
    const int64_t per = (N + chunks - 1) / chunks;
    at::parallel_for(0, chunks, 1, [&](int64_t clo, int64_t chi) {
      for (int64_t c = clo; c < chi; ++c) {
        scalar_t* acc = pp + c * K * H;
        for (int64_t n = c * per; n < std::min(N, (c + 1) * per); ++n) {
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t gk = gg[n * K + k];
            const scalar_t* xr = xx + n * K * H + k * H;
            const scalar_t* wr = ww + k * H;
            scalar_t* gr = gxp + n * K * H + k * H;
            scalar_t* ar = acc + k * H;
            for (int64_t h = 0; h < H; ++h) {
              const scalar_t v = xr[h];
              gr[h] = gk * wr[h] * dleaky(v, slope);
              ar[h] += gk * leaky(v, slope);
            }
          }
        }
      }
    });
  });
  return {gx, partial.sum(0)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "CSR pair attention, forward (out, alpha)");
  m.def("backward", &backward, "CSR pair attention, backward (grad s_i, grad s_j, grad v)");
  m.def("band_att_forward", &band_att_forward, "banded relation attention, forward (alpha, e)");
  m.def("band_att_backward", &band_att_backward, "banded relation attention, backward");
  m.def("head_score_forward", &head_score_forward, "per-head LeakyReLU + linear scorer, forward");
  m.def("head_score_backward", &head_score_backward, "per-head LeakyReLU + linear scorer, backward (grad x, grad w)");
  m.def("banded_forward", &banded_forward, "banded message sum, forward");
  m.def("banded_backward", &banded_backward, "banded message sum, backward (grad x, grad w)");
}
