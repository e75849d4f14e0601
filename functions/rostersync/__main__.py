"""`python -m rostersync ...`, the same as the `rostersync` command: the administrator commands (cli.py)."""

import sys

from rostersync.cli import main

sys.exit(main())
