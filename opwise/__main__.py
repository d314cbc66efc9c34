import sys

from opwise.cli import main

sys.exit(main())
