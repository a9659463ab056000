"""``python -m synshot <command> ...``: the same as the ``synshot`` console script (see synshot.cli)."""

from synshot.cli import main

raise SystemExit(main())
