"""The status page: a document shell, the live part it refreshes, and its CSS and script.

:func:`live_html` renders the part that changes (overall state, every monitor
with its export ids and problems, the recent exports); the page's script
fetches it again every few seconds and swaps it in, so the page stays current
without a reload. Every value goes through :func:`html.escape`; the script
only ever inserts what the server escaped. No inline script or style is used,
so the Content-Security-Policy can forbid them.
"""

from __future__ import annotations

import html
from typing import Any

from exportmon import __version__
from exportmon.actions.status import MonitorStatus, human_time
from exportmon.units import format_duration, format_size
from exportmon.web.data import Snapshot

STATE_WORDS = {"ok": "OK", "warning": "Warning", "error": "Error", "unknown": "Unknown"}
OUTCOME_STATES = {"delivered": "ok", "failed": "error", "pending": "warning"}
#: The most recent exports listed on the page (the JSON has them all).
RECENT_LIMIT = 50


def e(value: Any) -> str:
    """``value`` as escaped HTML text; ``None`` is an empty string."""
    return "" if value is None else html.escape(str(value), quote=True)


def badge(state: str, text: str | None = None) -> str:
    word = text or STATE_WORDS.get(state, state)
    return f'<span class="badge {e(_state_class(state))}">{e(word)}</span>'


def _state_class(state: str) -> str:
    return f"state-{state}" if state in STATE_WORDS else "state-unknown"


def document(refresh: float) -> str:
    """The page shell; its script fills and refreshes ``#live``."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>exportmon status</title>
<link rel="stylesheet" href="static/page.css">
<script src="static/page.js" defer></script>
</head>
<body data-refresh="{e(f"{refresh:g}")}">
<header>
<h1>exportmon</h1>
<span id="updated" class="muted">loading…</span>
<span id="offline" class="badge state-error" hidden>connection lost</span>
</header>
<main id="live" aria-live="polite"><p class="muted">Loading the status…</p></main>
<footer class="muted">exportmon {e(__version__)} · read-only ·
<a href="api/status">/api/status</a> · <a href="api/report?since=7d">/api/report</a> ·
<a href="metrics">/metrics</a> · <a href="healthz">/healthz</a></footer>
</body>
</html>
"""


def live_html(snapshot: Snapshot) -> str:
    """The part of the page that changes: state, monitors, recent exports."""
    parts = [
        f'<section id="overall" data-state="{e(snapshot.state)}">',
        f"<h2>Overall {badge(snapshot.state)}</h2>",
        f'<p class="muted">checked {e(human_time(_text(snapshot.taken_at)))}'
        f" · {e(snapshot.report.summary.line())} in the last"
        f" {e(_period(snapshot))}</p>",
        "</section>",
        '<section id="monitors"><h2>Monitors</h2>',
    ]
    if not snapshot.all_statuses:
        parts.append('<p class="muted">No monitor is configured.</p>')
    for status in snapshot.all_statuses:
        parts.append(_monitor_card(status))
    parts.append("</section>")
    parts.append(_recent_exports(snapshot))
    return "\n".join(parts) + "\n"


def _text(moment: Any) -> str:
    from exportmon.ledger import to_text

    return to_text(moment)


def _period(snapshot: Snapshot) -> str:
    from exportmon.ledger import from_text

    seconds = (from_text(snapshot.report.until) - from_text(snapshot.report.since)).total_seconds()
    return format_duration(seconds)


def _monitor_card(status: MonitorStatus) -> str:
    state = status.state
    parts = [
        f'<article class="monitor {e(_state_class(state))}" data-monitor="{e(status.monitor)}"'
        f' data-state="{e(state)}">',
        f"<h3>{e(status.monitor)} {badge(state)}</h3>",
        f'<p class="reason">{e(status.reason)}</p>',
    ]
    if status.config:
        parts.append(f'<p class="muted small">{e(status.config)}</p>')
    if status.exports:
        parts.append('<div class="scroll"><table class="ids"><thead><tr>')
        parts.append(
            "<th>export id</th><th>state</th><th>last delivered</th><th>rows</th>"
            "<th>next expected</th><th>reason</th></tr></thead><tbody>"
        )
        for row in status.exports:
            parts.append(
                f'<tr class="{e(_state_class(row.state))}" data-export-id="{e(row.export_id)}">'
                f"<td>{e(row.export_id if row.export_id is not None else 'any')}</td>"
                f"<td>{badge(row.state)}</td>"
                f'<td class="when">{e(human_time(row.last_success))}</td>'
                f'<td class="num">{e(f"{row.rows_delivered:,}")}</td>'
                f'<td class="when">{e(human_time(row.next_expected))}</td>'
                f"<td>{e(row.reason)}</td></tr>"
            )
        parts.append("</tbody></table></div>")
    # Problems of one export id are in its row; the list has the monitor's own.
    problems = [
        p
        for p in status.problems
        if p.state in ("error", "warning") and (p.scope == "monitor" or not status.exports)
    ]
    if problems:
        parts.append('<ul class="problems">')
        parts += [
            f'<li class="{e(_state_class(p.state))}">{badge(p.state)} {e(p.summary)}</li>'
            for p in problems
        ]
        parts.append("</ul>")
    if status.alerts_pending:
        parts.append(f'<p class="muted">{e(status.alerts_pending)} alert(s) waiting to be sent</p>')
    parts.append("</article>")
    return "\n".join(parts)


def _recent_exports(snapshot: Snapshot) -> str:
    exports = list(reversed(snapshot.report.exports))[:RECENT_LIMIT]
    parts = ['<section id="exports"><h2>Recent exports</h2>']
    if not exports:
        parts.append('<p class="muted">No export received in this period.</p></section>')
        return "\n".join(parts)
    parts.append('<div class="scroll"><table class="exports"><thead><tr>')
    parts.append(
        "<th>received</th><th>monitor</th><th>export</th><th>outcome</th>"
        "<th>files</th><th>rows</th><th>size</th><th>delivered to / error</th></tr></thead><tbody>"
    )
    for export in exports:
        state = OUTCOME_STATES.get(export.outcome, "unknown")
        if export.error:
            detail = f'<span class="error-text">{e(export.error_step)}: {e(export.error)}</span>'
        else:
            detail = "<br>".join(e(d) for d in export.destinations)
        parts.append(
            f'<tr class="{e(_state_class(state))}" data-outcome="{e(export.outcome)}"'
            f' data-export-id="{e(export.export_id)}">'
            f'<td class="when">{e(human_time(export.received_at))}</td>'
            f"<td>{e(export.monitor)}</td>"
            f'<td>{e(export.export_id)}<br><span class="small">{e(export.file_name)}</span></td>'
            f"<td>{badge(state, export.outcome)}</td>"
            f'<td class="num">{e(export.files)}</td>'
            f'<td class="num">{e(f"{export.rows:,}" if export.rows is not None else "")}</td>'
            f'<td class="num">{e(format_size(export.bytes) if export.bytes else "")}</td>'
            f"<td>{detail}</td></tr>"
        )
    parts.append("</tbody></table></div></section>")
    return "\n".join(parts)


STYLE = """\
:root { --ok:#1b6e20; --warning:#8a5a00; --error:#b00020; --unknown:#555;
  --bg:#f6f7f9; --card:#fff; --line:#dde1e6; }
* { box-sizing: border-box; }
[hidden] { display:none !important; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  background:var(--bg); color:#1d2125; }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:baseline;
  padding:.75rem 1rem; background:#1d2125; color:#fff; }
header h1 { margin:0; font-size:1.2rem; }
main { padding:0 1rem 1rem; max-width:72rem; margin:0 auto; }
footer { padding:1rem; text-align:center; }
h2 { font-size:1.1rem; margin:1.2rem 0 .5rem; }
h3 { font-size:1rem; margin:0 0 .3rem; word-break:break-word; }
.muted { color:#5f6b76; } header .muted { color:#c9d1d9; }
.small { font-size:.85em; }
.badge { display:inline-block; padding:.05rem .5rem; border-radius:1rem; font-size:.8rem;
  font-weight:600; color:#fff; background:var(--unknown); vertical-align:middle; }
.badge.state-ok { background:var(--ok); } .badge.state-warning { background:var(--warning); }
.badge.state-error { background:var(--error); }
article.monitor { background:var(--card); border:1px solid var(--line);
  border-left:6px solid var(--unknown); border-radius:6px; padding:.75rem; margin:.5rem 0; }
article.state-ok { border-left-color:var(--ok); }
article.state-warning { border-left-color:var(--warning); }
article.state-error { border-left-color:var(--error); background:#fff5f6; }
.reason { margin:.2rem 0; word-break:break-word; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line);
  vertical-align:top; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.when { white-space:nowrap; }
tr.state-error td { background:#fde8eb; }
tr.state-warning td { background:#fff6e0; }
.error-text { color:var(--error); word-break:break-word; }
ul.problems { margin:.4rem 0 0; padding-left:1.1rem; }
@media (max-width: 640px) {
  table.exports thead { display:none; }
  table.exports tr { display:block; border-bottom:2px solid var(--line); padding:.3rem 0; }
  table.exports td { display:inline-block; border:0; padding:.1rem .4rem; }
  table.exports td:last-child { display:block; }
}
"""

SCRIPT = """\
"use strict";
(function () {
  var live = document.getElementById("live");
  var updated = document.getElementById("updated");
  var offline = document.getElementById("offline");
  var seconds = parseFloat(document.body.getAttribute("data-refresh")) || 5;
  var last = null;
  function refresh() {
    fetch("live" + window.location.search, {cache: "no-store", credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        if (text !== last) { live.innerHTML = text; last = text; }
        offline.hidden = true;
        updated.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { offline.hidden = false; })
      .then(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  refresh();
})();
"""
