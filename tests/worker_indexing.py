"""Index function_app.py with the real Python worker library, as the Functions host would.

Run under Python 3.13 with ``azure-functions-runtime`` installed (``make test`` prepares
``.venv313``). Prints a JSON summary; exits non-zero on a ``FunctionLoadError``.

The worker receives its protobuf module from the host process at run time; indexing uses only
its ``BindingInfo`` enums, so a stand-in with the protocol's values is passed here.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def binding_info_protos() -> types.SimpleNamespace:
    """The enum values of ``BindingInfo`` in the Functions worker protocol."""
    binding_info = types.SimpleNamespace(
        **{"in": 0}, out=1, inout=2, undefined=0, string=1, binary=2, stream=3
    )
    return types.SimpleNamespace(BindingInfo=binding_info)


def _type_name(pytype: type | None) -> str | None:
    return f"{pytype.__module__}.{pytype.__qualname__}" if pytype else None


def main() -> int:
    os.environ.setdefault("PYTHON_ENABLE_INIT_INDEXING", "1")
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings.meta import load_binding_registry
    from azure_functions_runtime.functions import FunctionLoadError, Registry
    from azure_functions_runtime.http_v2 import HttpV2Registry

    load_binding_registry()
    indexed = loader.index_function_app(str(REPO / "function_app.py"))
    registry = Registry()
    summary: dict[str, dict[str, object]] = {}
    try:
        for function in indexed:
            info = registry.add_indexed_function(function, binding_info_protos())
            summary[info.name] = {
                "is_http": info.is_http_func,
                "is_async": info.is_async,
                "inputs": {name: _type_name(t.pytype) for name, t in info.input_types.items()},
                "returns": _type_name(info.return_type.pytype) if info.return_type else None,
            }
    except FunctionLoadError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps({"http_v2": HttpV2Registry.http_v2_enabled(), "functions": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
