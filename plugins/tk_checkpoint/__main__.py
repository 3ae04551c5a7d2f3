"""``python -m tk_checkpoint``: the same CLI as the ``tk-checkpoint`` console script."""

import sys

from .cli import main

sys.exit(main())
