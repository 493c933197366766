"""The leaderboard as one static, self-contained HTML page (no network: inline CSS and
script, system fonts), and its screenshot in headless Chromium.

Click a column's header to sort by it (again: the other way); click a defense to
expand its every cell, the worst case highlighted; `leaderboard.html#NAME` opens
defense NAME's cells on load.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path

from bench.contract.errors import BenchError
from bench.harness.reporting.board import Board, Entry, ordered_entries
from bench.harness.reporting.board_pages import (
    BYPASS_EXPLANATION,
    EXPLANATION,
    LADDER_EXPLANATION,
    bounded,
    break_text,
    fmt,
    ladder_table,
    plus_minus,
    protocol_lines,
    status_text,
    transfer_text,
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1d2430; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
#protocol { background: #f3f5f8; border-left: 4px solid #4a6fa5; padding: .5rem 1rem; font-size: .9rem; }
#protocol li { margin: .2rem 0; } code { font-size: .85em; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid #dde2ea; text-align: right; white-space: nowrap; }
th { background: #e8edf4; cursor: pointer; user-select: none; position: sticky; top: 0; white-space: normal;
     vertical-align: bottom; max-width: 7rem; }
th[data-order="asc"]::after { content: " ▲"; } th[data-order="desc"]::after { content: " ▼"; }
td.name, th.name { text-align: left; font-weight: 600; }
td.name { white-space: normal; min-width: 15rem; max-width: 24rem; } td.name small { font-weight: 400; }
.scroll { overflow-x: auto; }
td.status { text-align: left; } small { color: #5b6575; }
tr.expandable { cursor: pointer; } tr.expandable:hover { background: #f7f9fc; }
tr.expandable td.name::before { content: "▸ "; color: #8a94a6; } tr.expandable.open td.name::before { content: "▾ "; }
tr.flagged td.status { color: #b00020; font-weight: 600; }
tr.unranked td { color: #6b7384; }
table.cells { margin: .4rem 0 .8rem 1.5rem; } table.cells th:first-child { text-align: left; } table.cells th { cursor: default; position: static; max-width: none; }
td.worst { background: #ffe2a8; font-weight: 700; }
p.note { max-width: 70rem; font-size: .85rem; color: #3d4656; }
"""


SCRIPT = """
function missing(v) { return v === undefined || v === ""; }
function compare(a, b, type, descending) {
  if (missing(a) || missing(b)) { return missing(a) - missing(b); }
  const order = type === "num" ? Number(a) - Number(b) : a.localeCompare(b);
  return descending ? -order : order;
}
function sortBy(table, th, index) {
  const descending = th.dataset.order ? th.dataset.order === "asc" : th.dataset.first === "desc";
  table.querySelectorAll("thead th").forEach(h => { delete h.dataset.order; });
  th.dataset.order = descending ? "desc" : "asc";
  const key = body => body.querySelector("tr.main").children[index].dataset.value;
  const bodies = Array.from(table.querySelectorAll("tbody.entry"));
  bodies.sort((a, b) => compare(key(a), key(b), th.dataset.type, descending));
  bodies.forEach(body => table.appendChild(body));
}
function toggle(row) {
  const detail = row.nextElementSibling;
  if (detail && detail.classList.contains("detail")) { detail.hidden = !detail.hidden; row.classList.toggle("open"); }
}
document.querySelectorAll("table.board").forEach(table => {
  table.querySelectorAll("thead th").forEach((th, index) => th.addEventListener("click", () => sortBy(table, th, index)));
  table.querySelectorAll("tbody.entry tr.main").forEach(row => row.addEventListener("click", () => toggle(row)));
});
const opened = decodeURIComponent(location.hash.slice(1));
document.querySelectorAll("tbody.entry").forEach(body => {
  if (opened && body.dataset.name === opened) { toggle(body.querySelector("tr.main")); }
});
"""


def cell(value, text: str | None = None, css: str = "") -> str:
    """A table cell sorting by `value` (blank: missing, sorted last)."""
    shown = escape(text if text is not None else ("–" if value is None else str(value)))
    sort_value = "" if value is None else escape(str(value))
    css_attribute = f' class="{css}"' if css else ""
    return f'<td data-value="{sort_value}"{css_attribute}>{shown}</td>'


def header(label: str, kind: str = "num", first: str = "asc", css: str = "") -> str:
    extra = f' class="{css}"' if css else ""
    return f'<th data-type="{kind}" data-first="{first}"{extra}>{escape(label)}</th>'


def defense_rows(board: Board, entry: Entry, width: int) -> str:
    css = ["main", "expandable"] + (["flagged"] if entry.status == "over budget" else [])
    css += [] if entry.rank else ["unranked"]
    cells = [cell(entry.rank), f'<td class="name" data-value="{escape(entry.label)}">{escape(entry.label)}'
             f'<br><small>{escape(source_line(entry))}</small></td>']
    cost = entry.break_cost
    cells.append(cell(None if cost is None else round(cost, 6),
                      bounded(cost, not entry.complete, "≤", 2) + plus_minus(entry.break_interval, 2)))
    for g in board.generators:
        found = entry.breaks.get(g)
        cells.append(cell(None if found is None else found.position, break_text(found)))
    mean = entry.robust_dsr
    cells.append(cell(None if mean is None else round(mean, 6),
                      bounded(mean, not entry.complete, "≤") + plus_minus(entry.robust_interval)))
    cells.append(cell(entry.mean_dsr, fmt(entry.mean_dsr, 3)))
    cells.append(cell(entry.transfer["dsr"] if entry.transfer else None, transfer_text(entry.transfer)))
    b = entry.budget
    cells += [cell(b["linf_max"], fmt(b["linf_max"], 4)), cell(b["eps_declared"], fmt(b["eps_declared"], 3)),
              cell(b["l2_norm_mean"], fmt(b["l2_norm_mean"], 3)), cell(b["psnr_mean"], fmt(b["psnr_mean"], 2)),
              cell(b["ssim_mean"], fmt(b["ssim_mean"], 4)),
              cell(entry.status, status_text(entry), css="status")]
    main = f'<tr class="{" ".join(css)}">' + "".join(cells) + "</tr>"
    detail = f'<tr class="detail" hidden><td colspan="{width}">{cells_table(board, entry)}</td></tr>'
    return f'<tbody class="entry" data-name="{escape(entry.label)}">{main}{detail}</tbody>'


def source_line(entry: Entry) -> str:
    o = entry.origin
    parts = [f"{o.get('distribution') or '?'} {o.get('distribution_version') or ''}".strip()]
    if o.get("paper"):
        parts.append(o["paper"])
    return " · ".join(parts)


def cells_table(board: Board, entry: Entry) -> str:
    """Every cell of one defense: DSR and L2 per bypass and generator, the worst case
    of each generator highlighted."""
    found = {(c["generator"], c["bypass"], c["scenario"]): c for c in entry.cells}
    head = "<tr><th>bypass</th>" + "".join(f"<th>{escape(g)} DSR</th><th>{escape(g)} L2</th>"
                                           for g in board.generators) + "</tr>"
    rows = []
    for column in board.columns:
        tds = [f'<td class="name">{escape(column.label)}</td>']
        for g in board.generators:
            c = found.get((g, column.bypass, column.scenario))
            worst = ' class="worst"' if entry.is_worst(g, column) else ""
            tds.append("<td>–</td><td>–</td>" if c is None else
                       f'<td{worst}>{c["dsr"]:.3f}</td><td>{fmt(c["l2"], 4)}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="cells"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def defense_board(board: Board) -> str:
    heads = [header("rank"), header("defense", "text", css="name"), header("break cost ↑", first="desc")]
    heads += [header(f"{g} broken by (DSR)", first="desc") for g in board.generators]
    heads += [header("mean robust DSR ↑", first="desc"), header("mean DSR, all cells ↑", first="desc"),
              header("unseen generator: worst DSR ↑", first="desc"), header("L-inf measured ↓"), header("eps declared"),
              header("L2 norm ↓"), header("PSNR dB ↑", first="desc"), header("SSIM ↑", first="desc"),
              header("status", "text", css="name")]
    bodies = "".join(defense_rows(board, e, len(heads)) for e in ordered_entries(board.entries))
    return (f'<div class="scroll"><table class="board" id="defenses"><thead><tr>{"".join(heads)}</tr></thead>'
            f'{bodies}</table></div>')


def bypass_board(board: Board) -> str:
    heads = [header("rank"), header("bypass", "text", css="name")]
    heads += [header(f"{g} worst DSR ↓") for g in board.generators]
    heads += [header("mean worst DSR ↓"), header("mean DSR, all cells ↓"), header("status", "text", css="name")]
    bodies = []
    for item in ordered_entries(board.bypass_entries):
        tds = [cell(item.rank), f'<td class="name" data-value="{escape(item.label)}">'
                                f'{escape(item.label)}</td>']
        for g in board.generators:
            w = item.worst.get(g)
            tds.append(cell(None if w is None else round(w["dsr"], 6),
                            None if w is None else f"{w['dsr']:.3f} · {w['defense']}"))
        worst = item.worst_dsr
        tds.append(cell(None if worst is None else round(worst, 6), bounded(worst, bool(item.missing), "≥")))
        tds.append(cell(item.mean_dsr, fmt(item.mean_dsr, 3)))
        tds.append(cell(item.status, css="status"))
        css = "main" + ("" if item.rank else " unranked")
        bodies.append(f'<tbody class="entry" data-name="{escape(item.label)}"><tr class="{css}">'
                      + "".join(tds) + "</tr></tbody>")
    return (f'<div class="scroll"><table class="board" id="bypasses"><thead><tr>{"".join(heads)}</tr></thead>'
            f'{"".join(bodies)}</table></div>')


def ladder_html(board: Board) -> str:
    table = ladder_table(board)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f'<td class="name">{escape(str(v))}</td>' for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    return f'<div class="scroll"><table class="cells"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def html(board: Board) -> str:
    protocol = "".join(f"<li>{escape(line)}</li>" for line in protocol_lines(board))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bench leaderboard · protocol {escape(board.protocol_id)}</title>
<style>{STYLE}</style></head>
<body>
<h1>Proactive deepfake defenses, ranked by what it costs an attacker to break them</h1>
<ul id="protocol">{protocol}</ul>
<h2>Defenses</h2>
<p class="note">{escape(EXPLANATION)} Click a defense for its every cell; click a header to sort.</p>
{defense_board(board)}
<h2>Bypasses</h2>
<p class="note">{escape(BYPASS_EXPLANATION)}</p>
{bypass_board(board)}
<h2>The cost ladder</h2>
<p class="note">{escape(LADDER_EXPLANATION)}</p>
{ladder_html(board)}
<script>{SCRIPT}</script>
</body></html>
"""


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# what a headless Chromium needs on a machine without network or display (no sandbox as root)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BenchError("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "); on Debian: "
                     "apt-get install chromium")


def screenshot(page: Path, png: Path, fragment: str = "", size: tuple[int, int] = (1600, 1200)) -> Path:
    """A PNG of `page` (opened at `#fragment`) as headless Chromium draws it."""
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                   f"--screenshot={png}", Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.exists():
        raise BenchError(f"Chromium could not screenshot {page}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return png
