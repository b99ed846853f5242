"""`python -m proxyclient token | env | status` (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
