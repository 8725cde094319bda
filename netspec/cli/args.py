"""Command-line options several subcommands share: a net's NetState (Caffe's -phase -level -stage)
and the shapes of input blobs."""
from __future__ import annotations


def add_net_state(p, phase: str = "TEST", level: int | None = 0, what: str = "keep",
                  phases=("TRAIN", "TEST")) -> None:
    """--phase, --level, --stage as Caffe's tools spell them (-phase TEST -level 0 -stage a,b)."""
    p.add_argument("--phase", default=phase, type=str.upper, choices=list(phases),
                   help=f"phase whose layers to {what} (default {phase})")
    own = "the net's own" if level is None else level
    p.add_argument("--level", type=int, default=level, help=f"NetState level (default {own})")
    p.add_argument("--stage", action="append", default=[], help="NetState stage(s), comma-separated or repeated")


def add_input_shapes(p) -> None:
    """--input-shape BLOB=N,C,H,W (repeatable)."""
    p.add_argument("--input-shape", "--input_shape", action="append", default=[], metavar="BLOB=N,C,H,W",
                   help="shape of an input blob, or of a data layer's top whose LMDB is not at hand")
