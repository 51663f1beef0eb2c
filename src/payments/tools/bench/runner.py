"""``payments bench``: closed-loop makePayment load against a fresh stack, next to its ceiling.

wrk drives the load (a C load generator: a Python one would take CPU from the two processes it
measures on a small machine). Each request is a new payment id over 100 accounts. The same load
against a one-state-write handler on the same restate-server is the ceiling, and wrk against the
ingress health check measures what the generator itself can send.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from payments.config import Part
from payments.runtime import health, identity
from payments.runtime.admin import Admin
from payments.runtime.processes import die_with_parent, free_port, terminate_popen
from payments.tools.bench.options import BenchOptions
from payments.tools.launcher import LaunchedStack, exited, wait_ready

Target = Literal["payments", "minimal", "health"]
ACCOUNTS = 100
_RESULT_MARKER = "BENCH_RESULT "
"""What load.lua's ``done`` prints before its figures."""
_SCRIPT = importlib.resources.files("payments.tools.bench") / "load.lua"


class BenchError(RuntimeError):
    """The benchmark cannot run; the message says why."""


@dataclass(frozen=True)
class Usage:
    """What one process used during a measured window."""

    cpu_cores: float
    """CPU seconds per wall-clock second: 1.0 is one core busy all the time."""
    peak_rss_mib: float


@dataclass(frozen=True)
class Row:
    """One measured window: a target at one concurrency."""

    target: str
    concurrency: int
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    restate_server: Usage
    service: Usage


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the whole benchmark, print its table, write its JSON and plot; return the report."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed; `make bench` installs it from Debian's packages")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="payments-bench-") as scratch:
        data_dir = Path(scratch) / "stack"
        with LaunchedStack(data_dir, env=options.env) as stack, _minimal_target(stack) as target:
            processes = {
                "restate-server": psutil.Process(stack.pid(Part.RESTATE_SERVER)),
                "payments": psutil.Process(stack.pid(Part.SERVICE)),
                "minimal": target,
            }
            ingress = stack.settings.ingress_url
            for name in ("payments", "minimal"):
                for concurrency in options.concurrencies:
                    warmup = options.warmup_seconds
                    _load(wrk, ingress, name, concurrency=concurrency, seconds=warmup, prefix="warmup")
                    rows.append(
                        _measure(
                            wrk,
                            ingress,
                            name,
                            concurrency=concurrency,
                            options=options,
                            processes=processes,
                        )
                    )
                    print(_format_row(rows[-1]), file=sys.stderr, flush=True)
            generator = _load(
                wrk,
                ingress,
                "health",
                concurrency=64,
                seconds=options.measure_seconds / 2,
                prefix="ceiling",
            )
    report = _report(options, rows, generator["requests"] / (generator["duration_us"] / 1e6))
    _print_table(report)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    if options.plot is not None:
        _plot(report, options.plot)
    return report


def _load(
    wrk: str, ingress: str, target: Target, *, concurrency: int, seconds: float, prefix: str
) -> dict[str, int]:
    """Run wrk once and return the figures its Lua ``done`` printed."""
    with importlib.resources.as_file(_SCRIPT) as script:
        completed = subprocess.run(
            [
                wrk,
                f"--threads={min(concurrency, 2)}",
                f"--connections={concurrency}",
                f"--duration={max(1, round(seconds))}s",
                "--timeout=10s",
                f"--script={script}",
                ingress,
                "--",
                target,
                f"{prefix}-{time.time_ns()}",
                str(ACCOUNTS),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_MARKER):
            result: dict[str, int] = json.loads(line.removeprefix(_RESULT_MARKER))
            return result
    raise BenchError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")


def _measure(
    wrk: str,
    ingress: str,
    target: Target,
    *,
    concurrency: int,
    options: BenchOptions,
    processes: dict[str, psutil.Process],
) -> Row:
    service = processes[target]
    with _sampling(processes["restate-server"]) as server_usage, _sampling(service) as service_usage:
        result = _load(
            wrk,
            ingress,
            target,
            concurrency=concurrency,
            seconds=options.measure_seconds,
            prefix="measure",
        )
    seconds = result["duration_us"] / 1e6
    return Row(
        target=target,
        concurrency=concurrency,
        per_second=round((result["requests"] - result["non_2xx"]) / seconds, 1),
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        requests=result["requests"],
        errors=result["errors"] + result["non_2xx"],
        restate_server=server_usage[0],
        service=service_usage[0],
    )


@contextlib.contextmanager
def _sampling(process: psutil.Process, interval: float = 0.2) -> Iterator[list[Usage]]:
    """Measure a process tree's CPU and peak RSS while the block runs; the result fills the list."""
    tree = [process, *process.children(recursive=True)]
    stop = threading.Event()
    peak = 0

    def sample() -> None:
        nonlocal peak
        while not stop.wait(interval):
            with contextlib.suppress(psutil.Error):
                peak = max(peak, sum(p.memory_info().rss for p in tree))

    def cpu_seconds() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in tree)

    result: list[Usage] = []
    started, cpu_before = time.monotonic(), cpu_seconds()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        elapsed = time.monotonic() - started
        result.append(Usage(round((cpu_seconds() - cpu_before) / elapsed, 2), round(peak / 2**20, 1)))


@contextlib.contextmanager
def _minimal_target(stack: LaunchedStack) -> Iterator[psutil.Process]:
    """Serve the ceiling's handler next to the payment service and register it."""
    settings = dataclasses.replace(
        stack.settings,
        service_port=free_port(),
        identity_key=identity.public_key(identity.ensure_private_key(stack.settings.signing_key)),
    )
    log_path = stack.settings.data_dir / "logs" / "bench-target.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "payments.tools.bench.target"],
            env={**os.environ, **settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - one prctl call, no lock taken
        )
    try:
        asyncio.run(_wait_until_answers(f"{settings.service_url}/health", process, log_path))
        _register(stack.settings.admin_url, settings.service_url)
        wait_ready(stack.settings, None, log_path)
        yield psutil.Process(process.pid)
    finally:
        terminate_popen(process, 10)


async def _wait_until_answers(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    try:
        await health.wait_until_answers(
            [url], exited=exited(process), seconds=30, what="the ceiling's service"
        )
    except health.NotReadyError as error:
        raise BenchError(f"{error}; see {log_path}") from None


def _register(admin_url: str, service_url: str) -> None:
    async def register() -> None:
        async with Admin(admin_url) as admin:
            await admin.register(service_url)

    asyncio.run(register())


def _report(options: BenchOptions, rows: Sequence[Row], generator_per_second: float) -> dict[str, Any]:
    by_key = {(row.target, row.concurrency): row for row in rows}
    ratios = {
        str(c): round(by_key["payments", c].per_second / by_key["minimal", c].per_second, 3)
        for c in options.concurrencies
        if by_key["minimal", c].per_second > 0
    }
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
        "options": {
            "concurrencies": list(options.concurrencies),
            "warmup_seconds": options.warmup_seconds,
            "measure_seconds": options.measure_seconds,
            "env": options.env,
        },
        "rows": [dataclasses.asdict(row) for row in rows],
        "payments_over_minimal": ratios,
        "generator_per_second": round(generator_per_second, 1),
        "cpu_count": os.cpu_count(),
    }


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    return "unknown"


_HEADER = (
    f"{'target':<9}{'conc':>5}{'per s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
    f"{'restate cpu':>13}{'restate MiB':>13}{'service cpu':>13}{'service MiB':>13}"
)


def _format_row(row: Row) -> str:
    return (
        f"{row.target:<9}{row.concurrency:>5}{row.per_second:>9.1f}{row.p50_ms:>9.2f}"
        f"{row.p90_ms:>9.2f}{row.p99_ms:>9.2f}{row.errors:>8}"
        f"{row.restate_server.cpu_cores:>13.2f}{row.restate_server.peak_rss_mib:>13.1f}"
        f"{row.service.cpu_cores:>13.2f}{row.service.peak_rss_mib:>13.1f}"
    )


def _print_table(report: dict[str, Any]) -> None:
    print(_HEADER)
    for raw in report["rows"]:
        row = Row(
            **{
                **raw,
                "restate_server": Usage(**raw["restate_server"]),
                "service": Usage(**raw["service"]),
            }
        )
        print(_format_row(row))
    ratios = ", ".join(f"c={c}: {r:.2f}" for c, r in report["payments_over_minimal"].items())
    print(f"payments/s as a fraction of the minimal handler: {ratios}")
    print(f"load generator ceiling (wrk, ingress health check, c=64): {report['generator_per_second']:.0f}/s")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only the plot needs it, and it is slow to import

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target, style in (("payments", "o-"), ("minimal", "s--")):
        rows = [row for row in report["rows"] if row["target"] == target]
        concurrency = [row["concurrency"] for row in rows]
        throughput.plot(concurrency, [row["per_second"] for row in rows], style, label=target)
        latency.plot(concurrency, [row["p50_ms"] for row in rows], style, label=f"{target} p50")
        latency.plot(concurrency, [row["p99_ms"] for row in rows], style, alpha=0.5, label=f"{target} p99")
    throughput.set(title="throughput", xlabel="concurrency", ylabel="requests/s", xscale="log")
    latency.set(title="latency", xlabel="concurrency", ylabel="ms", xscale="log", yscale="log")
    for axes in (throughput, latency):
        axes.legend()
        axes.grid(visible=True, alpha=0.3)
    figure.suptitle(f"payments bench, commit {report['commit']}, {report['when']}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
