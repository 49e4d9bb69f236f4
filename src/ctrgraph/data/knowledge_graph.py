"""Knowledge-graph side data (KGAT's knowledge graph): triples ``(head, relation, tail)`` over
entities plus an item -> entity link table, mapped onto an encoded data set's item ids.

File format (RecBole atomic files, as shipped next to ml-100k in ``../shared/data/ml-100k``):
tab-separated with one header line; ``<name>.kg[.gz]`` holds ``head_id, relation_id, tail_id``,
``<name>.link[.gz]`` holds ``item_id, entity_id`` (raw item ids, as in the rating file). The
first three / two columns are used whatever their header says.

Mapping (all vectorised): a link's raw item id is encoded with the data set's item vocabulary
(built from the train split); links to items outside it (OOV) are dropped, and their entities
stay ordinary entities. An entity linked to a known item *is* that item (node id = the item's id);
every other entity gets ``n_items + rank`` in the sorted order of entity names. Duplicate links
keep the first row per item and per entity (a one-to-one alignment, as KGAT assumes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .vocab import OOV


@dataclass
class KnowledgeGraph:
    """Triples over node ids: ``[0, n_items)`` = item ids of the item vocabulary, ``[n_items,
    n_items + n_entities)`` = the other entities (names in ``entities``)."""

    head: np.ndarray  # int64 [T]
    relation: np.ndarray  # int64 [T], index into ``relations``
    tail: np.ndarray  # int64 [T]
    n_items: int
    entities: np.ndarray  # names of the non-item entities, sorted
    relations: np.ndarray  # relation names, sorted
    linked_items: int  # items of the vocabulary aligned with an entity

    @property
    def n_entities(self) -> int:
        return int(self.entities.size)

    @property
    def n_relations(self) -> int:
        return int(self.relations.size)


def find_kg_files(directory: str | Path | None) -> tuple[Path, Path] | None:
    """``(kg, link)`` files in ``directory`` (``*.kg[.gz]`` and ``*.link[.gz]``), or None if either
    is missing; several candidates are an error (ambiguous)."""
    if directory is None:
        return None
    d = Path(directory)
    if not d.is_dir():
        return None
    found = []
    for stem in ("kg", "link"):
        cands = sorted(set(d.glob(f"*.{stem}.gz")) | set(d.glob(f"*.{stem}")))
        if len(cands) > 1:
            raise DataError(f"knowledge graph: several .{stem} files in {d}: {[c.name for c in cands]}")
        if not cands:
            return None
        found.append(cands[0])
    return found[0], found[1]


def _read(path: Path, n_cols: int, what: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"knowledge graph: {what} file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"knowledge graph: cannot read {what} file {path}: {e}") from None
    if df.shape[1] < n_cols:
        raise DataError(f"knowledge graph: {what} file {path} needs {n_cols} tab-separated columns, "
                        f"found {df.shape[1]} ({list(df.columns)})")
    return df.iloc[:, :n_cols]


def load_knowledge_graph(kg_path: str | Path, link_path: str | Path, item_vocab) -> KnowledgeGraph:
    """Read and map a knowledge graph onto ``item_vocab`` (a :class:`~ctrgraph.data.vocab.Vocab`)."""
    kg = _read(Path(kg_path), 3, "triple")
    link = _read(Path(link_path), 2, "link")
    h, r, t = (kg.iloc[:, k].to_numpy(dtype=str) for k in range(3))
    items = np.asarray(item_vocab.encode(link.iloc[:, 0].to_numpy(dtype=str)), dtype=np.int64)
    ents = link.iloc[:, 1].to_numpy(dtype=str)
    known = items > OOV  # 0 padding, 1 OOV: unknown items are dropped
    items, ents = items[known], ents[known]
    _, first_item = np.unique(items, return_index=True)  # one entity per item, one item per entity
    keep = np.zeros(items.size, dtype=bool)
    keep[first_item] = True
    _, first_ent = np.unique(ents, return_index=True)
    keep2 = np.zeros(items.size, dtype=bool)
    keep2[first_ent] = True
    items, ents = items[keep & keep2], ents[keep & keep2]
    names, inv = np.unique(np.concatenate([h, t]), return_inverse=True)
    item_of = np.full(names.size, -1, dtype=np.int64)
    pos = np.searchsorted(names, ents)
    hit = pos < names.size
    hit[hit] = names[pos[hit]] == ents[hit]
    item_of[pos[hit]] = items[hit]  # linked entities that occur in a triple
    other = item_of < 0
    n_items = len(item_vocab)
    node = np.where(other, n_items + np.cumsum(other) - 1, item_of)
    rel_names, rel = np.unique(r, return_inverse=True)
    return KnowledgeGraph(head=node[inv[: h.size]], relation=rel.astype(np.int64), tail=node[inv[h.size:]],
                          n_items=n_items, entities=names[other], relations=rel_names,
                          linked_items=int(hit.sum()))


__all__ = ["KnowledgeGraph", "find_kg_files", "load_knowledge_graph"]
