"""The report's page: what :func:`pipelines.analysis.report.build_report` wrote (:class:`Report`, its figures and
tables) and its rendering as one self-contained ``index.html`` (:func:`render_html`). Nothing here queries or draws:
the page only lays out what the report computed."""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["MAX_HTML_ROWS", "FigureResult", "Report", "TableResult", "render_html"]

MAX_HTML_ROWS = 400
"""Rows of a table shown in the page; the CSV under ``tables/`` has all of them."""


@dataclass
class FigureResult:
    """One written figure: files relative to the output directory, and what the page says about it."""

    stem: str
    title: str
    caption: str
    png: str
    svg: str
    status: str = "ok"  # ok | placeholder | error
    message: str = ""


@dataclass
class TableResult:
    """One table of the page (an analysis or a summary); ``frame`` None when it failed."""

    name: str
    title: str
    description: str
    frame: pd.DataFrame | None
    csv: str | None = None
    error: str | None = None
    note: str = ""


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    index: Path
    figures: list[FigureResult] = field(default_factory=list)
    tables: list[TableResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        """Every figure file (PNG and SVG), in page order."""
        return [self.out_dir / p for f in self.figures for p in (f.png, f.svg)]


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em 1em; }
.error { background: #fde2e4; border: 1px solid #b00020; padding: 0.5em 1em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figure.placeholder img { border: 1px dashed #888; } figure.figure-error img { border: 2px solid #b00020; }
figcaption { font-size: 0.9em; color: #333; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; } th { background: #f4f4f4; }
td.text { text-align: left; } .meta td, .meta th { text-align: left; }
code { background: #f4f4f4; padding: 0 3px; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-failed', bad.map(function (i) { return i.getAttribute('src'); }).join(' '));
  document.body.setAttribute('data-images-ok', bad.length === 0 && imgs.length > 0 ? 'true' : 'false');
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> tuple[str, bool]:
    """Formatted cell text and whether it is text (left-aligned)."""
    if value is None or (isinstance(value, float) and value != value):
        return "", False
    if isinstance(value, bool):
        return str(value).lower(), True
    if isinstance(value, float):
        return f"{value:.4g}", False
    if isinstance(value, int):
        return str(value), False
    try:
        if pd.isna(value):
            return "", False
    except (TypeError, ValueError):
        pass
    return str(value), True


def _html_table(frame: pd.DataFrame, *, max_rows: int = MAX_HTML_ROWS, cls: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.head(max_rows).itertuples(index=False):
        cells = []
        for v in row:
            text, is_text = _cell(v.item() if hasattr(v, "item") else v)
            cells.append(f'<td class="text">{_e(text)}</td>' if is_text else f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(items: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td class='text'>{_e(v)}</td></tr>" for k, v in items)
    return f"<table class='meta'>{rows}</table>"


def render_html(report: Report) -> str:
    """The page: provenance, figures (PNG shown, SVG linked), tables; every text escaped."""
    meta = report.meta
    sel = meta["selection"]  # the report's Selection: weights, datasets, generators, output, interpolation
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>lee report: {_e(meta['results'])}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        "</head>",
        "<body data-images-ok='pending'>",
        "<h1>lee report: learned equivariance (Lie derivative, LEE)</h1>",
        _kv_table(
            [
                ("results root", meta["results"]),
                ("generated (UTC)", meta["generated"]),
                ("weights", f"{sel.weights}: {sel.label}"),
                ("output", f"{sel.output}: {sel.output_label}"),
                (
                    "interpolation",
                    f"{sel.interpolation} (liecore's image interpolant; the alternative metrics use their own)",
                ),
                (
                    "output configurations in the results",
                    "; ".join(
                        f"{c['label']}: {c['models']} model{'s' if c['models'] != 1 else ''}"
                        + (" (shown)" if c["shown"] else "")
                        for c in meta.get("configs", [])
                    )
                    or "none",
                ),
                ("datasets", ", ".join(sel.datasets) or "all"),
                ("generators", ", ".join(sel.generators) or "all"),
                ("one-dataset figures drawn on", meta.get("primary_dataset") or "(no LEE data)"),
                ("failed units (excluded)", meta["failed_units"]),
                ("unreadable files (skipped)", len(meta.get("damaged_files", []))),
            ]
        ),
    ]
    damaged = meta.get("damaged_files", [])
    if damaged:
        shown = "".join(f"<li><code>{_e(f)}</code>: {_e(why)}</li>" for f, why in damaged[:20])
        more = f"<li>... and {len(damaged) - 20} more</li>" if len(damaged) > 20 else ""
        parts.append(
            f"<div class='warn'><p>{len(damaged)} data file(s) of this root cannot be read and are left "
            f"out of every figure and table (<code>lee verify -r {_e(meta['results'])}</code> lists them; "
            f"<code>lee eval</code> with the sweep's flags redoes their units):</p><ul>{shown}{more}</ul></div>"
        )
    if sel.weights == "random":
        parts.append(
            "<p class='warn'>These are <b>random-init</b> (untrained) networks: their LEE measures the "
            "architecture at initialization, not learned equivariance, and the accuracy axes show the catalog "
            "accuracy of the pretrained checkpoints, not of the weights evaluated here.</p>"
        )
    elif sel.weights == "any":
        parts.append(
            "<p class='warn'>Pretrained and random-init results are shown together (--weights-filter any); "
            "random-init points are hollow.</p>"
        )
    elif meta["weights_available"].get("random") and not meta["weights_available"].get("pretrained"):
        parts.append(
            "<p class='warn'>This root has only random-init results "
            f"({meta['weights_available']['random']} models); this pretrained report is empty. "
            f"Use <code>lee report --results {_e(meta['results'])} --weights-filter random</code>.</p>"
        )
    randoms = meta.get("random_models") or {}
    if randoms.get("fallback") or randoms.get("asked"):

        def names(models: list[str]) -> str:
            return _e(", ".join(models[:20]) + (f" ... (+{len(models) - 20})" if len(models) > 20 else ""))

        text = []
        if randoms.get("fallback"):
            text.append(
                f"<b>{len(randoms['fallback'])} model(s) ran on random init because the hub was offline or "
                f"unreachable</b> (<code>--weights auto</code> fell back; their pretrained weights were not "
                f"cached): {names(randoms['fallback'])}. Rerun <code>lee eval</code> online (or with the "
                "weights in the Hugging Face cache) for their pretrained results."
            )
        if randoms.get("asked"):
            text.append(
                f"{len(randoms['asked'])} model(s) have random-init results only (random init asked for, or "
                f"random-init specs): {names(randoms['asked'])}."
            )
        where = (
            "They are not in this pretrained report."
            if sel.weights == "pretrained"
            else "Their LEE measures untrained networks."
        )
        parts.append(f"<p class='warn'>Random-init models in this root: {' '.join(text)} {where}</p>")
    configs = meta.get("configs", [])
    others: dict[str, list[dict[str, Any]]] = {}  # command -> the configurations it shows
    for c in configs:
        if not c["shown"]:
            others.setdefault(c["command"], []).append(c)
    if others:
        cmds = "; ".join(
            f"{_e(' and '.join(c['label'] for c in cs))} ({max(c['models'] for c in cs)} models): "
            f"<code>{_e(cmd)}</code>"
            for cmd, cs in others.items()
        )
        if not any(c["shown"] for c in configs):
            parts.append(
                f"<p class='warn'>This root has no results with output {_e(sel.output)} and "
                f"{_e(sel.interpolation)} interpolation for this selection; it has {cmds}.</p>"
            )
        else:
            parts.append(
                f"<p class='warn'>Only output {_e(sel.output)} with {_e(sel.interpolation)} interpolation "
                f"is shown; the results also have {cmds}.</p>"
            )
    parts.append("<h2>Figures</h2>")
    for f in report.figures:
        cls = {"ok": "", "placeholder": "placeholder", "error": "figure-error"}[f.status]
        note = ""
        if f.status == "placeholder":
            note = f"<br><b>No data:</b> {_e(f.message)}"
        elif f.status == "error":
            note = f"<br><b class='error'>Figure failed:</b> {_e(f.message)}"
        parts.append(
            f"<figure id='{_e(f.stem)}' class='{cls}'><img src='{_e(f.png)}' alt='{_e(f.title)}'>"
            f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}{note} "
            f"[<a href='{_e(f.png)}'>PNG</a>] [<a href='{_e(f.svg)}'>SVG</a>]</figcaption></figure>"
        )
    parts.append("<h2>Tables</h2>")
    for t in report.tables:
        parts.append(f"<h3 id='table-{_e(t.name)}'>{_e(t.title)}</h3>")
        if t.description:
            parts.append(f"<p>{_e(t.description)}</p>")
        if t.error:
            parts.append(f"<p class='error'>{_e(t.error)}</p>")
            continue
        if t.note:
            parts.append(f"<p class='warn'>{_e(t.note)}</p>")
        assert t.frame is not None
        if t.frame.empty:
            why = t.frame.attrs.get("note") or ""
            parts.append(f"<p class='warn'>No rows for this selection. {_e(why)}</p>")
            continue

        more = f" Showing {MAX_HTML_ROWS} of {len(t.frame)} rows." if len(t.frame) > MAX_HTML_ROWS else ""
        parts.append(_html_table(t.frame))
        parts.append(f"<p>{len(t.frame)} rows.{_e(more)} CSV: <a href='{_e(t.csv)}'>{_e(t.csv)}</a></p>")
    parts.append("<h2>Provenance</h2><h3>Sweeps</h3>")
    sweeps: pd.DataFrame = meta["sweeps"]
    parts.append(_html_table(sweeps, cls="meta") if not sweeps.empty else "<p>No completed units in the selection.</p>")
    parts.append("<h3>Package versions of the results (runs.package_versions)</h3>")
    parts.append(_kv_table((k, ", ".join(v)) for k, v in meta["result_versions"].items()) or "<p>none</p>")
    parts.append("<h3>Package versions of this report</h3>")
    parts.append(_kv_table(meta["report_versions"].items()))
    parts.append(f"<p>Command: <code>{_e(meta.get('command', ''))}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
