"""Data-derived lookup tables (train split only), e.g. item id -> category id for sampling
negatives with their attributes (DIEN's auxiliary loss)."""
from __future__ import annotations

import numpy as np

from .dataset import EncodedDataset
from .schema import Kind


def attribute_table(data: EncodedDataset, key_table: str, attr_table: str, split: str = "train") -> np.ndarray:
    """``table[key_id] = attr_id``: for every id of vocabulary ``key_table``, its most frequent
    ``attr_table`` id over the split's rows, read from every pair of aligned fields (a categorical
    key with a categorical attribute, e.g. item_id/category_id, and a behaviour sequence with its
    parallel attribute sequence, e.g. hist_item_id/hist_category; a multi-valued attribute counts with
its first value, as ml100k-ctr's ``hist_genre``). Unknown keys get 1 (OOV);
    padding stays 0. Ties go to the smaller attribute id."""
    schema = data.schema
    arrays = data.split(split)
    keys, attrs = [], []
    cats = [f for f in schema.fields if f.encoded and f.kind == Kind.CATEGORICAL]
    for k in cats:
        if k.table != key_table:
            continue
        for a in cats:
            if a.table == attr_table and a.role != k.role:
                keys.append(np.asarray(arrays[k.name]).ravel())
                attrs.append(np.asarray(arrays[a.name]).ravel())
    for k in cats:  # a categorical key with a multi-valued attribute: its first value
        if k.table != key_table:
            continue
        for a in schema.fields:
            if a.encoded and a.kind == Kind.MULTI_VALUED and a.table == attr_table:
                first = np.asarray(arrays[a.name])[:, 0]
                keys.append(np.asarray(arrays[k.name]).ravel()[first != 0])
                attrs.append(first[first != 0])
    for main, members in schema.sequence_groups().items():
        kf = [m for m in members if m.encoded and m.table == key_table]
        af = [m for m in members if m.encoded and m.table == attr_table]
        if kf and af:
            k = np.asarray(arrays[kf[0].name])
            a = np.asarray(arrays[af[0].name])
            valid = k != 0
            keys.append(k[valid])
            attrs.append(a[valid])
    n_keys = len(data.vocabs[key_table])
    table = np.ones(n_keys, dtype=np.int64)
    table[0] = 0
    if not keys:
        return table
    k = np.concatenate(keys).astype(np.int64)
    a = np.concatenate(attrs).astype(np.int64)
    n_attr = len(data.vocabs[attr_table])
    pair, cnt = np.unique(k * n_attr + a, return_counts=True)
    pk, pa = pair // n_attr, pair % n_attr
    order = np.lexsort((pa, -cnt, pk))  # per key: highest count first, then smaller attribute id
    pk, pa = pk[order], pa[order]
    first = np.ones(pk.size, dtype=bool)
    first[1:] = pk[1:] != pk[:-1]
    table[pk[first]] = pa[first]
    return table
