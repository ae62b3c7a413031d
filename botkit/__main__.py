"""``python -m botkit``: the ``botkit`` command."""

import sys

from botkit._cli import main

sys.exit(main())
