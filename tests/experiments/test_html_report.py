"""report.html from a reproduce manifest: structure checked with the stdlib HTML parser (no browser)."""
from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ctrgraph.errors import ConfigError
from ctrgraph.experiments.html_report import render_report, write_report

PNG_SIG = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _png(path: Path, values) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4, 2.5), dpi=80)
    ax.bar(range(len(values)), values, color=["#4c72b0", "#dd8452", "#55a868"][: len(values)])
    ax.set_title("test AUC")
    fig.savefig(path, format="png")
    plt.close(fig)


def build_manifest(root: Path) -> dict:
    """Two papers, three items; one table with an HTML-looking cell, one PNG figure on disk."""
    _png(root / "dg-enn" / "table5.png", [0.8379, 0.8470])
    table5 = {"title": "Test AUC, mean ± std over seeds", "md": "dg-enn/table5.md", "csv": "dg-enn/table5.csv",
              "columns": ["variant", "runs", "test AUC", "RelaImpr"],
              "rows": [["PNN", "1", "0.8379 ± 0.0000", "+0.00%"], ["DG (all)", "1", "0.8470 ± 0.0000", "+2.69%"],
                       [EVIL, "1", "0.8400 ± 0.0000", "+0.80%"]]}
    table3 = {"title": "Table 3 & co", "md": "dg-enn/table3.md", "csv": "dg-enn/table3.csv",
              "columns": ["model", "AUC"], "rows": [["DIN", "0.80"]]}
    gfm = {"title": "GraphFM vs FM", "columns": ["model", "AUC", "logloss"],
           "rows": [["FM", "0.79", "0.45"], ["GraphFM", "0.81", "0.44"]]}
    runs5 = [{"label": "PNN", "dataset": "ml100k", "seed": 1, "key": "pnn-1a2b3c4d", "dir": "runs/pnn-1a2b3c4d-seed1",
              "status": "trained", "test_auc": 0.8379},
             {"label": "DG (all)", "dataset": "ml100k", "seed": 1, "key": "dg-pnn-9f8e7d6c",
              "dir": "runs/dg-pnn-9f8e7d6c-seed1", "status": "reused", "test_auc": 0.847}]
    return {
        "ctrgraph": "0.1.0", "updated": "2026-12-06T15:00:00",
        "environment": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "platform": "Linux-x86_64-test-box",
                        "cpu_count": 2, "cuda": None},
        "papers": {"dg-enn": {"title": "DG-ENN (Guo et al., KDD 2021)", "doc": "docs/dg-enn.md"},
                   "graphfm": {"title": "GraphFM (Li et al.)", "doc": "docs/graphfm.md"}},
        "items": [
            {"paper": "dg-enn", "name": "table5", "title": "Table 5: ablation of the graphs",
             "caption": "one seed on a 2-core CPU; epochs capped at 3", "command": "ctrgraph reproduce dg-enn table5 --seeds 1",
             "updated": "2026-12-06T15:00:00", "tables": [table5],
             "figures": [{"title": "Test AUC per variant", "png": "dg-enn/table5.png"}], "runs": runs5},
            {"paper": "dg-enn", "name": "table3", "title": "Table 3: main results", "caption": "c3",
             "command": "ctrgraph reproduce dg-enn table3", "tables": [table3], "figures": [], "runs": [runs5[0]]},
            {"paper": "graphfm", "name": "table2", "title": "Table 2: GraphFM", "caption": "c2",
             "command": "ctrgraph reproduce graphfm table2", "tables": [gfm], "figures": [],
             "runs": [{"label": "GraphFM", "dataset": "ml100k", "seed": 1, "key": "graphfm-00aa11bb",
                       "dir": "runs/graphfm-00aa11bb-seed1", "status": "resumed", "test_auc": 0.81}]},
        ],
        "configs": {
            "pnn-1a2b3c4d": {"data": {"name": "ml100k"}, "model": {"name": "pnn"}, "embedding": {"dim": 16},
                             "train": {"lr": 0.001, "seeds": [1, 2]}},
            "dg-pnn-9f8e7d6c": {"data": {"name": "ml100k"}, "model": {"name": "dg-pnn"}, "embedding": {"dim": 16}},
            "graphfm-00aa11bb": {"data": {"name": "ml100k"}, "model": {"name": "graphfm", "layers": 3}},
        },
    }


class Page(HTMLParser):
    """Collects tags, attributes, text, and per <table> its section id, class, header cells and body rows."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.counts: dict[str, int] = {}
        self.attrs: list[tuple[str, dict]] = []
        self.ids: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self.tables: list[dict] = []
        self.script = 0
        self._stack: list[tuple[str, dict]] = []
        self._cell: list[str] | None = None
        self._in_title = False

    def _section(self) -> str | None:
        for tag, a in reversed(self._stack):
            if tag == "section" and "item" in (a.get("class") or "").split():
                return a.get("id")
        return None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.attrs.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self.tables.append({"section": self._section(), "class": (a.get("class") or "").split(),
                                "head": [], "rows": 0})
        in_table = any(t == "table" for t, _ in self._stack)
        if in_table and tag == "tr" and any(t == "tbody" for t, _ in self._stack):
            self.tables[-1]["rows"] += 1
        if in_table and tag == "th" and any(t == "thead" for t, _ in self._stack):
            self._cell = []
        if tag == "title":
            self._in_title = True
        if tag == "script":
            self.script += 1
        if tag not in self.VOID:
            self._stack.append((tag, a))

    def handle_endtag(self, tag):
        if tag == "th" and self._cell is not None:
            self.tables[-1]["head"].append("".join(self._cell).strip())
            self._cell = None
        if tag == "title":
            self._in_title = False
        while self._stack:
            t, _ = self._stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


@pytest.fixture
def report(tmp_path):
    manifest = build_manifest(tmp_path)
    (tmp_path / "reproduce.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    path = write_report(tmp_path)
    return manifest, path, path.read_text(encoding="utf-8")


def test_report_structure(tmp_path, report):
    manifest, path, text = report
    assert path == tmp_path / "report.html"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file
    page = parse(text)
    assert page.counts.get("html") == 1
    assert page.title.strip()

    # one section per item, reachable from the table of contents
    item_ids = [f"{it['paper']}-{it['name']}" for it in manifest["items"]]
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for sid in item_ids:
        assert page.ids.count(sid) == 1
    sections = [a.get("id") for t, a in page.attrs if t == "section" and "item" in (a.get("class") or "").split()]
    assert sections == item_ids
    hrefs = [a["href"] for _, a in page.attrs if "href" in a]
    for sid in item_ids:
        assert f"#{sid}" in hrefs

    # result tables: header cells and row count as in the manifest, in order, inside their item's section
    for it, sid in zip(manifest["items"], item_ids):
        found = [t for t in page.tables if t["section"] == sid and "result" in t["class"]]
        assert len(found) == len(it["tables"])
        for got, want in zip(found, it["tables"]):
            assert got["head"] == want["columns"]
            assert got["rows"] == len(want["rows"])
        runs = [t for t in page.tables if t["section"] == sid and "runs" in t["class"]]
        assert len(runs) == 1 and runs[0]["rows"] == len(it["runs"])

    # images: embedded PNGs, byte-identical to the files
    imgs = [a for t, a in page.attrs if t == "img"]
    figs = [f for it in manifest["items"] for f in it["figures"]]
    assert len(imgs) == len(figs) == 1
    prefix = "data:image/png;base64,"
    for a, f in zip(imgs, figs):
        assert a["src"].startswith(prefix)
        data = base64.b64decode(a["src"][len(prefix):], validate=True)
        assert data.startswith(PNG_SIG)
        assert data == (tmp_path / f["png"]).read_bytes()

    # nothing points outside the page
    for tag, a in page.attrs:
        for key in ("src", "href"):
            if key in a:
                v = a[key]
                assert v.startswith("#") or v.startswith(prefix), (tag, key, v)
                if v.startswith("#"):
                    assert v[1:] in page.ids, f"dangling anchor {v}"
    assert "http://" not in text and "https://" not in text
    assert str(tmp_path) not in text
    assert page.counts.get("link", 0) == 0

    # each run links to its config; configs shown as YAML in <details>
    for key in manifest["configs"]:
        assert f"#cfg-{key}" in hrefs
        assert page.ids.count(f"cfg-{key}") == 1
    assert page.counts.get("details") == len(manifest["configs"])
    body = "".join(page.text)
    assert "lr: 0.001" in body and "dim: 16" in body and "name: pnn" in body

    # environment, papers, captions, commands
    assert "Linux-x86_64-test-box" in body and "2.13.0" in body
    for p in manifest["papers"].values():
        assert p["title"] in body and p["doc"] in body
    for it in manifest["items"]:
        assert it["caption"] in body and it["command"] in body and it["title"] in body

    # the HTML-looking cell is text, not markup: the only <script> is the page's own
    assert page.script == 1
    assert EVIL not in text and "&lt;script&gt;alert(" in text
    assert EVIL in body
    assert "Table 3 &amp; co" in text


def test_missing_manifest(tmp_path):
    with pytest.raises(ConfigError, match="reproduce.json"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"items": {"a": 1}}', '{"items": [3]}'])
def test_malformed_manifest(tmp_path, content):
    (tmp_path / "reproduce.json").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match="reproduce.json"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_missing_figure_is_a_visible_note(tmp_path):
    manifest = build_manifest(tmp_path)
    manifest["items"][1]["figures"] = [{"title": "Lost figure", "png": "dg-enn/gone.png"},
                                       {"title": "Escaping figure", "png": "../outside.png"}]
    (tmp_path / "reproduce.json").write_text(json.dumps(manifest), encoding="utf-8")
    text = write_report(tmp_path).read_text(encoding="utf-8")
    page = parse(text)
    notes = [a for t, a in page.attrs if "missing" in (a.get("class") or "").split()]
    assert len(notes) == 2
    body = "".join(page.text)
    assert "dg-enn/gone.png" in body and "missing" in body
    assert len([a for t, a in page.attrs if t == "img"]) == 1  # the present figure still shows


def test_render_minimal_manifest(tmp_path):
    """Optional keys may be absent; a paper without items and an item of an unlisted paper still render."""
    text = render_report({"papers": {"empty": {"title": "Nothing yet"}},
                          "items": [{"paper": "other", "name": "t1", "tables": [
                              {"title": "from csv", "csv": "t1.csv"}]}]}, tmp_path)
    page = parse(text)
    assert "Nothing yet" in "".join(page.text) and "other-t1" in page.ids
    assert [a for t, a in page.attrs if "missing" in (a.get("class") or "").split()]  # CSV absent: a note

    (tmp_path / "t1.csv").write_text("a,b\n1,<b>2</b>\n3,4\n", encoding="utf-8")
    page = parse(render_report({"items": [{"paper": "p", "name": "t1", "tables": [{"csv": "t1.csv"}]}]}, tmp_path))
    t = [t for t in page.tables if "result" in t["class"]]
    assert t and t[0]["head"] == ["a", "b"] and t[0]["rows"] == 2
    assert page.counts.get("b", 0) == 0
