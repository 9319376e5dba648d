"""`python -m taskcut.cli`: the same as the `taskcut` command."""

import sys

from . import main

sys.exit(main())
