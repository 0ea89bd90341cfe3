"""qc_report.html: one self-contained page (inline SVG, no JavaScript, no plotting library)
that a person opens in a browser: flag rates per table, value distributions of the concepts
before and after cleaning, events per patient."""
from __future__ import annotations

import html

import numpy as np

W, H = 420, 140  # one chart's size in px


def _bars(series: list[tuple[str, np.ndarray]], labels: list[str], title: str,
          log: bool = False) -> str:
    """Grouped vertical bars; `series` = (css color, heights) over the same x labels."""
    n = len(labels)
    if n == 0:
        return ""
    top = max(float(np.max(h)) for _, h in series) or 1.0
    scale = (lambda x: np.log10(1 + x) / np.log10(1 + top)) if log else (lambda x: x / top)
    bw = (W - 40) / n
    parts = [f'<svg width="{W}" height="{H + 30}" role="img"><title>{html.escape(title)}</title>']
    for k, (color, heights) in enumerate(series):
        for i, h in enumerate(heights):
            if h <= 0:
                continue
            bh = scale(float(h)) * H
            x = 30 + i * bw + k * bw / len(series)
            parts.append(f'<rect x="{x:.1f}" y="{H - bh:.1f}" width="{bw / len(series):.1f}" '
                         f'height="{bh:.1f}" fill="{color}"><title>{html.escape(labels[i])}: '
                         f'{h:g}</title></rect>')
    step = max(1, n // 6)
    for i in range(0, n, step):
        parts.append(f'<text x="{30 + i * bw:.1f}" y="{H + 14}" font-size="9">'
                     f'{html.escape(labels[i][:12])}</text>')
    parts.append(f'<text x="30" y="{H + 28}" font-size="10">{"log scale" if log else ""}'
                 f'</text></svg>')
    return "".join(parts)


def render(summary: dict, cleaning: dict, hist: np.ndarray, concepts: list[str],
           ranges: list[tuple[float, float]], n_events: np.ndarray, failures: list[str]) -> str:
    sections = [f"<h1>QC report: {html.escape(summary['version'])}</h1>",
                f"<p>{summary['n_patients']:,} patients, {summary['n_events']:,} events. "
                "Rules flag events (bit in <code>flags</code>); only rules listed in DROP_RULES "
                "drop them. Full numbers: <code>qc_report.json</code>.</p>"]
    if failures:
        items = "".join(f"<li>{html.escape(f)}</li>" for f in failures)
        sections.append(f'<h2 style="color:#b00">Limits exceeded</h2><ul>{items}</ul>')
    rules = list(cleaning["rules"])
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{v['events']:,}</td>"
        + "".join(f"<td>{v['flag_rate'][r]:.2%}</td>" for r in rules)
        + f"<td>{v['drop_rate']:.2%}</td></tr>"
        for t, v in cleaning["tables"].items())
    sections.append("<h2>Flag rates per table</h2><table><tr><th>table</th><th>events</th>"
                    + "".join(f"<th>{r}</th>" for r in rules)
                    + f"<th>dropped</th></tr>{rows}</table>")
    sections.append("<h2>Concept values before (grey) and after (blue) cleaning</h2>"
                    "<p>Outer bins hold values below / above the plausible range.</p>"
                    '<div style="display:flex;flex-wrap:wrap">')
    for c, name in enumerate(concepts):
        if hist[c, :, 0].sum() == 0:
            continue
        lo, hi = ranges[c]
        edges = np.linspace(lo, hi, hist.shape[1] - 1)
        labels = [f"<{lo:g}"] + [f"{e:.3g}" for e in edges[:-1]] + [f">{hi:g}"]
        sections.append(f"<div><h3>{html.escape(name)}</h3>"
                        + _bars([("#bbb", hist[c, :, 0]), ("#3465a4", hist[c, :, 1])], labels,
                                name, log=True) + "</div>")
    sections.append("</div>")
    if len(n_events):
        counts, edges = np.histogram(np.log10(np.maximum(n_events, 1)), bins=30)
        labels = [f"{10 ** e:.0f}" for e in edges[:-1]]
        sections.append("<h2>Events per patient</h2>"
                        + _bars([("#3465a4", counts)], labels, "events per patient (log10 bins)"))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>QC "
            f"{html.escape(summary['version'])}</title><style>{style}</style></head><body>"
            + "\n".join(sections) + "</body></html>")
