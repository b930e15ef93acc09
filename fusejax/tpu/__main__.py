import sys

from fusejax.tpu.cli import main

sys.exit(main())
