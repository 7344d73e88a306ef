"""``StudyReport``: sections of text, figures and tables rendered into one self-contained HTML file.

The file opens offline: CSS is inline, images are ``data:`` URIs, no scripts, no web fonts. All text
(titles, site names, covariate names, table cells) is HTML-escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

import nordfed
from nordfed.reports.plots import CSS_PX_PER_INCH, Chart
from nordfed.reports.tables import Cell, Table


@dataclass
class ReportMetadata:
    """Provenance shown in the header and the closing provenance table."""

    study: str = ""
    sites: list[str] = field(default_factory=list)
    #: sites of the study that this run did not use (``study run --sites``): named in the header, where a reader
    #: comparing two reports looks, not only in the provenance table
    sites_left_out: list[str] = field(default_factory=list)
    date: str = field(default_factory=lambda: date.today().isoformat())
    nordfed_version: str = nordfed.__version__
    #: algorithm name → version or "version (code hash)"
    algorithms: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Headline:
    label: str
    value: str
    detail: str = ""


@dataclass
class _Block:
    kind: str  # text | note | figure | table | metrics
    payload: Any
    caption: str = ""


@dataclass
class Section:
    title: str
    anchor: str
    intro: str = ""
    blocks: list[_Block] = field(default_factory=list)

    def add_text(self, text: str) -> Section:
        """Paragraphs separated by blank lines (plain text, escaped)."""
        self.blocks.append(_Block("text", [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]))
        return self

    def add_note(self, text: str) -> Section:
        """A highlighted remark (caveat, data warning)."""
        self.blocks.append(_Block("note", text))
        return self

    def add_figure(self, figure: Chart | Figure | bytes, caption: str = "", alt: str = "") -> Section:
        """A :class:`Chart`, a matplotlib ``Figure`` or PNG bytes, embedded as a data URI."""
        if isinstance(figure, Figure):
            figure = Chart.from_figure(figure, alt)
        elif isinstance(figure, bytes | bytearray):
            if not bytes(figure).startswith(b"\x89PNG"):
                raise ValueError("add_figure: bytes are not a PNG image")
            figure = Chart(bytes(figure), alt, dpi=CSS_PX_PER_INCH)  # unknown resolution: natural size
        elif not isinstance(figure, Chart):
            raise TypeError(f"add_figure: expected Chart, Figure or PNG bytes, got {type(figure).__name__}")
        self.blocks.append(_Block("figure", figure, caption))
        return self

    def add_figures(self, figures: Sequence[tuple[Chart, str]]) -> Section:
        """Several figures side by side (wrapping on narrow screens)."""
        self.blocks.append(_Block("figures", list(figures)))
        return self

    def add_table(self, table: Table, caption: str = "") -> Section:
        if not isinstance(table, Table):
            raise TypeError(f"add_table: expected a nordfed.reports.Table, got {type(table).__name__}")
        self.blocks.append(_Block("table", table, caption or table.caption))
        return self

    def add_metrics(self, metrics: Mapping[str, str] | Sequence[Headline]) -> Section:
        """A row of labelled key numbers (like the summary box, inside a section)."""
        items = [Headline(k, v) for k, v in metrics.items()] if isinstance(metrics, Mapping) else list(metrics)
        self.blocks.append(_Block("metrics", items))
        return self


def _slug(title: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("nordfed.reports", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class StudyReport:
    """Build a report section by section, then :meth:`write` one offline HTML file.

    ``add_figure``/``add_table``/``add_text``/``add_note`` on the report go to the latest section.
    """

    def __init__(self, title: str, subtitle: str = "", metadata: ReportMetadata | Mapping[str, Any] | None = None,
                 min_cell_count: int = 10, aggregates: bool = True) -> None:
        """``aggregates`` False: a page of patient-level numbers kept at the site (an MDT list), which says so
        in place of the disclosure-control box."""
        if min_cell_count < 1:
            raise ValueError("min_cell_count must be at least 1")
        self.title, self.subtitle = title, subtitle
        self.metadata = metadata if isinstance(metadata, ReportMetadata) else ReportMetadata(**dict(metadata or {}))
        self.min_cell_count = min_cell_count
        self.aggregates = aggregates
        self.headlines: list[Headline] = []
        self.sections: list[Section] = []
        self._anchors: set[str] = set()

    # -- building
    def add_headline(self, label: str, value: str, detail: str = "") -> StudyReport:
        """A headline number for the summary box at the top."""
        self.headlines.append(Headline(label, value, detail))
        return self

    def add_section(self, title: str, intro: str = "") -> Section:
        section = Section(title, _slug(title, self._anchors), intro)
        self.sections.append(section)
        return section

    def _current(self) -> Section:
        if not self.sections:
            raise ValueError("add a section first (report.add_section(title))")
        return self.sections[-1]

    def add_text(self, text: str) -> StudyReport:
        self._current().add_text(text)
        return self

    def add_note(self, text: str) -> StudyReport:
        self._current().add_note(text)
        return self

    def add_figure(self, figure: Chart | Figure | bytes, caption: str = "", alt: str = "") -> StudyReport:
        self._current().add_figure(figure, caption, alt)
        return self

    def add_table(self, table: Table, caption: str = "") -> StudyReport:
        self._current().add_table(table, caption)
        return self

    # -- rendering
    def _rendered_sections(self) -> tuple[list[dict[str, Any]], int]:
        out, suppressed = [], 0
        for s in self.sections:
            blocks = []
            for b in s.blocks:
                if b.kind == "table":
                    cells: list[list[Cell]] = b.payload.cells(self.min_cell_count)
                    suppressed += sum(c.suppressed for row in cells for c in row)
                    blocks.append({"kind": "table", "caption": b.caption, "columns": b.payload.columns,
                                   "cells": cells, "notes": b.payload.notes})
                elif b.kind == "figure":
                    blocks.append({"kind": "figure", "caption": b.caption, "src": b.payload.data_uri,
                                   "width": b.payload.css_width,
                                   "alt": b.payload.alt or b.caption, "notes": b.payload.notes,
                                   "suppressed": b.payload.suppressed})
                elif b.kind == "figures":
                    blocks.append({"kind": "figures", "figs": [
                        {"caption": cap, "src": ch.data_uri, "alt": ch.alt or cap, "notes": ch.notes,
                         "suppressed": ch.suppressed}
                        for ch, cap in b.payload]})
                else:
                    blocks.append({"kind": b.kind, "payload": b.payload})
            out.append({"title": s.title, "anchor": s.anchor, "intro": s.intro, "blocks": blocks})
        return out, suppressed

    def render(self) -> str:
        """The complete HTML document as a string."""
        sections, suppressed = self._rendered_sections()
        return _ENV.get_template("report.html").render(
            title=self.title, subtitle=self.subtitle, meta=self.metadata, headlines=self.headlines,
            sections=sections, suppressed=suppressed, m=self.min_cell_count, aggregates=self.aggregates)

    def write(self, path: str | Path) -> Path:
        """Render and write atomically (a temp file renamed into place: never a half-written report)."""
        target = Path(path)
        if not target.parent.is_dir():
            raise FileNotFoundError(f"report: directory {target.parent} does not exist")
        html = self.render()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(html)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
