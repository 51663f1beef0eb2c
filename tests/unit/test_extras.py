"""The product and the CLI's parser load without the tools' extra dependencies (psutil, matplotlib).

They come only with the ``tools`` extra, which the service does not need: this is what lets it run
without them. The check runs in a fresh interpreter, since this one has loaded the tools already.
"""

from __future__ import annotations

import json
import subprocess
import sys

PRODUCT = ("payments.domain", "payments.service", "payments.runtime")
LIGHT_TOOLS = frozenset(
    {
        "payments.tools",
        "payments.tools.chaos",
        "payments.tools.chaos.options",
        "payments.tools.bench",
        "payments.tools.bench.options",
    }
)
"""The tools' modules that building the CLI's parser may load: packages and option dataclasses."""
LOAD_EVERYTHING = f"""
import importlib, json, pkgutil, sys
import payments.cli, payments.client, payments.config
for package in {PRODUCT!r}:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)
payments.cli.build_parser()
print(json.dumps(sorted(sys.modules)))
"""


def test_the_product_and_the_parser_load_without_the_tools_extras() -> None:
    output = subprocess.run(
        [sys.executable, "-c", LOAD_EVERYTHING], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(output))

    assert {"payments.service.serve", "payments.runtime.supervisor", "payments.cli"} <= loaded
    assert {"psutil", "matplotlib"} & loaded == set()
    assert {name for name in loaded if name.startswith("payments.tools")} <= LIGHT_TOOLS


WITHOUT_PSUTIL = "import sys; sys.modules['psutil'] = None; from payments import cli; sys.exit(cli.main())"


def test_a_tool_without_its_extra_says_how_to_install_it_in_one_line() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSUTIL, "chaos", "--duration", "1"],
        check=False,
        capture_output=True,
        text=True,
    )

    assert finished.returncode == 1
    hint = "payments: this command needs the tools extra: pip install 'restate-payments[tools]'"
    assert finished.stderr.splitlines() == [f"{hint} (import of psutil halted; None in sys.modules)"]
