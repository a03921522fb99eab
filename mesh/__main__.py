"""``python -m mesh``: the ``mesh`` command, for environments without the console script."""

import sys

from .cli._cli import main

sys.exit(main())
