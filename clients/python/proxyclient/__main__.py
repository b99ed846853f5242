"""`python -m proxyclient token | env | status | setup` (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
