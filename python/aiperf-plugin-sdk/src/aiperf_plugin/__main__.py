"""``python -m aiperf_plugin`` is the same as ``aiperf-plugin-python``."""

import sys

from .host import main

sys.exit(main())
