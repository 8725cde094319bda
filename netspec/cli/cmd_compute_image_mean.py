"""`netspec compute-image-mean`: see netspec/data/mean.py (the logic and its options live there)."""
from ..data.mean import EXAMPLES, HELP, add_arguments, run

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]
