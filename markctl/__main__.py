"""``python -m markctl`` runs the CLI."""

import sys

from markctl.cli import main

sys.exit(main())
