// EGIN's fused CPU pieces (ctrgraph.graphs.native.search_graph_kernel).
//
// 1. The per-pair parts of the graph loss (ctrgraph.layers.negative_queue._PairSoftplus; §3.2,
// Algorithm 1). For P pairs (anchor id a[p] of table A [VA, d], positive id b[p] of B [VB, d]):
//
//   pair_dot:      dot[p] = A[a[p]] . B[b[p]]                                      -> [P]
//   pair_scatter:  gA[a[p]] += w[p] B[b[p]],  gB[b[p]] += w[p] A[a[p]]            -> gA, gB
//                  (one buffer gA when A and B are one table)
//
// Neither allocates anything of the pairs' size but the [P] result: the PyTorch path gathers two
// [P, d] blocks, multiplies them and scatters two more. The per-pair softplus of the loss stays a
// vectorised tensor operation between the two. The scatter visits the pairs in order in one thread
// (concurrent adds into one table row would race).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace {

torch::Tensor pair_dot(torch::Tensor A, torch::Tensor a, torch::Tensor B, torch::Tensor b) {
  TORCH_CHECK(!A.is_cuda(), "search_graph native kernel: CPU tensors only");
  A = A.contiguous(); B = B.contiguous(); a = a.contiguous(); b = b.contiguous();
  const int64_t P = a.size(0), d = A.size(1);
  TORCH_CHECK(B.size(1) == d && b.size(0) == P, "pair_dot: shapes do not agree");
  auto out = torch::empty({P}, A.options());
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "pair_dot", [&] {
    const scalar_t* Ap = A.data_ptr<scalar_t>();
    const scalar_t* Bp = B.data_ptr<scalar_t>();
    const int64_t* ap = a.data_ptr<int64_t>();
    const int64_t* bp = b.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, P, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const scalar_t* x = Ap + ap[p] * d;
        const scalar_t* y = Bp + bp[p] * d;
        scalar_t acc = 0;
        for (int64_t k = 0; k < d; ++k) acc += x[k] * y[k];
        o[p] = acc;
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> pair_scatter(torch::Tensor A, torch::Tensor a, torch::Tensor B, torch::Tensor b,
                                        torch::Tensor w, bool same_table) {
  TORCH_CHECK(!A.is_cuda(), "search_graph native kernel: CPU tensors only");
  A = A.contiguous(); B = B.contiguous(); a = a.contiguous(); b = b.contiguous(); w = w.contiguous();
  const int64_t P = a.size(0), d = A.size(1);
  TORCH_CHECK(B.size(1) == d && b.size(0) == P && w.size(0) == P, "pair_scatter: shapes do not agree");
  auto gA = torch::zeros_like(A);
  auto gB = same_table ? torch::zeros({0, d}, B.options()) : torch::zeros_like(B);
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "pair_scatter", [&] {
    const scalar_t* Ap = A.data_ptr<scalar_t>();
    const scalar_t* Bp = B.data_ptr<scalar_t>();
    const int64_t* ap = a.data_ptr<int64_t>();
    const int64_t* bp = b.data_ptr<int64_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gAp = gA.data_ptr<scalar_t>();
    scalar_t* gBp = same_table ? gAp : gB.data_ptr<scalar_t>();
    for (int64_t p = 0; p < P; ++p) {
      const scalar_t* x = Ap + ap[p] * d;
      const scalar_t* y = Bp + bp[p] * d;
      scalar_t* gx = gAp + ap[p] * d;
      scalar_t* gy = gBp + bp[p] * d;
      const scalar_t s = wp[p];
      for (int64_t k = 0; k < d; ++k) {
        const scalar_t xk = x[k], yk = y[k];
        gx[k] += s * yk;
        gy[k] += s * xk;
      }
    }
  });
  return {gA, gB};
}

// 2. q2i edges of Algorithm 2 (ctrgraph.graphs.search_pairs.span_pairs) for integer timestamps and
// one category per position: per instance, the valid clicks sorted by (category, time, position);
// for each valid query of category c > 0 (in position order) the clicks of category c with
// 0 < t_i - t_q < t (and, with `both`, first those with -t < t_i - t_q < 0) are two binary searches
// away. Returns (b, query position, click position) [P] each, ordered by instance, query, then click
// (category, time, position): the order of search_pairs._span_pairs_keyed.
std::vector<torch::Tensor> span_pairs(torch::Tensor q_ts, torch::Tensor q_mask, torch::Tensor q_cats,
                                      torch::Tensor i_ts, torch::Tensor i_mask, torch::Tensor i_cats,
                                      int64_t t, bool both) {
  TORCH_CHECK(!q_ts.is_cuda(), "span_pairs native kernel: CPU tensors only");
  q_ts = q_ts.to(torch::kLong).contiguous(); q_cats = q_cats.to(torch::kLong).contiguous();
  i_ts = i_ts.to(torch::kLong).contiguous(); i_cats = i_cats.to(torch::kLong).contiguous();
  q_mask = q_mask.to(torch::kBool).contiguous(); i_mask = i_mask.to(torch::kBool).contiguous();
  const int64_t B = q_ts.size(0), M = q_ts.size(1), L = i_ts.size(1);
  const int64_t* qt = q_ts.data_ptr<int64_t>();
  const int64_t* qc = q_cats.data_ptr<int64_t>();
  const bool* qm = q_mask.data_ptr<bool>();
  const int64_t* it = i_ts.data_ptr<int64_t>();
  const int64_t* ic = i_cats.data_ptr<int64_t>();
  const bool* im = i_mask.data_ptr<bool>();
  std::vector<int64_t> ob, oq, oi;
  std::vector<std::array<int64_t, 3>> row;  // (category, time, position) of the row's valid clicks
  row.reserve(L);
  auto emit = [&](int64_t b, int64_t j, int64_t c, int64_t lo, int64_t hi) {  // times in [lo, hi]
    if (lo > hi) return;
    auto first = std::lower_bound(row.begin(), row.end(), std::array<int64_t, 3>{c, lo, INT64_MIN});
    auto last = std::lower_bound(first, row.end(), std::array<int64_t, 3>{c, hi, INT64_MAX});
    for (auto x = first; x != last; ++x) {
      ob.push_back(b); oq.push_back(j); oi.push_back((*x)[2]);
    }
  };
  for (int64_t b = 0; b < B; ++b) {
    row.clear();
    for (int64_t l = 0; l < L; ++l)
      if (im[b * L + l]) row.push_back({std::max<int64_t>(ic[b * L + l], 0), it[b * L + l], l});
    std::sort(row.begin(), row.end());
    for (int64_t j = 0; j < M; ++j) {
      const int64_t c = qc[b * M + j], tq = qt[b * M + j];
      if (!qm[b * M + j] || c <= 0) continue;
      if (both) emit(b, j, c, tq - t + 1, tq - 1);
      emit(b, j, c, tq + 1, tq + t - 1);
    }
  }
  auto opts = torch::TensorOptions().dtype(torch::kLong);
  const int64_t P = static_cast<int64_t>(ob.size());
  auto tb = torch::empty({P}, opts), tq = torch::empty({P}, opts), ti = torch::empty({P}, opts);
  std::copy(ob.begin(), ob.end(), tb.data_ptr<int64_t>());
  std::copy(oq.begin(), oq.end(), tq.data_ptr<int64_t>());
  std::copy(oi.begin(), oi.end(), ti.data_ptr<int64_t>());
  return {tb, tq, ti};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("span_pairs", &span_pairs, "q2i edges of EGIN's Algorithm 2 (integer times, one category per position)");
  m.def("pair_dot", &pair_dot, "dot products of id pairs of two tables [P]");
  m.def("pair_scatter", &pair_scatter, "gA[a] += w B[b], gB[b] += w A[a] (gradients of the pairs' dot products)");
}
