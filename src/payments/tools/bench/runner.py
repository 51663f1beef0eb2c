"""``payments bench``: closed-loop makePayment load against a fresh stack, next to its ceiling.

wrk drives the load (a C load generator: a Python one would take CPU from the two processes it
measures on a small machine). Each request is a new payment id over 100 accounts. The same load
against a one-state-write handler on the same restate-server is the ceiling, and wrk against the
ingress health check measures what the generator itself can send. Beside each window's figures,
the CPU and peak memory of restate-server, the service and PostgreSQL (the ledger).
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
    """The peak of the RSS summed over the process tree."""


@dataclass(frozen=True)
class SharedUsage(Usage):
    """What a tree of processes sharing memory (PostgreSQL's postmaster and its backends) used.

    Summed RSS counts the shared buffers once per process that touched them, so it overstates such
    a tree; summed PSS splits each shared page between the processes that map it.
    """

    peak_pss_mib: float
    """The peak of the PSS summed over the process tree: what the table and the plot show."""


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
    database: SharedUsage | None
    """PostgreSQL's postmaster and its children; None when the stack uses a database of its own."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Row:
        """The row that ``dataclasses.asdict`` turned into ``raw``."""
        database = raw["database"]
        return cls(
            **{
                **raw,
                "restate_server": Usage(**raw["restate_server"]),
                "service": Usage(**raw["service"]),
                "database": None if database is None else SharedUsage(**database),
            }
        )


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the whole benchmark, print its table, write its JSON and plot; return the report."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed; `make bench` installs it from Debian's packages")
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="payments-bench-") as scratch,
        LaunchedStack(Path(scratch), env=options.env) as stack,
        _minimal_target(stack) as target,
    ):
        processes = {
            "restate-server": psutil.Process(stack.pid(Part.RESTATE_SERVER)),
            "payments": psutil.Process(stack.pid(Part.SERVICE)),
            "minimal": target,
        }
        database = _database(stack)
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
                        database=database,
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
    database: psutil.Process | None,
) -> Row:
    service = processes[target]
    with contextlib.ExitStack() as sampling:
        server = sampling.enter_context(_sampling(processes["restate-server"]))
        service_tree = sampling.enter_context(_sampling(service))
        database_tree = None if database is None else sampling.enter_context(_sampling(database, pss=True))
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
        restate_server=server.usage(),
        service=service_tree.usage(),
        database=None if database_tree is None else database_tree.shared_usage(),
    )


class _Tree:
    """A process and its descendants, sampled while a window is measured."""

    def __init__(self, root: psutil.Process, *, pss: bool) -> None:
        self.root = root
        self.pss = pss
        self.peak_rss = 0
        self.peak_pss = 0
        self.cpu_cores = 0.0

    def processes(self) -> list[psutil.Process]:
        """The tree now: looked up at every sample, since PostgreSQL starts a backend per connection."""
        with contextlib.suppress(psutil.Error):
            return [self.root, *self.root.children(recursive=True)]
        return []

    def cpu_seconds(self) -> float:
        """CPU used by the tree so far, the children that exited and were waited for included.

        A backend that ends during the window moves from its own times to its parent's children
        times, so the difference between two readings counts it once.
        """
        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
                if process is self.root:
                    total += times.children_user + times.children_system
        return total

    def sample_memory(self) -> None:
        rss = pss = 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                if self.pss:
                    full = process.memory_full_info()
                    rss, pss = rss + full.rss, pss + full.pss
                else:
                    rss += process.memory_info().rss
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def usage(self) -> Usage:
        return Usage(self.cpu_cores, _mib(self.peak_rss))

    def shared_usage(self) -> SharedUsage:
        return SharedUsage(self.cpu_cores, _mib(self.peak_rss), _mib(self.peak_pss))


def _mib(size: int) -> float:
    return round(size / 2**20, 1)


@contextlib.contextmanager
def _sampling(process: psutil.Process, *, pss: bool = False, interval: float = 0.2) -> Iterator[_Tree]:
    """Measure a process tree's CPU and peak memory while the block runs, into the tree yielded."""
    tree = _Tree(process, pss=pss)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            tree.sample_memory()

    started, cpu_before = time.monotonic(), tree.cpu_seconds()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield tree
    finally:
        stop.set()
        sampler.join()
        tree.cpu_cores = round((tree.cpu_seconds() - cpu_before) / (time.monotonic() - started), 2)


def _database(stack: LaunchedStack) -> psutil.Process | None:
    """PostgreSQL's postmaster, or None when the stack was pointed at a database of its own."""
    if stack.settings.database_url:
        return None
    return psutil.Process(stack.pid(Part.DATABASE))


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
    f"{'postgres cpu':>14}{'postgres MiB':>14}"
)


def _format_row(row: Row) -> str:
    database = (
        f"{'-':>14}{'-':>14}"
        if row.database is None
        else f"{row.database.cpu_cores:>14.2f}{row.database.peak_pss_mib:>14.1f}"
    )
    return (
        f"{row.target:<9}{row.concurrency:>5}{row.per_second:>9.1f}{row.p50_ms:>9.2f}"
        f"{row.p90_ms:>9.2f}{row.p99_ms:>9.2f}{row.errors:>8}"
        f"{row.restate_server.cpu_cores:>13.2f}{row.restate_server.peak_rss_mib:>13.1f}"
        f"{row.service.cpu_cores:>13.2f}{row.service.peak_rss_mib:>13.1f}{database}"
    )


def _print_table(report: dict[str, Any]) -> None:
    print(_HEADER)
    for raw in report["rows"]:
        print(_format_row(Row.from_json(raw)))
    ratios = ", ".join(f"c={c}: {r:.2f}" for c, r in report["payments_over_minimal"].items())
    print(f"payments/s as a fraction of the minimal handler: {ratios}")
    print(f"load generator ceiling (wrk, ingress health check, c=64): {report['generator_per_second']:.0f}/s")
    print("MiB: peak RSS summed over each process tree; for postgres, peak PSS summed over the postmaster")
    print("and its children (their RSS counts the shared buffers once per backend)")


_PROCESSES = (
    ("restate_server", "restate-server", "C0"),
    ("service", "service", "C1"),
    ("database", "postgres", "C2"),
)
"""Each process's field in a row, its name and its colour in the plot (the line style is the target's)."""


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only the plot needs it, and it is slow to import

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, ((throughput, latency), (cpu, memory)) = plt.subplots(2, 2, figsize=(11, 8))
    for target, style in (("payments", "o-"), ("minimal", "s--")):
        rows = [Row.from_json(raw) for raw in report["rows"] if raw["target"] == target]
        concurrency = [row.concurrency for row in rows]
        throughput.plot(concurrency, [row.per_second for row in rows], style, label=target)
        latency.plot(concurrency, [row.p50_ms for row in rows], style, label=f"{target} p50")
        latency.plot(concurrency, [row.p99_ms for row in rows], style, alpha=0.5, label=f"{target} p99")
        for field, name, colour in _PROCESSES:
            usages: list[Usage | None] = [getattr(row, field) for row in rows]
            if any(usage is None for usage in usages):
                continue
            label = f"{name} ({target})"
            cpu.plot(
                concurrency, [u.cpu_cores for u in usages if u is not None], style, color=colour, label=label
            )
            memory.plot(
                concurrency,
                [
                    u.peak_pss_mib if isinstance(u, SharedUsage) else u.peak_rss_mib
                    for u in usages
                    if u is not None
                ],
                style,
                color=colour,
                label=label,
            )
    throughput.set(title="throughput", xlabel="concurrency", ylabel="requests/s", xscale="log")
    latency.set(title="latency", xlabel="concurrency", ylabel="ms", xscale="log", yscale="log")
    cpu.set(title="CPU (cores busy)", xlabel="concurrency", ylabel="cores", xscale="log")
    memory.set(
        title="peak memory (RSS summed; postgres: PSS summed)",
        xlabel="concurrency",
        ylabel="MiB",
        xscale="log",
    )
    for axes in (throughput, latency, cpu, memory):
        axes.legend(fontsize="small")
        axes.grid(visible=True, alpha=0.3)
    figure.suptitle(f"payments bench, commit {report['commit']}, {report['when']}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
