from collections import Counter

from ctrgraph.data.lookups import attribute_table


def test_attribute_table_equals_brute_force(planted):
    t = attribute_table(planted, "item_id", "cat")
    tr = planted.split("train")
    pairs = Counter()
    for i, c in zip(tr["item_id"], tr["cat"]):  # brute-force reference
        pairs[(int(i), int(c))] += 1
    for row_i, row_c in zip(tr["hist_item_id"], tr["hist_cat"]):
        for i, c in zip(row_i, row_c):
            if i:
                pairs[(int(i), int(c))] += 1
    for i in range(2, len(t)):
        cand = [(-n, c) for (k, c), n in pairs.items() if k == i]
        expect = min(cand)[1] if cand else 1
        assert t[i] == expect, i
    assert t[0] == 0
