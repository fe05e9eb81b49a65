"""``python -m edgewarden``: the ``edgewarden`` command."""

import sys

from edgewarden.gateway.cli import main

sys.exit(main())
