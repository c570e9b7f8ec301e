"""`python -m titok` runs the `titok` command."""
import sys

from titok.cli import main

sys.exit(main())
