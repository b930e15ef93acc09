"""Entry point: python train.py --config configs/train/FILE.yaml [key=value ...] [--resume] (= `fusejax train`)."""

import sys

from fusejax.training.loop import main

if __name__ == "__main__":
    sys.exit(main())
