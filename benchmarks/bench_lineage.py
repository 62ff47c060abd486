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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
DAY = "2013-01-15"
MODES = ("file", "dead", "hang")


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


class Recorder(BaseHTTPRequestHandler):
    events: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.events.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


# ---- the events -------------------------------------------------------------------------------


def flight_facts_frame():
    """The real marts.flight_facts rows of DAY (bare DuckDB SQL of bench_pipeline), typed by the contract."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import duckdb
    from bench_pipeline import bare_sql

    from checks.flights import FlightFacts

    with tempfile.TemporaryDirectory(prefix="provline-lineage-data-") as tmp:
        db = Path(tmp) / "day.duckdb"
        bare_sql(DAY, DAY, db)
        with duckdb.connect(str(db), read_only=True) as con:
            frame = con.execute("SELECT * FROM marts.flight_facts").df()
    frame["flight_date"] = frame["flight_date"].astype("datetime64[ns]")
    return FlightFacts.to_schema().coerce_dtype(frame)


def step_lineage(frame):
    """A StepLineage for marts.flight_facts without a Dagster context, and what it emits."""
    import assets.flights.marts  # noqa: F401 - registers the tables
    from pipelines.factory import TABLES
    from pipelines.lineage.model import AssetRun, DatasetRef
    from pipelines.lineage.step import StepLineage
    from pipelines.quality import RuleResult

    spec = TABLES["marts.flight_facts"]
    step = StepLineage.__new__(StepLineage)
    step.spec, step.tables = spec, TABLES
    validation = SimpleNamespace(valid=frame, results=[RuleResult(rule, 0, len(frame)) for rule in spec.rules])
    started = time.perf_counter()
    output = step._output(validation, "d41d8cd98f00b204e9800998ecf8427e", len(frame), 312_000)
    build_s = time.perf_counter() - started
    inputs = [
        DatasetRef(name, f"{i:032x}", DAY if TABLES[name].partitioned else None) for i, name in enumerate(spec.inputs)
    ]
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
        fresh = LineageEmitter()  # what StepLineage does per step
        t1 = time.perf_counter()
        emitter.asset_started(run, inputs)
        emitter.asset_completed(run, inputs, output)
        t2 = time.perf_counter()
        fresh.close()
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


def replay_to_recorder(home: Path) -> dict:
    """`pipelines.lineage.replay` of the outbox to a live local server; what it received."""
    Recorder.events = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE"))}
    env.update(
        PROVLINE_HOME=str(home),
        OPENLINEAGE__TRANSPORT__TYPE="http",
        OPENLINEAGE__TRANSPORT__URL=f"http://127.0.0.1:{server.server_address[1]}",
    )
    code = (
        "from pipelines.lineage import replay; from pipelines.settings import get_settings; "
        "import json; r = replay(get_settings()); print(json.dumps(r.__dict__))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    server.shutdown()
    server.server_close()
    if out.returncode != 0:
        raise SystemExit(f"replay failed:\n{out.stderr[-3000:]}")
    keys = [(e["run"]["runId"], e["eventType"], e["eventTime"]) for e in Recorder.events]
    return {
        "result": json.loads(out.stdout.strip().splitlines()[-1]),
        "received": len(keys),
        "distinct": len(set(keys)),
        "remaining": outbox_count(home),
        "wall": wall,
    }


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
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_mode(args.child, args.assets)))
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
                    f"(runId, eventType, eventTime), replay says {r['result']}, {r['remaining']} left "
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
