"""``python -m tests.stress crash|faults [options]``: the full-size reliability runs."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

# The suites import the test helpers (fetchkit, servers) as pytest does: from tests/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# Said by aiosmtpd, the test SMTP server, on every AUTH; pytest hides it too.
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")


def main() -> int:
    suites = {"crash": "stress.crash", "faults": "stress.faults"}
    if len(sys.argv) < 2 or sys.argv[1] not in suites:
        print(f"usage: python -m tests.stress {{{'|'.join(suites)}}} [--help]", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(suites[sys.argv[1]])
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
