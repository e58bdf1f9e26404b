"""What every report shares: the :class:`Report` it returns, PNG figures from matplotlib, and HTML and
Markdown tables (:mod:`sealq.analysis.report` for loop, eval and ReST-EM runs,
:mod:`sealq.analysis.continual_report` for continual runs).

A report is one self-contained HTML file (figures as PNG data URIs) and a Markdown twin that links the
same figures as ``{stem}_files/NAME.png`` (:meth:`Report.write` fills in the stem and writes the PNGs).
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Report", "png", "pyplot", "html_table", "html_img", "html_page", "md_table", "FIGURE_DIR"]

#: the placeholder the Markdown uses for its figures' folder (:meth:`Report.write` replaces it)
FIGURE_DIR = "{stem}_files"

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
          "vertical-align:top;text-align:left}th{background:#f3f3f3}.pair{display:flex;gap:1em}.pair>div{flex:1}"
          "pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em;font-size:13px}img.figure{max-width:100%}")
_SCRIPT = ("window.addEventListener('load',function(){var n=0;document.querySelectorAll('img.figure')"
           ".forEach(function(i){if(i.complete&&i.naturalWidth>0)n++});document.body.dataset.figuresLoaded=n;});")


@dataclass
class Report:
    """A rendered report: HTML text, Markdown text, and the figures (name -> PNG bytes)."""

    html: str
    markdown: str
    figures: dict = field(default_factory=dict)
    #: for a run that is not done: its status in words and how to continue it (the report says it too)
    note: str | None = None

    def write(self, html_path: Path) -> tuple[Path, Path]:
        """Write ``html_path``, ``html_path.with_suffix('.md')`` and the Markdown's PNGs beside it."""
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(self.html, encoding="utf-8")
        md = html_path.with_suffix(".md")
        fig_dir = html_path.parent / f"{html_path.stem}_files"
        fig_dir.mkdir(exist_ok=True)
        for name, data in self.figures.items():
            (fig_dir / f"{name}.png").write_bytes(data)
        md.write_text(self.markdown.replace(FIGURE_DIR, fig_dir.name), encoding="utf-8")
        return html_path, md


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def html_table(head, rows) -> str:
    """An HTML table; every cell is escaped."""
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def html_img(data: bytes, alt: str) -> str:
    """A PNG embedded as a data URI (``img.figure``: the page counts the figures that loaded)."""
    b64 = base64.b64encode(data).decode()
    return f'<figure><img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"></figure>'


def html_page(title: str, body: list[str]) -> str:
    """The self-contained page around ``body`` (HTML fragments, already escaped)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>{''.join(body)}</body></html>")


def md_table(head, rows) -> str:
    """A Markdown table; ``|`` and newlines in cells are escaped."""
    def esc(x):
        return str(x).replace("|", "\\|").replace("\n", " ")

    return "\n".join(["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]) + "\n"
