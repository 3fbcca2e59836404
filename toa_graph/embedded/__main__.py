"""``python -m toa_graph.embedded ...``: the same as ``toa-graph embedded ...``."""

from __future__ import annotations

import sys

from toa_graph.commands.embedded import main

if __name__ == "__main__":
    sys.exit(main())
