#!/usr/bin/env python3
"""Regenerate netspec/proto/netspec_pb2.py from protos/netspec.proto.

Needs grpcio-tools (in the `dev`/`test` extra). The generated module is committed so that users
need no protobuf compiler; the runtime-version guard protoc emits is removed so that the module
loads with any protobuf >= 4.21 instead of only the release that generated it, and the classes
are given their importable module name.
tests/test_proto.py regenerates it and checks the committed copy is identical.
"""
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "protos" / "netspec.proto"
OUT = ROOT / "netspec" / "proto" / "netspec_pb2.py"


def generate() -> str:
    """Return the text of netspec_pb2.py as it should be committed."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", str(PROTO)])
        if rc != 0:
            raise SystemExit(f"{PROTO}: protoc failed with status {rc}")
        text = (Path(tmp) / "netspec_pb2.py").read_text()
    text = re.sub(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
    text = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", text)
    text = re.sub(r"# Protobuf Python Version: .*\n", "", text)
    text = text.replace("# NO CHECKED-IN PROTOBUF GENCODE\n", "")
    # Classes must name their real module, or pickling messages (multiprocessing, DDP spawn) fails.
    text = text.replace("'netspec_pb2', _globals", "'netspec.proto.netspec_pb2', _globals")
    return text


if __name__ == "__main__":
    OUT.write_text(generate())
    print(f"wrote {OUT}", file=sys.stderr)
