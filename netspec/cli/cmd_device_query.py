"""`netspec device-query [-gpu ID|all]`: Caffe's `caffe device_query` — what torch sees of each CUDA
device: its id, name, compute capability, memory (total, and free now), multiprocessors, and the
other properties torch reports (warp size, L2 cache, ...), in Caffe's "Label: value" lines. Without
a CUDA device it says so and describes the CPU torch runs on (exit status 0: that is a valid answer
to the query).
"""
from __future__ import annotations

import os
import platform

from ..errors import NetspecError

HELP = "show the CUDA devices torch sees: name, capability, memory (caffe device_query)"
EXAMPLES = "  netspec device-query -gpu all\n"

# torch's CUDA device property -> Caffe's label; printed when this torch build reports it
_OPTIONAL = [("multi_processor_count", "Number of multiprocessors"), ("warp_size", "Warp size"),
             ("max_threads_per_multi_processor", "Maximum threads per multiprocessor"),
             ("regs_per_multiprocessor", "Total registers per multiprocessor"),
             ("shared_memory_per_block", "Total shared memory per block"),
             ("L2_cache_size", "L2 cache size"), ("clock_rate", "Clock rate"),
             ("is_integrated", "Integrated")]


def add_arguments(p) -> None:
    p.add_argument("--gpu", default="all", help="device id(s), comma-separated, or 'all' (default all)")


def _ids(flag: str, count: int) -> list[int]:
    if flag == "all":
        return list(range(count))
    try:
        ids = [int(s) for s in flag.split(",")]
    except ValueError:
        raise NetspecError(f"-gpu '{flag}': expected device ids like 0 or 0,1, or 'all'") from None
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise NetspecError(f"-gpu {flag}: this machine has {count} CUDA device(s) (ids 0..{count - 1})")
    return ids


def device_lines(i: int) -> list[str]:
    import torch
    prop = torch.cuda.get_device_properties(i)
    free, _ = torch.cuda.mem_get_info(i)
    rows = [("Device id", i), ("Name", prop.name), ("Major revision number", prop.major),
            ("Minor revision number", prop.minor), ("Total global memory", prop.total_memory),
            ("Free memory now", free)]
    rows += [(label, getattr(prop, attr)) for attr, label in _OPTIONAL if hasattr(prop, attr)]
    return [f"{label + ':':<38}{value}" for label, value in rows]


def run(args) -> int:
    import torch
    cuda = torch.version.cuda or "none (CPU-only torch build)"
    print(f"{'torch:':<38}{torch.__version__}\n{'CUDA runtime:':<38}{cuda}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if args.gpu not in ("all", ""):
            raise NetspecError(f"-gpu {args.gpu}: torch sees no CUDA device on this machine")
        print(f"{'CUDA devices:':<38}0 (netspec runs on the CPU)")
        print(f"{'CPU:':<38}{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
              f"{torch.get_num_threads()} torch threads")
        return 0
    print(f"{'CUDA devices:':<38}{count}")
    for i in _ids(args.gpu, count):
        print("\n".join(device_lines(i)))
    return 0
