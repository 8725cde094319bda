"""`netspec upgrade-solver IN OUT`: Caffe's tools/upgrade_solver_proto_text — a solver prototxt's
deprecated `solver_type: SGD` (enum) becomes `type: "SGD"`, as netspec does when it loads a solver
(netspec.frontend.solver.upgrade_solver_type). Paths inside the solver are left as written.
"""
from __future__ import annotations

import logging

from ..frontend import read_text_file, write_text_file
from ..frontend.solver import upgrade_solver_type
from ..proto import pb

HELP = "upgrade a solver prototxt's solver_type enum to type (upgrade_solver_proto_text)"
EXAMPLES = "  netspec upgrade-solver old_solver.prototxt solver.prototxt\n"
log = logging.getLogger("netspec")


def add_arguments(p) -> None:
    p.add_argument("input", help="solver prototxt")
    p.add_argument("output", help="where to write the upgraded solver")


def run(args) -> int:
    sp = read_text_file(args.input, pb.SolverParameter())
    if not upgrade_solver_type(sp):
        log.warning("File already in latest proto format: %s", args.input)
    write_text_file(args.output, sp)
    print(f"Wrote upgraded SolverParameter text proto to {args.output}")
    return 0
