"""`netspec make-toy-imagenet`: see netspec/data/toy.py (the logic and its options live there)."""
from ..data.toy import EXAMPLES, HELP, add_arguments, run

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]
