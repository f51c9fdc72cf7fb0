"""The local stack's status page on its ingest port: `GET /`, which refreshes itself from `GET /status.json`.

What the pipeline is doing: the LaunchDarkly segments with their member counts, the queue and the
dead-letter queue, and the last batches the sync poller handled. The page is one self-contained document
(inline script and style, nothing fetched from elsewhere, which its Content-Security-Policy also enforces).
No secret, token or context key is ever in it: segments are shown by name and count. It answers only
requests addressed to it on loopback from no other origin (loopback_guard.py: DNS rebinding, cross-origin
reads) and may not be framed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests

from ld_audiences_local.api_gateway import Answer
from ld_audiences_local.loopback_guard import refusal
from ld_audiences_local.urls import loopback_origin, without_credentials

if TYPE_CHECKING:
    from ld_audiences_local.stack import LocalStack

REFRESH_MS = 1500
RECENT_SHOWN = 20
SEGMENTS_TIMEOUT = 2.0
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "frame-ancestors 'none'"
    ),
}
# A page's answer to a request (method, headers by lower-case name).
Page = Callable[[str, Mapping[str, str]], Answer]


def routes(stack: LocalStack, port: int) -> dict[str, Page]:
    """The GET routes the ingest server on `port` answers itself, besides the API's."""

    def page(content_type: str, body: Callable[[], bytes]) -> Page:
        def answer(method: str, headers: Mapping[str, str]) -> Answer:
            refused = refusal(method, headers, port)
            if refused is not None:
                return Answer(refused.status, {"Content-Type": "text/plain", **_HEADERS}, refused.reason.encode())
            return Answer(200, {"Content-Type": content_type, **_HEADERS}, body())

        return answer

    return {
        "/": page("text/html; charset=utf-8", PAGE.encode),
        "/status.json": page("application/json", lambda: json.dumps(snapshot(stack)).encode()),
    }


def snapshot(stack: LocalStack) -> dict[str, Any]:
    """Everything the page shows, as JSON."""
    segments, problem = segment_counts(stack)
    stats = stack.stats()
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ingest": {"url": stack.url, "requests": stats["ingest_requests"]},
        "queue": {"url": stack.queue_url, **stack.queue_counts()},
        "dead_letters": {"url": stack.dlq_url, "messages": stats["dead_lettered"]},
        "launchdarkly": {
            "url": without_credentials(stack.launchdarkly_url or ""),
            "where": "in-process emulator" if stack.emulator is not None else "external",
            "writer": stack.writer,
            "segments": segments,
            "problem": problem,
        },
        "sync": {
            "batch_size": stack.batch_size,
            "batching_window": stack.batching_window,
            "concurrency": stack.sync_concurrency,
            "totals": {name: stats[name] for name in ("batches", "records", "failures", "handler_errors")},
            "recent": [
                {
                    "finished_at": datetime.fromtimestamp(b.finished_at, UTC).isoformat(timespec="milliseconds"),
                    "records": b.records,
                    "failed": b.failed,
                    "milliseconds": round(b.seconds * 1000),
                    "outcome": "handler failed" if b.handler_error else "partial" if b.failed else "ok",
                }
                for b in stack.recent_batches(RECENT_SHOWN)
            ],
        },
    }


def segment_counts(stack: LocalStack) -> tuple[list[dict[str, Any]], str | None]:
    """Segments and member counts, from the in-process emulator or an emulator at `--launchdarkly-url` (its
    `GET /emulator/segments`, asked without credentials). Real LaunchDarkly is not asked: it lists no
    big-segment members, and polling it would spend the rate limit the sync function writes under."""
    url = f"{stack.launchdarkly_url}/emulator/segments"
    if stack.emulator is not None:
        listed = stack.emulator.segments()
    elif loopback_origin(url) is None:
        return [], f"segments are listed only by an emulator on this machine, not {without_credentials(url)}"
    else:
        try:
            response = requests.get(url, timeout=SEGMENTS_TIMEOUT)
            response.raise_for_status()
            listed = response.json()["segments"]
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return [], f"no segment list at {without_credentials(url)}: {type(exc).__name__}"
    return [
        {
            "name": s.get("name"),
            "key": s.get("key"),
            "kind": s.get("kind"),
            "context_kind": s.get("contextKind"),
            "members": len(s.get("included") or []),
        }
        for s in listed
    ], None


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ld-audiences · local stack</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d232b; background: #f6f7f9; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1rem; margin: 0 0 .5rem; }
  section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: .8rem 1rem; margin: 0 0 1rem; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(18rem, 1fr)); gap: 1rem; margin: 0 0 1rem; }
  .grid section { margin: 0; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eceef1; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  .muted { color: #69717c; }
  .big { font-size: 1.6rem; font-variant-numeric: tabular-nums; }
  .ok { color: #1a7f37; } .partial { color: #9a6700; } .failed, .bad { color: #cf222e; }
  #live::before { content: "●"; margin-right: .3rem; }
  code { font-size: 12px; }
</style>
</head>
<body>
<h1>ld-audiences · local stack</h1>
<p class="muted"><span id="live">connecting…</span> <span id="updated"></span></p>
<div class="grid">
  <section><h2>Queue</h2><div class="big" id="queue-visible">-</div>
    <div class="muted">waiting · <span id="queue-in-flight">-</span> in flight · <span id="queue-delayed">-</span>
      delayed</div></section>
  <section><h2>Dead-letter queue</h2><div class="big" id="dlq-messages">-</div>
    <div class="muted">messages (<code>ld-audiences redrive</code> lists them)</div></section>
  <section><h2>Sync</h2><div class="big" id="sync-records">-</div>
    <div class="muted">records in <span id="sync-batches">-</span> batches ·
      <span id="sync-failures">-</span> returned to the queue ·
      <span id="ingest-requests">-</span> ingest requests</div>
  </section>
</div>
<section><h2>LaunchDarkly segments <span class="muted" id="ld-where"></span></h2>
  <p class="bad" id="ld-problem" hidden></p>
  <table><thead><tr><th>segment</th><th>key</th><th>kind</th><th>context kind</th><th class="n">members</th></tr>
  </thead><tbody id="segments"></tbody></table></section>
<section><h2>Last batches the sync poller handled</h2>
  <table><thead><tr><th>finished</th><th class="n">records</th><th class="n">failed</th><th class="n">ms</th>
  <th>outcome</th></tr></thead><tbody id="batches"></tbody></table></section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}
function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows : [row([[empty, "muted"]])]));
  if (!rows.length) tbody.firstChild.firstChild.colSpan = columns;
}
function render(s) {
  $("queue-visible").textContent = s.queue.visible;
  $("queue-in-flight").textContent = s.queue.in_flight;
  $("queue-delayed").textContent = s.queue.delayed;
  $("dlq-messages").textContent = s.dead_letters.messages;
  $("dlq-messages").className = "big" + (s.dead_letters.messages ? " bad" : "");
  $("sync-records").textContent = s.sync.totals.records;
  $("sync-batches").textContent = s.sync.totals.batches;
  $("sync-failures").textContent = s.sync.totals.failures;
  $("ingest-requests").textContent = s.ingest.requests;
  $("ld-where").textContent = "(" + s.launchdarkly.where + ", " + s.launchdarkly.url + ")";
  $("ld-problem").hidden = !s.launchdarkly.problem;
  $("ld-problem").textContent = s.launchdarkly.problem || "";
  fill($("segments"), s.launchdarkly.segments.map((g) => row(
    [[g.name], [g.key, "muted"], [g.kind], [g.context_kind], [g.members, "n members"]],
    {"data-segment": g.key})), "no segments yet: replay some events", 5);
  fill($("batches"), s.sync.recent.slice().reverse().map((b) => row(
    [[b.finished_at.slice(11, 23)], [b.records, "n"], [b.failed, "n"], [b.milliseconds, "n"],
     [b.outcome, b.outcome === "ok" ? "ok" : b.outcome === "partial" ? "partial" : "failed"]])),
    "no batch yet", 5);
  $("updated").textContent = "· updated " + s.generated_at.slice(11, 19) + " UTC";
}
async function refresh() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    $("live").textContent = "live";
    $("live").className = "ok";
  } catch (error) {
    $("live").textContent = "unreachable (" + error.message + ")";
    $("live").className = "bad";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
""".replace("REFRESH_MS", str(REFRESH_MS))
