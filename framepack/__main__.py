import sys

from framepack.cli import main

sys.exit(main())
