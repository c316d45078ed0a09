"""``python -m q3agent.cli``: the same as the ``q3agent`` command."""

import sys

from q3agent.cli import main

sys.exit(main())
