"""Benchmark of issue 4: OpenLineage overhead per asset (one START + one COMPLETE).

The events are the factory's own for marts.flight_facts on 2013-01-15: `StepLineage._output` builds the
OutputInfo from the day's real rows (26 columns, SQL column lineage, the contract's 21 assertions, null
and distinct counts), then `LineageEmitter.asset_started` + `asset_completed` are timed per asset, in
a fresh PROVLINE_HOME per transport, each transport in its own process:

  file     the default: JSONL under PROVLINE_HOME/lineage
  dead     OPENLINEAGE__TRANSPORT__TYPE=http to a closed port on 127.0.0.1 (connection refused)
  hang     http to a local server that accepts and never answers, PROVLINE_LINEAGE_TIMEOUT_S=0.5

After `dead`, the outbox is counted and `pipelines.lineage.replay` sends it to a live local recording
server; the received events are counted (and deduplicated by runId + eventType + eventTime).

    python benchmarks/bench_lineage.py --assets 300

Benchmark of issue 11 (`--delivery`): one run of EVENTS events through a healthy backend and through a
flaky one (tests/lineage/lineage_support.Backend: 30% HTTP 500, 10% answered only LATE_S = 3 s after
the 2 s timeout, by a seeded schedule), each in its own process. The run is a loop as a real run emits:
the Dagster run's START, then per asset START, the step's work, COMPLETE (the same flight_facts event
as above), then the run's COMPLETE, then `LineageEmitter.close()` (the exit wait). The step's work is
pure-Python CPU (`--step-ms`, calibrated once and identical in both runs), so the background drainer
competes with it for the GIL: the worst case for the emitting code. Overhead = the loop's wall time,
flaky over healthy. Then at most one `provline lineage replay` (the real CLI), and the backend's
receipts are checked: every event delivered (deduplicated by runId + eventType + eventTime), 0 lost,
START received before the terminal event of each run.

    python benchmarks/bench_lineage.py --delivery --events 1000 --step-ms 500
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "lineage"))
from lineage_support import Backend, event_key  # noqa: E402 - the tests' loopback backend

DAY = "2013-01-15"
MODES = ("file", "dead", "hang")
DELIVERY_MODES = ("healthy", "flaky")
TIMEOUT_S = 2.0
LATE_S = TIMEOUT_S + 3.0


# ---- local servers ----------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HangingServer:
    """Accepts connections and never answers (nor closes them) until stopped."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)
        for conn in self.held:
            conn.close()
        self.sock.close()


# ---- the events -------------------------------------------------------------------------------


def flight_facts_frame():
    """The real marts.flight_facts rows of DAY (bare DuckDB SQL of bench_pipeline), typed by the contract."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import duckdb
    from bench_pipeline import bare_sql

    from checks.flights import FlightFacts

    with tempfile.TemporaryDirectory(prefix="provline-lineage-data-") as tmp:
        db = Path(tmp) / "day.duckdb"
        bare_sql(db, None)
        with duckdb.connect(str(db), read_only=True) as con:
            frame = con.execute("SELECT * FROM marts.flight_facts WHERE flight_date = CAST(? AS DATE)", [DAY]).df()
    frame["flight_date"] = frame["flight_date"].astype("datetime64[ns]")
    return FlightFacts.to_schema().coerce_dtype(frame)


def step_lineage(frame):
    """A StepLineage for marts.flight_facts without a Dagster context, and what it emits."""
    from pipelines.definitions import catalog
    from pipelines.lineage.model import AssetRun, DatasetRef
    from pipelines.lineage.step import StepLineage, partition_stats
    from pipelines.quality import RuleResult
    from pipelines.rows import Rows

    spec = catalog["marts.flight_facts"]
    step = StepLineage.__new__(StepLineage)
    step.spec = spec
    validation = SimpleNamespace(valid=Rows.load(frame.assign(_partition=DAY)),
                                 results={DAY: [RuleResult(rule, 0, len(frame)) for rule in spec.rules]})
    started = time.perf_counter()
    stats = partition_stats(validation.valid, spec.columns)[DAY]
    output = step._output(validation, DAY, "d41d8cd98f00b204e9800998ecf8427e", stats, step._column_lineage())
    build_s = time.perf_counter() - started
    inputs = [DatasetRef(i.table, f"{n:032x}", DAY if i.partitioned else None) for n, i in enumerate(spec.inputs)]
    return spec, output, inputs, build_s, AssetRun, DatasetRef


def run_mode(mode: str, assets: int) -> dict:
    """Child process: time START + COMPLETE for `assets` assets; the settings come from the environment."""
    from datetime import datetime, timedelta

    from pipelines.lineage.emitter import LineageEmitter

    frame = flight_facts_frame()
    spec, output, inputs, build_s, AssetRun, _ = step_lineage(frame)
    emitter = LineageEmitter()
    construct = []
    per_asset = []
    start_day = datetime(2013, 1, 15)
    for i in range(assets):  # no warm-up: the first asset pays the first refusal / stall, as in a run
        run = AssetRun(
            dagster_run_id=f"bench-{i:06d}-0000-0000-000000000000",
            dagster_job_name="__ASSET_JOB",
            asset_key=spec.table,
            partition=DAY,
            attempt=1,
            nominal_start=start_day,
            nominal_end=start_day + timedelta(days=1),
            code_version=spec.code_version,
            sql=spec.sql,
            source_path=spec.source_file,
            description=spec.description,
            tags={"group": "flights"},
        )
        t0 = time.perf_counter()
        LineageEmitter()  # what StepLineage does per step (and never closes)
        t1 = time.perf_counter()
        emitter.asset_started(run, inputs)
        emitter.asset_completed(run, inputs, output)
        t2 = time.perf_counter()
        construct.append(t1 - t0)
        per_asset.append(t2 - t1)
    emitter.close()
    return {
        "per_asset": per_asset,
        "construct": construct,
        "build_output": build_s,
        "columns": len(output.columns),
        "assertions": len(output.assertions),
        "lineage_columns": len(output.column_lineage),
        "rows": len(frame),
    }


# ---- issue 11: a run through a flaky backend --------------------------------------------------


def busy(iterations: int) -> int:
    """A step's work: pure-Python CPU, holding the GIL as much as a Python step does."""
    return sum(i * i for i in range(iterations))


def calibrate(step_ms: float) -> int:
    """Iterations of `busy` that take step_ms here, now (measured once, used by both runs)."""
    started = time.perf_counter()
    busy(1_000_000)
    return int(1_000_000 * step_ms / 1000 / (time.perf_counter() - started))


def run_delivery(events: int, iterations: int) -> dict:
    """Child process: one run of `events` events, paced by the step's work; wall time of the whole loop."""
    from datetime import date, datetime, timedelta

    from pipelines.lineage.emitter import LineageEmitter

    spec, output, inputs, _, AssetRun, _ = step_lineage(flight_facts_frame())
    assets = (events - 2) // 2
    emitter = LineageEmitter()
    emits: list[float] = []

    def timed(emit, *args) -> None:
        t0 = time.perf_counter()
        emit(*args)
        emits.append(time.perf_counter() - t0)

    started = time.perf_counter()
    timed(emitter.run_started, "bench-delivery-run", "flights_daily")
    for i in range(assets):
        day = date(2013, 1, 1) + timedelta(days=i)  # one asset run per partition: distinct run ids
        run = AssetRun(
            dagster_run_id="bench-delivery-run", dagster_job_name="flights_daily", asset_key=spec.table,
            partition=day.isoformat(), attempt=1, nominal_start=datetime(day.year, day.month, day.day),
            nominal_end=datetime(day.year, day.month, day.day) + timedelta(days=1), code_version=spec.code_version,
            sql=spec.sql, source_path=spec.source_file, description=spec.description, tags={"group": "flights"},
        )  # fmt: skip
        timed(emitter.asset_started, run, inputs)
        busy(iterations)
        timed(emitter.asset_completed, run, inputs, output)
    timed(emitter.run_finished, "bench-delivery-run", "flights_daily", "COMPLETE")
    closing = time.perf_counter()
    emitter.close()
    ended = time.perf_counter()
    return {"wall": ended - started, "close": ended - closing, "emits": emits, "emitted": 2 + 2 * assets}


def delivery_child(mode: str, events: int, iterations: int, home: Path, server: Backend) -> dict:
    env = {**http_env(home, server.url), "PROVLINE_LINEAGE_TIMEOUT_S": str(TIMEOUT_S)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--events", str(events),
           "--iterations", str(iterations)]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def terminal_before_start(accepted: list[dict]) -> int:
    """Runs whose terminal event was received before their START (first receipts): must be 0."""
    first: dict[tuple[str, str], int] = {}
    for i, event in enumerate(accepted):
        first.setdefault((event["run"]["runId"], event["eventType"]), i)
    return sum(1 for (rid, kind), i in first.items() if kind != "START" and first.get((rid, "START"), i + 1) > i)


def delivery_run(mode: str, events: int, iterations: int, seed: int) -> dict:
    """One run through a healthy or flaky backend, then one replay; what the backend received."""
    server = start_backend()
    if mode == "flaky":
        server.mode, server.seed, server.refuse, server.late, server.late_s = "flaky", seed, 0.3, 0.1, LATE_S
    with tempfile.TemporaryDirectory(prefix=f"provline-delivery-{mode}-") as tmp:
        home = Path(tmp) / "home"
        load = os.getloadavg()[0]
        result = delivery_child(mode, events, iterations, home, server)
        during = len({event_key(e) for e in server.accepted})
        left = outbox_count(home)
        result["replay"] = replay_cli(home, server)
        time.sleep(LATE_S + 1)  # late answers of the replay land in the backend
        result["remaining"] = outbox_count(home)
    stop_backend(server)
    keys = [event_key(e) for e in server.accepted]
    fates = Counter(fate for _, fate in server.fates)
    result.update(
        load=load, during=during, left=left, received=len(keys), distinct=len(set(keys)),
        out_of_order=terminal_before_start(server.accepted), attempts=server.attempts, fates=dict(fates),
    )  # fmt: skip
    return result


def delivery_table(runs: dict[str, list[dict]], step_ms: float) -> str:
    lines = [
        "| backend | load1 | events | run wall s | emission median / p95 / max ms | exit wait s | delivered "
        "during the run | outbox at the end | replay (wall) | delivered, distinct | lost | duplicates "
        "| out of order | requests (500 / late) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for mode, results in runs.items():
        for r in results:
            e = summary(r["emits"])
            lines.append(
                f"| {mode} | {r['load']:.1f} | {r['emitted']} | {r['wall']:.1f} | {e['median']:.2f} / "
                f"{e['p95']:.2f} / {e['max']:.1f} | {r['close']:.2f} | {r['during']} | {r['left']} | "
                f"`{r['replay']['output']}` ({r['replay']['wall']:.1f} s) | {r['distinct']} | "
                f"{r['emitted'] - r['distinct']} | {r['received'] - r['distinct']} | {r['out_of_order']} | "
                f"{r['attempts']} ({r['fates'].get('error', 0)} / {r['fates'].get('late', 0)}) |"
            )
    healthy = statistics.median(r["wall"] for r in runs["healthy"])
    flaky = statistics.median(r["wall"] for r in runs["flaky"])
    emits = {m: statistics.median(v * 1000 for r in rs for v in r["emits"]) for m, rs in runs.items()}
    lines += [
        "",
        f"Step work {step_ms:.0f} ms of pure-Python CPU per asset. Run wall time, median: healthy "
        f"{healthy:.1f} s, flaky {flaky:.1f} s: **overhead {100 * (flaky / healthy - 1):+.1f}%**. "
        f"Emission median: healthy {emits['healthy']:.2f} ms, flaky {emits['flaky']:.2f} ms "
        f"({emits['flaky'] / emits['healthy']:.2f}x).",
    ]
    return "\n".join(lines)


def delivery_main(args: argparse.Namespace) -> None:
    iterations = calibrate(args.step_ms)
    print(f"load before: {os.getloadavg()}; {iterations} iterations = {args.step_ms} ms of work", file=sys.stderr)
    runs: dict[str, list[dict]] = {mode: [] for mode in DELIVERY_MODES}
    for _ in range(args.repeat):
        for mode in DELIVERY_MODES:
            runs[mode].append(delivery_run(mode, args.events, iterations, args.seed))
            print(f"{mode} done", file=sys.stderr)
    print(delivery_table(runs, args.step_ms))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    print(f"load after: {os.getloadavg()}", file=sys.stderr)


# ---- parent: one child per transport, then the outbox and replay ------------------------------


def child(mode: str, assets: int, home: Path, extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE"))}
    env.update(PROVLINE_HOME=str(home), **extra_env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--assets", str(assets)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def outbox_count(home: Path) -> int:
    return sum(1 for p in (home / "outbox").rglob("*.json") if not p.name.startswith("."))


def file_events(home: Path) -> int:
    path = home / "lineage" / "events.jsonl"
    return sum(1 for _ in open(path)) if path.exists() else 0


def start_backend() -> Backend:
    server = Backend(check_schema=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_backend(server: Backend) -> None:
    server.release.set()
    server.shutdown()
    server.server_close()


def http_env(home: Path, url: str) -> dict[str, str]:
    """This environment without provline or OpenLineage settings, sending to url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE"))}
    env.update(PROVLINE_HOME=str(home), OPENLINEAGE__TRANSPORT__TYPE="http", OPENLINEAGE__TRANSPORT__URL=url)
    return env


def replay_cli(home: Path, server: Backend) -> dict:
    """One `provline lineage replay` (the console script) against server; its output and wall time."""
    started = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("provline")), "lineage", "replay"], cwd=REPO,
                         env=http_env(home, server.url), capture_output=True, text=True, timeout=900)  # fmt: skip
    if out.returncode not in (0, 1):
        raise SystemExit(f"replay failed:\n{out.stderr[-3000:]}")
    return {"output": out.stdout.strip(), "exit": out.returncode, "wall": time.perf_counter() - started}


def replay_to_recorder(home: Path) -> dict:
    """`provline lineage replay` of the outbox to a live local server; what it received."""
    server = start_backend()
    replayed = replay_cli(home, server)
    stop_backend(server)
    keys = [event_key(e) for e in server.accepted]
    return {**replayed, "received": len(keys), "distinct": len(set(keys)), "remaining": outbox_count(home)}


def summary(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    return {
        "median": statistics.median(ms),
        "p95": ms[int(0.95 * (len(ms) - 1))],
        "max": ms[-1],
        "mean": statistics.fmean(ms),
    }


def table(results: dict[str, dict], assets: int) -> str:
    labels = {
        "file": "file transport (default)",
        "dead": "HTTP, dead backend (connection refused)",
        "hang": "HTTP, hanging backend, PROVLINE_LINEAGE_TIMEOUT_S=0.5",
    }
    lines = [
        "| transport | median ms | p95 ms | max ms | mean ms | first asset ms | stalls > 250 ms | "
        "LineageEmitter() per step, median ms | outbox after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        s, c = summary(r["per_asset"]), summary(r["construct"])
        stalls = sum(v > 0.25 for v in r["per_asset"])
        lines.append(
            f"| {labels[mode]} | {s['median']:.2f} | {s['p95']:.2f} | {s['max']:.1f} | {s['mean']:.2f} | "
            f"{r['per_asset'][0] * 1000:.1f} | {stalls} | {c['median']:.2f} | {r['outbox']} |"
        )
    any_r = next(iter(results.values()))
    lines.append("")
    lines.append(
        f"Per asset = `asset_started` + `asset_completed` (2 events), {assets} assets, no warm-up; "
        f"output: {any_r['columns']} columns, {any_r['lineage_columns']} with column lineage, "
        f"{any_r['assertions']} assertions, metrics over {any_r['rows']} rows. Building that OutputInfo "
        f"(`StepLineage._output`: null/distinct counts + SQL column lineage) took "
        f"{any_r['build_output'] * 1000:.1f} ms once per asset, not included above."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=300, help="assets (START + COMPLETE) per transport")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of file,dead,hang")
    parser.add_argument("--json", type=Path, help="write the raw timings here")
    parser.add_argument("--delivery", action="store_true", help="issue 11: a run through a healthy and a flaky backend")
    parser.add_argument("--events", type=int, default=1000, help="--delivery: events per run")
    parser.add_argument("--step-ms", type=float, default=500, help="--delivery: CPU work per asset, ms")
    parser.add_argument("--repeat", type=int, default=1, help="--delivery: runs per backend, interleaved")
    parser.add_argument("--seed", type=int, default=11, help="--delivery: the flaky backend's schedule")
    parser.add_argument("--child", choices=MODES + DELIVERY_MODES, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child in DELIVERY_MODES:
        print(json.dumps(run_delivery(args.events, args.iterations)))
        return 0
    if args.child:
        print(json.dumps(run_mode(args.child, args.assets)))
        return 0
    if args.delivery:
        delivery_main(args)
        return 0
    print(f"load before: {os.getloadavg()}", file=sys.stderr)
    results: dict[str, dict] = {}
    notes = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"provline-lineage-{mode}-") as tmp:
            home = Path(tmp) / "home"
            hang = HangingServer() if mode == "hang" else None
            extra = {}
            if mode == "dead":
                extra = {
                    "OPENLINEAGE__TRANSPORT__TYPE": "http",
                    "OPENLINEAGE__TRANSPORT__URL": f"http://127.0.0.1:{closed_port()}",
                }
            if hang is not None:
                extra = {
                    "OPENLINEAGE__TRANSPORT__TYPE": "http",
                    "PROVLINE_LINEAGE_TIMEOUT_S": "0.5",
                    "OPENLINEAGE__TRANSPORT__URL": f"http://127.0.0.1:{hang.port}",
                }
            try:
                results[mode] = child(mode, args.assets, home, extra)
            finally:
                if hang is not None:
                    hang.stop()
            results[mode]["outbox"] = outbox_count(home)
            if mode == "file":
                notes.append(f"- file: {file_events(home)} events in lineage/events.jsonl (expected {2 * args.assets})")
            if mode == "dead":
                queued = results[mode]["outbox"]
                r = replay_to_recorder(home)
                results[mode]["replay"] = r
                notes.append(
                    f"- dead: {queued} events in the outbox (expected {2 * args.assets}); replay to a "
                    f"live recording server: {r['received']} received, {r['distinct']} distinct "
                    f"(runId, eventType, eventTime), replay says `{r['output']}`, {r['remaining']} left "
                    f"in the outbox, {r['wall']:.1f} s wall"
                )
        print(f"{mode} done", file=sys.stderr)
    print(table(results, args.assets))
    print()
    print("\n".join(notes))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
