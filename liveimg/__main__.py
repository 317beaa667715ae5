"""``python -m liveimg``."""

import sys

from liveimg.cli import main

sys.exit(main())
