"""`netspec convert-imagenet`: see netspec/data/convert.py (the logic and its options live there)."""
from ..data.convert import EXAMPLES, HELP, add_arguments, run

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]
