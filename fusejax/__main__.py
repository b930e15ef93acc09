import sys

from fusejax.cli import main

sys.exit(main())
