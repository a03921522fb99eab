"""``python -m mesh``: the ``mesh`` command, for environments without the console script."""

import sys

from ._cli import main

sys.exit(main())
