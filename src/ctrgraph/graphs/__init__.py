"""Graph toolkit: the graphs of the seed papers, built once from encoded train-split arrays.

Builders return scipy CSR matrices (host); :func:`to_torch_sparse` moves them to torch. See
``docs/graphs.md`` for each function's paper reference and the choices the papers leave open.
Every graph computation of the library lives here, including the paper-specific graph state
(:mod:`.dg`: DG-ENN's graphs and per-step edge drops; :mod:`.drop_sampling`: their neighbour
sampling; :mod:`.hetero`: the merged heterogeneous graph of DG-ENN's Table 4 baselines;
:mod:`.walks`: node2vec walks). Per-batch graphs (EGIN's in-batch query-item edges, DemiNet's
per-sequence relations) belong here as further modules; the embedding providers only use them.
"""
from .builders import (attribute_incidence, binary_incidence, bipartite_adjacency, cooccurrence_graph, drop_edges,
                       mixed_incidence, transition_graph, user_item_graph, user_knn_graph)
from .from_dataset import (attribute_incidences, behaviour_sequences, cooccurrence_from_dataset,
                           transitions_from_dataset, user_item_from_dataset, user_knn_from_dataset, user_sequences)
from .normalize import (NORMALIZATIONS, avg_norm, gcn_literal_norm, kipf_norm, normalize, row_norm, sym_norm,
                        sym_norm_edges)
from .propagate import (GCN, NGCF, LightGCN, combine_layers, csr_int32, edge_softmax, lightgcn_layers, make_propagator,
                        sparse_rows, spmm, to_torch_sparse, transpose_csr)
from .sampling import Block, sample_blocks, sample_neighbors, sampled_lightgcn
from ._util import as_ragged
from .walks import node2vec_walks, walks_to_ragged

__all__ = [
    "cooccurrence_graph", "transition_graph", "user_knn_graph", "attribute_incidence", "binary_incidence",
    "mixed_incidence", "bipartite_adjacency", "user_item_graph", "drop_edges",
    "user_sequences", "behaviour_sequences", "cooccurrence_from_dataset", "transitions_from_dataset",
    "attribute_incidences", "user_item_from_dataset", "user_knn_from_dataset",
    "sym_norm", "row_norm", "avg_norm", "gcn_literal_norm", "kipf_norm", "normalize", "NORMALIZATIONS",
    "sym_norm_edges", "to_torch_sparse", "sparse_rows", "spmm", "transpose_csr", "csr_int32", "combine_layers", "lightgcn_layers",
    "LightGCN", "GCN", "NGCF",
    "make_propagator", "edge_softmax", "Block", "sample_neighbors", "sample_blocks", "sampled_lightgcn", "as_ragged",
    "node2vec_walks", "walks_to_ragged",
]
