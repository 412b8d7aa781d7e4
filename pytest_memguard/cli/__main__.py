"""``python -m pytest_memguard.cli``: the ``memguard`` command without the console script installed."""

from . import main

raise SystemExit(main())
