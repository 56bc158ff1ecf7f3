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
from pathlib import Path
from typing import Any

from bench import delivery, ingest, pgstore

SECTIONS = ("footprint", "latency", "fanout", "ingest")


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
    """Run the chosen sections, each in its own fresh processes."""
    quick = args.quick
    results: dict[str, Any] = {}
    for section in args.sections:
        began = time.perf_counter()
        print(f"-- {section} ...", file=sys.stderr, flush=True)
        if section == "footprint":
            results[section] = await delivery.footprint(workdir, idle=1.0 if quick else 3.0)
        elif section == "latency":
            results[section] = await delivery.latency(workdir, seconds=5.0 if quick else 30.0)
        elif section == "fanout":
            results[section] = await delivery.fan_out(workdir, targets=200, wait=60.0)
        elif section == "ingest":
            results[section] = await ingest.run(
                workdir,
                seconds=3.0 if quick else 10.0,
                connections=64,
                rounds=1 if quick else 3,
            )
        print(f"   {section}: {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
        if args.store and section in ("latency", "fanout"):
            began = time.perf_counter()
            print(f"-- {section} on PostgreSQL ...", file=sys.stderr, flush=True)
            async with pgstore.fresh_database(args.store) as url:
                if section == "latency":
                    results[f"{section}@postgresql"] = await delivery.latency(
                        workdir, seconds=5.0 if quick else 30.0, store_url=url
                    )
                else:
                    results[f"{section}@postgresql"] = await delivery.fan_out(
                        workdir, targets=200, wait=60.0, store_url=url
                    )
            took = time.perf_counter() - began
            print(f"   {section} on PostgreSQL: {took:.1f}s", file=sys.stderr, flush=True)
    return results


def _fmt(value: float, unit: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if unit == "ev/s":
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}{unit}"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(figure, measured, baseline, ratio, target and verdict) for every measured figure."""
    out: list[tuple[str, str, str, str, str]] = []

    def add(
        figure: str,
        value: float,
        base: float | None,
        unit: str,
        *,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        ratio = "-" if not base or math.isnan(value) else f"{value / base:.2f}x"
        verdict = "" if ok is None else (" met" if ok else " MISSED")
        out.append(
            (
                figure,
                _fmt(value, unit),
                "-" if base is None else _fmt(base, unit),
                ratio,
                f"{target}{verdict}",
            )
        )

    if "ingest" in results:
        r = results["ingest"]
        # The bot's rate counts the time to dispatch what it accepted (bench/ingest.py).
        add(
            "ingest: accepted + dispatched webhooks/s (bot / bare)",
            r["bot_rps"],
            r["bare_rps"],
            "ev/s",
            target="ratio >= 0.6",
            ok=r["ratio_bare"] >= 0.6,
        )
        add(
            "ingest: accepted + dispatched webhooks/s (bot / durable)",
            r["bot_rps"],
            r["durable_rps"],
            "ev/s",
            target="ratio >= 0.5",
            ok=r["ratio_durable"] >= 0.5,
        )
        add("ingest: durable baseline / bare", r["durable_rps"], r["bare_rps"], "ev/s")
        add("ingest: drain after the load (bot's best round)", r["drain_s"], None, "s")
        spans = (
            (min(r[f"cpu_{n}_all"]), max(r[f"cpu_{n}_all"])) for n in ("bare", "durable", "bot")
        )
        shares = " / ".join(f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}" for lo, hi in spans)
        out.append(
            ("ingest: server CPU under load, cores (bare / durable / bot)", shares, "-", "-", "")
        )
        if r["drain_timeouts"]:
            out.append(
                (
                    "ingest: dispatch backlog did not drain",
                    f"{r['drain_timeouts']} of {r['drain_timeouts'] + len(r['bot_all'])} rounds",
                    "-",
                    "-",
                    f"drained within {r['drain_timeout_s']:g} s FAILED",
                )
            )
    if "latency" in results:
        r = results["latency"]
        base = r["bare_rtt"]
        add("latency: webhook POST -> 202, p50", r["webhook_rtt"]["p50"], base["p50"], "ms")
        add("latency: webhook POST -> 202, p99", r["webhook_rtt"]["p99"], base["p99"], "ms")
        for sink in ("discord", "telegram"):
            s = r[sink]
            add(f"latency: POST -> {sink} message, p50", s["p50"], base["p50"], "ms")
            add(
                f"latency: POST -> {sink} message, p99 (n={s['n']})",
                s["p99"],
                base["p99"],
                "ms",
                target="< 25 ms",
                ok=s["p99"] < 25 and s["n"] == r["events"],
            )
            add(f"latency: POST -> {sink} message, max", s["max"], base["max"], "ms")
            add(f"latency: POST -> {sink}, first message after start", s["cold_ms"], None, "ms")
    if "fanout" in results:
        r = results["fanout"]
        for sink in ("discord", "telegram"):
            s = r[sink]
            ok = (
                not math.isnan(s["seconds"])
                and s["seconds"] <= 1.15 * s["bound"]
                and s["lost"] == 0
            )
            add(
                f"fan-out: 1 event -> {r['targets']} {sink} targets, all delivered",
                s["seconds"],
                s["bound"],
                "s",
                target="<= 1.15x bound, 0 lost",
                ok=ok,
            )
            out.append(
                (
                    f"fan-out: {sink} 429s / lost / duplicates",
                    f"{s['429s']} / {s['lost']} / {s['duplicates']}",
                    "-",
                    "-",
                    "0 lost" + (" met" if s["lost"] == 0 else " MISSED"),
                )
            )
    if "latency@postgresql" in results and "latency" in results:
        pg, lite = results["latency@postgresql"], results["latency"]
        for sink in ("discord", "telegram"):
            p99, base = pg[sink]["p99"], lite[sink]["p99"]
            add(
                f"latency on PostgreSQL: POST -> {sink} message, p99 (vs SQLite's)",
                p99,
                base,
                "ms",
                target="<= 2x SQLite",
                ok=p99 <= 2 * base and pg[sink]["n"] == pg["events"],
            )
        add(
            "latency on PostgreSQL: webhook POST -> 202, p99 (vs SQLite's)",
            pg["webhook_rtt"]["p99"],
            lite["webhook_rtt"]["p99"],
            "ms",
        )
    if "fanout@postgresql" in results:
        r = results["fanout@postgresql"]
        for sink in ("discord", "telegram"):
            s = r[sink]
            ok = (
                not math.isnan(s["seconds"])
                and s["seconds"] <= 1.15 * s["bound"]
                and s["lost"] == 0
            )
            add(
                f"fan-out on PostgreSQL, 1 process: 1 event -> {r['targets']} {sink} targets",
                s["seconds"],
                s["bound"],
                "s",
                target="<= 1.15x bound, 0 lost",
                ok=ok,
            )
    if "footprint" in results:
        r = results["footprint"]
        add(
            "footprint: RSS idle, both clients connected",
            r["bot_rss_mb"],
            r["bare_rss_mb"],
            "MiB",
            target="< 90 MiB",
            ok=r["bot_rss_mb"] < 90,
        )
        add("footprint: start -> listening", r["bot_listening_s"], r["bare_start_s"], "s")
        add(
            "footprint: start -> ready (every sink running)",
            r["bot_ready_s"],
            r["bare_start_s"],
            "s",
            target="< 2 s",
            ok=r["bot_ready_s"] < 2,
        )
    return out


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
        help="also run latency and fan-out with the bot on PostgreSQL: a postgresql:// URL"
        " whose user may create databases (each run gets a fresh one, dropped after)",
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
    # A timeout is a failure, not a figure: the run says so in its exit status too.
    return 1 if results.get("ingest", {}).get("drain_timeouts") else 0


if __name__ == "__main__":
    sys.exit(main())
