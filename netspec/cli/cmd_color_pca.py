"""`netspec color-pca`: see netspec/data/color_pca.py (the logic and its options live there)."""
from ..data.color_pca import EXAMPLES, HELP, add_arguments, run

__all__ = ["HELP", "EXAMPLES", "add_arguments", "run"]
