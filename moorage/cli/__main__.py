"""``python -m moorage.cli``: the same as the ``moorage`` command."""

from . import main

raise SystemExit(main())
