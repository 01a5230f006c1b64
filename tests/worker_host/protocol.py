"""Compile ``function_rpc.proto`` for this interpreter and import the message modules.

Both sides call this: the harness host (the test process) and the worker entry point (the Python
3.13 venv). Each compiles with its own ``grpcio-tools`` so the generated code matches its own
``protobuf`` runtime. Output goes to an ignored folder per interpreter and is rebuilt when the
.proto is newer. This module imports nothing from the project, so the worker can load it as a
plain file.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROTO = HERE / "function_rpc.proto"
GENERATED = HERE / "_generated"


def load() -> tuple[ModuleType, ModuleType]:
    """The compiled messages and service stubs: ``(function_rpc_pb2, function_rpc_pb2_grpc)``."""
    out = GENERATED / f"py{sys.version_info.major}{sys.version_info.minor}"
    messages = out / "function_rpc_pb2.py"
    if not messages.exists() or messages.stat().st_mtime < PROTO.stat().st_mtime:
        _compile(out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module("function_rpc_pb2"), importlib.import_module(
        "function_rpc_pb2_grpc"
    )


def _compile(out: Path) -> None:
    from grpc_tools import protoc

    out.parent.mkdir(exist_ok=True)
    # Compile into a fresh folder and rename it into place, so a concurrent run never imports
    # half-written modules.
    staging = Path(tempfile.mkdtemp(prefix=out.name + "-", dir=out.parent))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={staging}",
            f"--grpc_python_out={staging}",
            str(PROTO),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed to compile {PROTO.name} (exit {status})")
    if out.exists():
        for stale in out.iterdir():
            stale.unlink()
        out.rmdir()
    os.replace(staging, out)
