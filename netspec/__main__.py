"""`python -m netspec ...` is the `netspec` command (what `torchrun -m netspec train ...` runs)."""
import sys

from .cli import main

sys.exit(main())
