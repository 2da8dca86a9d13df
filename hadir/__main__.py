import sys

from hadir.cli import main

sys.exit(main())
