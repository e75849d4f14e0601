"""`python -m rostersync ...`: the administrator commands (cli.py)."""

import sys

from rostersync.cli import main

sys.exit(main())
