"""`python -m bench [--quick]`: run every benchmark and print figures beside their baselines.

Loopback only; each part is bounded in requests and time and stops its processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import delivery, ingest, pgstore

SECTIONS = ("footprint", "latency", "fanout", "ingest")
#: Bot processes on one PostgreSQL database for the several-process figures (issue 20).
PROCESSES = 3
#: Targets per platform of the several-process fan-out.
FLEET_TARGETS = 600


def machine() -> str:
    """CPU count, CPU model and Python version, for the record."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


async def collect(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the chosen sections, each in its own fresh processes; with `args.store`, each
    again on PostgreSQL right after it."""
    results: dict[str, Any] = {}
    for section in args.sections:
        parts = {section: _section(section, args.quick, workdir)}
        if args.store:
            parts.update(_on_postgresql(section, args.quick, workdir, args.store))
        for name, part in parts.items():
            began = time.perf_counter()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            results[name] = await _guarded(name, part)
            print(f"   {name}: {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
    return results


async def _guarded(name: str, part: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The figures of `part`, or what stopped it: the table says FAILED for that part,
    the run goes on with the next, and its exit status is 1."""
    try:
        return await part
    except Exception as exc:
        # A bot that would not start, a database that went away, a bug in the bench.
        print(f"   {name} FAILED:", file=sys.stderr, flush=True)
        traceback.print_exc()
        return {"failed": (str(exc) or type(exc).__name__).splitlines()[0]}


def _sizes(quick: bool) -> dict[str, Any]:
    """How long each section runs."""
    return {
        "idle": 1.0 if quick else 3.0,
        "latency_seconds": 5.0 if quick else 30.0,
        "ingest": {
            "seconds": 3.0 if quick else 10.0,
            "connections": 64,
            "rounds": 1 if quick else 3,
        },
    }


def _section(section: str, quick: bool, workdir: Path) -> Awaitable[dict[str, Any]]:
    """One section with the bot on SQLite."""
    sizes = _sizes(quick)
    if section == "footprint":
        return delivery.footprint(workdir, idle=sizes["idle"])
    if section == "latency":
        return delivery.latency(workdir, seconds=sizes["latency_seconds"])
    if section == "fanout":
        return delivery.fan_out(workdir, targets=200, wait=60.0)
    return ingest.run(workdir, **sizes["ingest"])


async def _on_fresh_database(
    store: str, part: Callable[[str], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`part` run on a new database on the `store` server, dropped after."""
    async with pgstore.fresh_database(store) as url:
        return await part(url)


def _on_postgresql(
    section: str, quick: bool, workdir: Path, store: str
) -> dict[str, Awaitable[dict[str, Any]]]:
    """The parts of `section` with the bot on PostgreSQL, by their results' names: latency
    and fan-out with one process, ingest and fan-out with PROCESSES too."""
    sizes = _sizes(quick)
    if section == "ingest":
        # Its one- and several-process runs alternate, each on a database of its own.
        figures = ingest.run_postgresql(workdir, store, processes=PROCESSES, **sizes["ingest"])
        return {"ingest@postgresql": figures}
    if section == "latency":
        seconds = sizes["latency_seconds"]
        return {
            "latency@postgresql": _on_fresh_database(
                store, lambda url: delivery.latency(workdir, seconds=seconds, store_url=url)
            )
        }
    if section != "fanout":
        return {}
    return {
        "fanout@postgresql": _on_fresh_database(
            store, lambda url: delivery.fan_out(workdir, targets=200, wait=60.0, store_url=url)
        ),
        # One process sending it all at its 1/PROCESSES share would take PROCESSES times
        # the bound: the wait leaves room for that, so a lost target means lost.
        f"fanout@postgresql-x{PROCESSES}": _on_fresh_database(
            store,
            lambda url: delivery.fan_out(
                workdir, targets=FLEET_TARGETS, wait=120.0, store_url=url, processes=PROCESSES
            ),
        ),
    }


def _fmt(value: float, unit: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if unit.startswith("ev/"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}{unit}"


Row = tuple[str, str, str, str, str]


class _Rows:
    """The table's rows as they are added: (figure, measured, baseline, ratio, target)."""

    def __init__(self) -> None:
        self.out: list[Row] = []

    def add(
        self,
        figure: str,
        value: float,
        base: float | None,
        unit: str,
        *,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        """A figure beside its baseline, the ratio, and the target's verdict if any."""
        known = base and not math.isnan(value) and not math.isnan(base)
        ratio = f"{value / base:.2f}x" if known else "-"
        verdict = "" if ok is None else (" met" if ok else " MISSED")
        self.text(
            figure,
            _fmt(value, unit),
            "-" if base is None else _fmt(base, unit),
            ratio,
            f"{target}{verdict}",
        )

    def text(
        self, figure: str, measured: str, base: str = "-", ratio: str = "-", target: str = ""
    ) -> None:
        """A row that is not one number over another."""
        self.out.append((figure, measured, base, ratio, target))


def _span(values: list[float]) -> str:
    """A list of per-round figures as `lo` or `lo-hi`."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"


def _ingest_checks(t: _Rows, label: str, r: dict[str, Any]) -> None:
    """FAILED rows for what makes an ingest run a failure (ingest.checks)."""
    if r["drain_timeouts"]:
        t.text(
            f"{label}: dispatch backlog did not drain",
            f"{r['drain_timeouts']} of {r['rounds']} runs",
            target=f"drained within {r['drain_timeout_s']:g} s FAILED",
        )
    if r["non_2xx"] or not r["stored_ge_accepted"]:
        t.text(
            f"{label}: non-2xx answers, every counted 202 stored",
            f"{r['non_2xx']}, {'yes' if r['stored_ge_accepted'] else 'no'}",
            target="0, yes FAILED",
        )


def _ingest_rows(t: _Rows, r: dict[str, Any]) -> None:
    # The bot's rate counts the time to dispatch what it accepted (bench/ingest.py).
    for base, least in (("bare", 0.6), ("durable", 0.5)):
        t.add(
            f"ingest: accepted + dispatched webhooks/s (bot / {base})",
            r["bot_rps"],
            r[f"{base}_rps"],
            "ev/s",
            target=f"ratio >= {least:g}",
            ok=r["bot_rps"] >= least * r[f"{base}_rps"],
        )
    t.add("ingest: durable baseline / bare", r["durable_rps"], r["bare_rps"], "ev/s")
    t.add("ingest: drain after the load (bot's best round)", r["bot_drain_s"], None, "s")
    shares = " / ".join(_span(r[f"cpu_{n}_all"]) for n in ("bare", "durable", "bot"))
    t.text("ingest: server CPU under load, cores (bare / durable / bot)", shares)
    _ingest_checks(t, "ingest", r)


def _ingest_postgresql_rows(t: _Rows, r: dict[str, Any]) -> None:
    n = r["processes"]
    labels = {"bare": f"{n} bare", "sqlite": "SQLite", "pg1": "PG x1", "pgN": f"PG x{n}"}
    t.add(
        f"ingest: load generator ({r['clients']} processes) against {n} bare servers",
        r["bare_rps"],
        None,
        "ev/s",
    )
    for name, figure, base in (
        ("sqlite", "ingest on SQLite, 1 process: webhooks/s (vs the bare servers')", "bare"),
        ("pg1", "ingest on PostgreSQL, 1 process: webhooks/s (vs SQLite's)", "sqlite"),
    ):
        t.add(figure, r[f"{name}_rps"], r[f"{base}_rps"], "ev/s")
    t.add(
        f"ingest on PostgreSQL, {n} processes round-robin: webhooks/s (vs 1 process's)",
        r["pgN_rps"],
        r["pg1_rps"],
        "ev/s",
        target=">= 2x",
        ok=r["pgN_rps"] >= 2 * r["pg1_rps"],
    )
    for name, label in labels.items():
        parts = (f"cpu_{name}_all", f"db_{name}_all", f"client_{name}_all", f"machine_{name}_all")
        t.text(
            f"ingest, {label}: cores (servers / PostgreSQL / load generator / machine)",
            " / ".join(_span(r[part]) for part in parts),
        )
    # Why the target is met or not: whether a bot core takes in as much split three ways.
    t.add(
        f"ingest, explanation: webhooks per bot CPU-second, PG x{n} (vs PG x1)",
        r["pgN_per_core"],
        r["pg1_per_core"],
        "ev/CPU-s",
    )
    for name in ("pg1", "pgN"):
        doing = r[f"activity_{name}_all"]
        t.text(
            f"ingest, {labels[name]}: connections in lock wait / idle in transaction / active",
            " / ".join(_span([d[k] for d in doing]) for k in ("lock", "bot", "active")),
        )
    _ingest_checks(t, "ingest on PostgreSQL", r)


def _latency_rows(t: _Rows, r: dict[str, Any]) -> None:
    base = r["bare_rtt"]
    t.add("latency: webhook POST -> 202, p50", r["webhook_rtt"]["p50"], base["p50"], "ms")
    t.add("latency: webhook POST -> 202, p99", r["webhook_rtt"]["p99"], base["p99"], "ms")
    for sink in ("discord", "telegram"):
        s = r[sink]
        t.add(f"latency: POST -> {sink} message, p50", s["p50"], base["p50"], "ms")
        t.add(
            f"latency: POST -> {sink} message, p99 (n={s['n']})",
            s["p99"],
            base["p99"],
            "ms",
            target="< 25 ms",
            ok=s["p99"] < 25 and s["n"] == r["events"],
        )
        t.add(f"latency: POST -> {sink} message, max", s["max"], base["max"], "ms")
        t.add(f"latency: POST -> {sink}, first message after start", s["cold_ms"], None, "ms")


def _latency_postgresql_rows(t: _Rows, pg: dict[str, Any], lite: dict[str, Any]) -> None:
    for sink in ("discord", "telegram"):
        p99, base = pg[sink]["p99"], lite[sink]["p99"]
        t.add(
            f"latency on PostgreSQL: POST -> {sink} message, p99 (vs SQLite's)",
            p99,
            base,
            "ms",
            target="<= 2x SQLite",
            ok=p99 <= 2 * base and pg[sink]["n"] == pg["events"],
        )
    t.add(
        "latency on PostgreSQL: webhook POST -> 202, p99 (vs SQLite's)",
        pg["webhook_rtt"]["p99"],
        lite["webhook_rtt"]["p99"],
        "ms",
    )


def _fanout_rows(t: _Rows, r: dict[str, Any], label: str) -> None:
    """`label`: "fan-out" or what differs ("fan-out on PostgreSQL, 3 processes")."""
    several = r["processes"] > 1
    for sink in ("discord", "telegram"):
        s = r[sink]
        ok = not math.isnan(s["seconds"]) and s["seconds"] <= 1.15 * s["bound"] and s["lost"] == 0
        t.add(
            f"{label}: 1 event -> {r['targets']} {sink} targets, all delivered",
            s["seconds"],
            s["bound"],
            "s",
            target="<= 1.15x bound, 0 lost",
            ok=ok,
        )
        t.text(
            f"{label}: {sink} 429s / lost / duplicates",
            f"{s['429s']} / {s['lost']} / {s['duplicates']}",
            target="0 lost" + (" met" if s["lost"] == 0 else " MISSED"),
        )
        if several:
            sent = r["sent_by_process"].get(sink, [])
            sent += [0] * (r["processes"] - len(sent))  # processes that sent nothing
            t.text(f"{label}: {sink} messages sent by each process", " / ".join(map(str, sent)))


def _footprint_rows(t: _Rows, r: dict[str, Any]) -> None:
    t.add(
        "footprint: RSS idle, both clients connected",
        r["bot_rss_mb"],
        r["bare_rss_mb"],
        "MiB",
        target="< 90 MiB",
        ok=r["bot_rss_mb"] < 90,
    )
    t.add("footprint: start -> listening", r["bot_listening_s"], r["bare_start_s"], "s")
    t.add(
        "footprint: start -> ready (every sink running)",
        r["bot_ready_s"],
        r["bare_start_s"],
        "s",
        target="< 2 s",
        ok=r["bot_ready_s"] < 2,
    )


def rows(results: dict[str, Any]) -> list[Row]:
    """(figure, measured, baseline, ratio, target and verdict) for every measured figure."""
    t = _Rows()
    for name, figures in results.items():
        if "failed" in figures:
            t.text(f"{name}: did not finish", figures["failed"], target="FAILED")
    results = {name: figures for name, figures in results.items() if "failed" not in figures}
    if "ingest" in results:
        _ingest_rows(t, results["ingest"])
    if "ingest@postgresql" in results:
        _ingest_postgresql_rows(t, results["ingest@postgresql"])
    if "latency" in results:
        _latency_rows(t, results["latency"])
    if "latency@postgresql" in results and "latency" in results:
        _latency_postgresql_rows(t, results["latency@postgresql"], results["latency"])
    if "fanout" in results:
        _fanout_rows(t, results["fanout"], "fan-out")
    if "fanout@postgresql" in results:
        _fanout_rows(t, results["fanout@postgresql"], "fan-out on PostgreSQL, 1 process")
    several = f"fanout@postgresql-x{PROCESSES}"
    if several in results:
        _fanout_rows(t, results[several], f"fan-out on PostgreSQL, {PROCESSES} processes")
    if "footprint" in results:
        _footprint_rows(t, results["footprint"])
    return t.out


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    header = ("figure", "measured", "baseline", "ratio", "target")
    lines = [header, *rows(results)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for n, line in enumerate(lines):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        text.append("| " + " | ".join(cells) + " |")
        if n == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def _failed(name: str, figures: dict[str, Any]) -> bool:
    """Whether a part failed instead of giving figures: it did not finish, or an ingest
    run failed its checks (a timeout is a failure, not a figure)."""
    if "failed" in figures:
        return True
    checked = ("drain_timeouts", "non_2xx")
    return name.startswith("ingest") and (
        any(figures[k] for k in checked) or not figures["stored_ge_accepted"]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the table (and optionally the raw results as JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about 1 minute)")
    parser.add_argument(
        "--only",
        dest="sections",
        default=",".join(SECTIONS),
        type=lambda s: [x for x in s.split(",") if x],
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="also run ingest, latency and fan-out with the bot on PostgreSQL, ingest and"
        f" fan-out with {PROCESSES} processes too: a postgresql:// URL whose user may create"
        " databases (each run gets a fresh one, dropped after)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    # PTB in the bot process warns when building RetryAfter unless this opt-in is set.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        # The whole run is bounded too, whatever happens inside.
        results = asyncio.run(asyncio.wait_for(collect(args, Path(tmp)), 900))
    print(f"machine: {machine()}; mode: {'quick' if args.quick else 'full'}")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    # A failed part is in the table; the run says so in its exit status too.
    return 1 if any(_failed(name, figures) for name, figures in results.items()) else 0


if __name__ == "__main__":
    sys.exit(main())
