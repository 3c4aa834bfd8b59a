"""``python -m steering_core.pack build|status CONFIG``: build or inspect a feature pack."""

import sys

from steering_core.pack.cli import main

sys.exit(main())
