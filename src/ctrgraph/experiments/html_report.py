"""One self-contained HTML page (``OUT/report.html``) for a ``ctrgraph reproduce`` output directory.

Reads the manifest ``OUT/reproduce.json`` (paths in it are relative to ``OUT``) and renders, grouped
by paper: a table of contents, then per study item its caption, command, result tables, figures
(PNG files embedded as base64 ``data:`` URIs) and runs (each linking to its resolved config); then
the resolved configs (YAML in collapsible ``<details>``) and the environment. The page loads
nothing from outside itself (a Content-Security-Policy forbids it), so it can be moved or e-mailed
alone. Every string taken from the manifest or a CSV file is escaped with ``html.escape``.

A small inline script sets, after ``load``, ``data-images-loaded`` / ``data-images-total`` /
``data-tables`` on ``<body>`` (used by the headless-browser test) and opens a config's
``<details>`` when its anchor is followed.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

MANIFEST = "reproduce.json"
REPORT = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_COLUMNS = ("label", "dataset", "seed", "status", "test_auc", "key", "dir")
RUN_HEADERS = {"label": "run", "dataset": "dataset", "seed": "seed", "status": "status",
               "test_auc": "test AUC", "key": "config", "dir": "run directory"}
_NUMERIC = re.compile(r"^[+\-−]?\d[\d,]*(\.\d+)?(e[+\-]?\d+)?%?(\s*±\s*\d[\d,]*(\.\d+)?(e[+\-]?\d+)?%?)?$", re.IGNORECASE)

CSS = """
:root{--fg:#1d2430;--muted:#5b6472;--line:#cfd5de;--zebra:#f4f6f9;--head:#e8ecf2;--accent:#2456a6}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:#fff}
main{max-width:1100px;margin:0 auto;padding:24px 20px 60px}
h1{font-size:1.7em;margin:.2em 0 .1em}
h2{font-size:1.35em;margin:1.8em 0 .3em;padding-bottom:.2em;border-bottom:2px solid var(--line)}
h3{font-size:1.12em;margin:0 0 .4em}
a{color:var(--accent)}
.meta,.source,.doc{color:var(--muted);font-size:.88em}
section.item{margin:1.2em 0 2em;padding:14px 16px;border:1px solid var(--line);border-radius:6px}
.caption{white-space:pre-line;margin:.3em 0 .6em}
pre{background:var(--zebra);border:1px solid var(--line);border-radius:4px;padding:8px 10px;overflow-x:auto;font-size:.86em;margin:.4em 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.table-wrap{overflow-x:auto;margin:.6em 0 1em}
table{border-collapse:collapse;font-size:.9em}
caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0 4px}
th,td{border:1px solid var(--line);padding:4px 9px;vertical-align:top;text-align:left}
thead th{background:var(--head)}
tbody tr:nth-child(even){background:var(--zebra)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:.8em 0 1.2em}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:.88em;margin-top:4px}
.missing{color:#9a1c1c;background:#fdecec;border:1px solid #f1b5b5;border-radius:4px;padding:6px 10px}
.status{display:inline-block;padding:0 6px;border-radius:3px;font-size:.85em}
.status-trained{background:#e3f3e6}.status-reused{background:#e6edf8}.status-resumed{background:#fbf1dc}
nav.toc ul{margin:.2em 0;padding-left:1.3em}
details{margin:.4em 0;border:1px solid var(--line);border-radius:4px;padding:4px 10px}
details[open]{background:#fbfcfd}
summary{cursor:pointer;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.used-by{color:var(--muted);font-size:.85em}
@media print{details>*{display:block}section.item{break-inside:avoid}}
"""

SCRIPT = """
(function(){
  function openTarget(){
    var id=decodeURIComponent(location.hash.slice(1)); if(!id){return;}
    var el=document.getElementById(id);
    if(el&&el.tagName==='DETAILS'){el.open=true;}
  }
  window.addEventListener('hashchange',openTarget);
  window.addEventListener('load',function(){
    var imgs=document.images, ok=0;
    for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
    var b=document.body;
    b.setAttribute('data-images-total',String(imgs.length));
    b.setAttribute('data-images-loaded',String(ok));
    b.setAttribute('data-tables',String(document.getElementsByTagName('table').length));
    b.setAttribute('data-report-ready','1');
    openTarget();
  });
})();
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


def _e(value: Any) -> str:
    """Escaped display text of a manifest value (``None`` -> an em dash)."""
    if value is None:
        return "\u2014"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    return escape(str(value), quote=True)


def anchor(text: str) -> str:
    """An id / fragment-safe form of ``text`` (letters, digits, ``_.:-``; anything else -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.:\-]", "_", str(text)) or "_"


def item_anchor(item: dict) -> str:
    """The id of an item's section: ``<paper>-<name>``."""
    return anchor(f"{item.get('paper', '')}-{item.get('name', '')}")


def config_anchor(key: str) -> str:
    """The id of a run key's config ``<details>``: ``cfg-<key>``."""
    return anchor(f"cfg-{key}")


def _cell(value: Any, tag: str = "td", numeric: bool = True) -> str:
    num = numeric and tag == "td" and isinstance(value, (int, float, str)) and _NUMERIC.match(str(value).strip())
    cls = ' class="num"' if num else ""
    return f"<{tag}{cls}>{_e(value)}</{tag}>"


def _table(columns: list, rows: list, caption: str | None = None, cls: str = "data", numeric: bool = True) -> str:
    out = [f'<div class="table-wrap"><table class="{cls}">']
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>" + "".join(_cell(c, "th") for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        cells = list(row) if isinstance(row, (list, tuple)) else [row]
        out.append("<tr>" + "".join(_cell(c, numeric=numeric) for c in cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _inside(root: Path, rel: Any) -> Path | None:
    """``root/rel`` when ``rel`` is a relative path staying inside ``root``, else None."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return None
    base = root.resolve()
    p = (base / rel).resolve()
    return p if p == base or base in p.parents else None


def _missing(what: str, rel: Any, why: str) -> str:
    return f'<p class="missing">{_e(what)} missing: <code>{_e(rel)}</code> ({_e(why)})</p>'


def _read_csv(path: Path) -> tuple[list, list]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])


def _result_table(t: dict, root: Path) -> str:
    """One result table: ``columns``/``rows`` from the manifest, else read from its ``csv`` file."""
    title = t.get("title")
    sources = [f"<code>{_e(t[k])}</code>" for k in ("md", "csv") if t.get(k)]
    src = f'<p class="source">files: {", ".join(sources)}</p>' if sources else ""
    columns, rows = t.get("columns"), t.get("rows")
    if columns is None or rows is None:
        path = _inside(root, t.get("csv"))
        if path is None or not path.is_file():
            head = f"<h4>{_e(title)}</h4>" if title else ""
            return head + _missing("Table", t.get("csv"), "no rows in the manifest and no CSV file") + src
        try:
            columns, rows = _read_csv(path)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            return _missing("Table", t.get("csv"), f"unreadable: {exc}") + src
    return _table(list(columns), list(rows), title, cls="data result") + src


def _figure(fig: dict, root: Path) -> str:
    """One figure: the PNG embedded as a data URI, or a visible note when it cannot be read."""
    title, rel = fig.get("title"), fig.get("png")
    path = _inside(root, rel)
    if path is None:
        body = _missing("Figure", rel, "not a path inside the output directory")
    elif not path.is_file():
        body = _missing("Figure", rel, "file not found")
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            data, body = b"", _missing("Figure", rel, f"unreadable: {exc}")
        else:
            if not data.startswith(PNG_SIGNATURE):
                body = _missing("Figure", rel, "not a PNG file")
            else:
                uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                body = f'<img src="{uri}" alt="{_e(title or rel)}">'
    cap = f"<figcaption>{_e(title)} <span class=\"source\">(<code>{_e(rel)}</code>)</span></figcaption>" if title else ""
    return f'<figure class="figure">{body}{cap}</figure>'


def _runs_table(runs: list, configs: dict) -> str:
    """The runs of an item; the ``key`` cell links to ``#cfg-<key>`` when that config is listed."""
    extra = [k for r in runs if isinstance(r, dict) for k in r if k not in RUN_COLUMNS]
    cols = list(RUN_COLUMNS) + list(dict.fromkeys(extra))
    out = ['<div class="table-wrap"><table class="runs"><caption>Runs</caption><thead><tr>',
           "".join(f"<th>{_e(RUN_HEADERS.get(c, c))}</th>" for c in cols), "</tr></thead><tbody>"]
    for r in runs:
        r = r if isinstance(r, dict) else {"label": r}
        cells = []
        for c in cols:
            v = r.get(c)
            if c == "key" and v is not None:
                text = f"<code>{_e(v)}</code>"
                if str(v) in configs:
                    text = f'<a href="#{_e(config_anchor(v))}">{text}</a>'
                cells.append(f"<td>{text}</td>")
            elif c == "status" and v is not None:
                cells.append(f'<td><span class="status status-{_e(anchor(v))}">{_e(v)}</span></td>')
            elif c == "dir" and v is not None:
                cells.append(f"<td><code>{_e(v)}</code></td>")
            elif isinstance(v, float):
                cells.append(f'<td class="num">{v:.4f}</td>')
            else:
                cells.append(_cell(v))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _item(item: dict, root: Path, configs: dict, sid: str) -> str:
    out = [f'<section class="item" id="{_e(sid)}">', f"<h3>{_e(item.get('title') or item.get('name'))}</h3>"]
    meta = [f"item <code>{_e(item.get('paper'))} {_e(item.get('name'))}</code>"]
    if item.get("updated"):
        meta.append(f"updated {_e(item['updated'])}")
    out.append(f'<p class="meta">{" · ".join(meta)}</p>')
    if item.get("caption"):
        out.append(f'<p class="caption">{_e(item["caption"])}</p>')
    if item.get("command"):
        out.append(f'<pre class="command"><code>{_e(item["command"])}</code></pre>')
    for t in item.get("tables") or []:
        out.append(_result_table(t if isinstance(t, dict) else {}, root))
    for fig in item.get("figures") or []:
        out.append(_figure(fig if isinstance(fig, dict) else {"png": fig}, root))
    if item.get("runs"):
        out.append(_runs_table(list(item["runs"]), configs))
    out.append("</section>")
    return "".join(out)


def _dump_config(cfg: Any) -> str:
    try:
        return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, default_flow_style=False)
    except yaml.YAMLError:
        return json.dumps(cfg, indent=2, ensure_ascii=False, default=str)


def _configs(configs: dict, used_by: dict[str, list[tuple[str, str]]]) -> str:
    out = ['<section class="configs" id="configs"><h2>Resolved configs</h2>']
    if not configs:
        out.append('<p class="meta">none listed</p>')
    for key, cfg in configs.items():
        users = used_by.get(str(key), [])
        links = ", ".join(f'<a href="#{_e(sid)}">{_e(label)}</a>' for sid, label in users)
        used = f' <span class="used-by">used by {links}</span>' if links else ""
        out.append(f'<details id="{_e(config_anchor(key))}"><summary>{_e(key)}</summary>{used}'
                   f'<pre class="config"><code>{_e(_dump_config(cfg))}</code></pre></details>')
    out.append("</section>")
    return "".join(out)


def _environment(env: Any) -> str:
    env = env if isinstance(env, dict) else {}
    out = ['<section class="environment" id="environment"><h2>Environment</h2>']
    if env:
        out.append(_table(["key", "value"], [[k, v] for k, v in env.items()], None, cls="env", numeric=False))
    else:
        out.append('<p class="meta">not recorded</p>')
    out.append("</section>")
    return "".join(out)


def render_report(manifest: dict, root: Path) -> str:
    """The HTML text of the report for ``manifest`` (the parsed ``reproduce.json``) whose relative
    paths (tables, figures) are resolved against the output directory ``root``."""
    root = Path(root)
    papers = manifest.get("papers") or {}
    items = [it for it in (manifest.get("items") or []) if isinstance(it, dict)]
    configs = manifest.get("configs") or {}
    order = list(papers) + [p for p in dict.fromkeys(str(it.get("paper")) for it in items) if p not in papers]

    seen: dict[str, int] = {}
    sids: list[str] = []
    for it in items:  # unique section ids: <paper>-<name>, then -2, -3 ... on a clash
        base = item_anchor(it)
        seen[base] = seen.get(base, 0) + 1
        sids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    used_by: dict[str, list[tuple[str, str]]] = {}
    for it, sid in zip(items, sids):
        for r in it.get("runs") or []:
            if isinstance(r, dict) and r.get("key") is not None:
                lst = used_by.setdefault(str(r["key"]), [])
                if sid not in (s for s, _ in lst):
                    lst.append((sid, f"{it.get('paper')} {it.get('name')}"))

    toc, body = ['<nav class="toc" id="contents"><h2>Contents</h2><ul>'], []
    for pid in order:
        info = papers.get(pid) if isinstance(papers.get(pid), dict) else {}
        ptitle = info.get("title") or pid
        mine = [(it, sid) for it, sid in zip(items, sids) if str(it.get("paper")) == pid]
        toc.append(f'<li><a href="#{_e(anchor("paper-" + pid))}">{_e(ptitle)}</a><ul>')
        toc.extend(f'<li><a href="#{_e(sid)}">{_e(it.get("title") or it.get("name"))}</a></li>' for it, sid in mine)
        toc.append("</ul></li>")
        body.append(f'<section class="paper" id="{_e(anchor("paper-" + pid))}"><h2>{_e(ptitle)}</h2>')
        if info.get("doc"):
            body.append(f'<p class="doc">notes: <code>{_e(info["doc"])}</code></p>')
        if not mine:
            body.append('<p class="meta">no items reproduced yet</p>')
        body.extend(_item(it, root, configs, sid) for it, sid in mine)
        body.append("</section>")
    toc.append('<li><a href="#configs">Resolved configs</a></li><li><a href="#environment">Environment</a></li></ul></nav>')

    head_meta = [f"ctrgraph {_e(manifest.get('ctrgraph'))}"]
    if manifest.get("updated"):
        head_meta.append(f"updated {_e(manifest['updated'])}")
    head_meta.append(f"{len(items)} item{'s' if len(items) != 1 else ''}")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>ctrgraph reproduce report</title>",
        f"<style>{CSS}</style></head>\n<body><main>",
        "<header><h1>ctrgraph reproduce report</h1>",
        f'<p class="meta">{" · ".join(head_meta)}</p></header>',
        "".join(toc), "\n", "\n".join(body), "\n",
        _configs(configs if isinstance(configs, dict) else {}, used_by),
        _environment(manifest.get("environment")),
        f"</main><script>{SCRIPT}</script></body></html>\n",
    ])


def _check(manifest: Any, path: Path) -> dict:
    """``manifest`` when its shape is usable, else ConfigError naming ``path``."""
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path}: the manifest must be a JSON object, got {type(manifest).__name__}")
    for key, kind in (("items", list), ("papers", dict), ("configs", dict), ("environment", dict)):
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            raise ConfigError(f"{path}: '{key}' must be a JSON {'array' if kind is list else 'object'}")
    for i, it in enumerate(manifest.get("items") or []):
        if not isinstance(it, dict):
            raise ConfigError(f"{path}: items[{i}] must be a JSON object")
        for key in ("tables", "figures", "runs"):
            if it.get(key) is not None and not isinstance(it[key], list):
                raise ConfigError(f"{path}: items[{i}].{key} must be a JSON array")
    return manifest


def write_report(root: Path) -> Path:
    """Render ``root/reproduce.json`` into ``root/report.html`` (written atomically); return its path.
    A missing or malformed manifest raises ConfigError naming the file."""
    root = Path(root)
    path = root / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found (run `ctrgraph reproduce` into {root} first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the manifest: {exc}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON: {exc}") from None
    html_text = render_report(_check(manifest, path), root)
    out = root / REPORT
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html_text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
