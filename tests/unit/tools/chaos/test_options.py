"""The options of a chaos run: refused when a run cannot go with them, and light to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from payments.config import Part
from payments.tools.chaos.options import ChaosOptions


@pytest.mark.parametrize(
    "options",
    [
        ChaosOptions(duration=0),
        ChaosOptions(ids=0),
        ChaosOptions(kill_min=3, kill_max=2),
        ChaosOptions(nodes=0),
        ChaosOptions(nodes=10),
        ChaosOptions(nodes=3, max_nodes_down=0),
        ChaosOptions(nodes=3, max_nodes_down=4),
        ChaosOptions(max_nodes_down=2),
        ChaosOptions(expiry=0),
    ],
)
def test_options_a_run_cannot_go_with_are_refused(options: ChaosOptions) -> None:
    with pytest.raises(ValueError, match="--"):
        options.validate()


def test_the_options_load_without_the_rest_of_the_tools() -> None:
    # payments.cli imports the options to build its parser for every command, payments pay included.
    code = (
        "import sys, payments.tools.chaos.options;"
        " print(sorted(m for m in sys.modules if m.startswith('payments.tools') or m == 'psutil'))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == str(["payments.tools", "payments.tools.chaos", "payments.tools.chaos.options"])


def test_each_process_has_its_kill_switch() -> None:
    assert ChaosOptions().parts_to_kill == (Part.SERVICE, Part.RESTATE_SERVER, Part.DATABASE)
    assert ChaosOptions(kill_database=False).parts_to_kill == (Part.SERVICE, Part.RESTATE_SERVER)
    assert ChaosOptions(kill_service=False, kill_server=False).parts_to_kill == (Part.DATABASE,)
