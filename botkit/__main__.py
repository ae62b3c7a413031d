"""``python -m botkit``: the ``botkit`` command."""

import sys

from botkit.service._cli import main

sys.exit(main())
