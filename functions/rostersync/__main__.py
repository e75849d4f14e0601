"""`python -m rostersync ...`, the same as the `rostersync` command: the administrator commands (admin/cli.py)."""

import sys

from rostersync.admin.cli import main

sys.exit(main())
