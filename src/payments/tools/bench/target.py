"""The benchmark's ceiling: the smallest useful virtual object handler, one state write.

``payments bench`` serves it exactly like the payment service, on the same restate-server, so the
difference between the two is what the payment logic costs.
"""

from __future__ import annotations

import sys

import restate

from payments.service.serve import serve_signed

minimal = restate.VirtualObject("minimal")


@minimal.handler("touch")
async def touch(ctx: restate.ObjectContext) -> None:
    """Write one state entry and return."""
    ctx.set("touched", True)


if __name__ == "__main__":
    sys.exit(serve_signed([minimal], "payments.tools.bench.target"))
