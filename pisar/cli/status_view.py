"""The `pisar status` screen: a campaign's report as one rich renderable, redrawn in place by ``--watch``."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pisar.catalog.canvases import UNANSWERED
from pisar.producer.status import RECENT_MINUTES, CampaignStatus
from pisar.safe_text import printable, shown


def status_view(report: CampaignStatus) -> Group:
    """The status screen as one renderable, so ``--watch`` can redraw it in place."""
    parts: list = []

    def line(value: str, style: str = "") -> None:
        parts.append(Text(value, style=style))

    done = report.lines["ok"] + report.lines["error"]
    line(f"{printable(report.name)}  {printable(report.source_url)}", "bold")
    line(f"model {printable(report.model)} @ {report.model_revision[:19]}")
    share = f" ({done / report.lines_total:.1%})" if report.lines_total else ""
    line(
        f"lines {done}/{report.lines_total} done{share}: {report.lines['ok']} ok, {report.lines['error']} error, "
        f"{report.lines['pending']} pending" + ("" if report.listing_done else " (still listing: more lines to come)")
    )
    if report.scans:
        settled = report.scans.get("done", 0) + report.scans.get("quarantined", 0)
        total = sum(n for state, n in report.scans.items() if state != "no_lines")
        left = {state: n for state, n in report.scans.items() if n and state not in ("done", "no_lines")}
        shown_left = ", ".join(f"{n} {state}" for state, n in left.items())
        line(
            f"scans {settled}/{total} detected: {report.scans.get('no_lines', 0)} without lines" + (f", {shown_left}" if shown_left else "")
        )
    if report.scan_problems:
        problems = Table("scan", "state", "attempts", "flags", "error")
        for row in report.scan_problems:
            problems.add_row(shown(row["key"]), row["state"], str(row["attempts"]), row["flags"] or "", shown(row["error"] or ""))
        parts.append(problems)
    if report.manifests:
        counts = report.manifests
        line(f"manifests {counts['read']} read, {counts['not_read']} not read; {counts['canvases']} canvases")
    if report.manifest_problems:
        unread = Table("manifest", "error class", "error")
        for row in report.manifest_problems:
            unread.add_row(shown(row["url"]), row["error_class"], shown(row["error"] or ""))
        parts.append(unread)
        if any(row["error_class"] == UNANSWERED for row in report.manifest_problems):
            line(f"manifests marked {UNANSWERED} did not answer: `pisar resume {printable(report.name)}` asks them again", "yellow")
    shards = Table("shard state", "count")
    for state, count in report.shards.items():
        if count:
            shards.add_row(state, str(count))
    parts.append(shards)
    if report.error_classes:
        errors = Table("error class", "lines", "example key")
        for row in report.error_classes:
            errors.add_row(shown(row["error_class"]), str(row["count"]), shown(row["example_key"]))
        parts.append(errors)
    if report.shard_errors:
        failures = Table("shard", "state", "attempts", "last error")
        for row in report.shard_errors:
            failures.add_row(str(row["shard"]), row["state"], str(row["attempts"]), shown(row["error"]))
        parts.append(failures)
    if report.lines_per_second_overall or report.lines_per_second_recent:
        recent = report.lines_per_second_recent or 0.0
        overall = report.lines_per_second_overall or 0.0
        eta = f"; ETA {_duration(report.eta_seconds)}" if report.eta_seconds else ""
        line(f"throughput {recent:.2f} lines/s over the last {RECENT_MINUTES} min of work, {overall:.2f} since start{eta}")
    if report.workers_recent:
        workers = ", ".join(printable(w) for w in report.workers_recent[:8]) + (" ..." if len(report.workers_recent) > 8 else "")
        line(f"workers in the last {RECENT_MINUTES} min: {len(report.workers_recent)} ({workers})")
    if report.lines_awaiting_retry:
        line(f"{report.lines_awaiting_retry} lines are waiting to be re-read by a retry")
    for retry in report.retries[:3]:
        model = f" with {printable(retry['model'])}" if retry["model"] else ""
        chosen = {k: v for k, v in retry["selector"].items() if v not in (False, None, [])} or "default"
        line(f"retry {retry['retry']} at {retry['at'][:19]} by {printable(retry['by'])}: {retry['lines']} lines, {chosen}{model}")
    if report.stale_leases:
        line(f"{report.stale_leases} running shards have expired leases: `pisar resume {printable(report.name)}`", "yellow")
    if report.empty_lines:
        line(f"{report.empty_lines} ok lines were read as empty: `pisar retry {printable(report.name)} --flag empty`")
    if report.duplicate_deliveries:
        line(f"{report.duplicate_deliveries} duplicate deliveries were skipped")
    return Group(*parts)


def _duration(seconds: float) -> str:
    """``3h 05m``, ``4m 10s`` or ``12s``: an ETA a person reads at a glance."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
