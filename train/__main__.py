"""``python -m train --config configs/train/<name>.yaml [key=value ...]`` (see train/run.py)."""

from train.run import main

raise SystemExit(main())
