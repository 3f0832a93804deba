"""`python -m plumber_agent` is the same as the `plumber-agent` console script."""
import sys

from plumber_agent.cli import main

sys.exit(main())
