import sys

from reidctl.cli import main

sys.exit(main())
