"""Load the real Lambda entry points (`functions/*/app.py`) in process, plus a stand-in Lambda context.

Both entry points are files named `app.py` that read their settings from the environment when they
are imported, so the caller sets `os.environ` first and then loads each one here, by path, under its
own module name. Every call loads a fresh module: a new environment means new settings.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# devtools/ld_audiences_local/handlers.py → the repository root (the package is installed editable).
REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("ingest", "sync")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def functions_dir() -> Path:
    """Where `ingest/app.py` and `sync/app.py` live; `LD_AUDIENCES_FUNCTIONS_DIR` overrides."""
    override = os.environ.get("LD_AUDIENCES_FUNCTIONS_DIR", "").strip()
    return Path(override) if override else REPO_ROOT / "functions"


def module_name(function: str, instance: int | None = None) -> str:
    suffix = "" if instance is None else f"_{instance}"
    return f"_ld_audiences_lambda_{function}_app{suffix}"


def load_function(function: str, directory: Path | None = None, *, instance: int | None = None) -> ModuleType:
    """Import `functions/<function>/app.py` afresh under a name of its own and return the module.

    The module reads the environment as it loads: set the variables before calling this. Distinct
    `instance` numbers give independent copies (own globals), like separate Lambda execution
    environments of one function.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; expected one of {', '.join(FUNCTIONS)}")
    path = (directory or functions_dir()) / function / "app.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (set LD_AUDIENCES_FUNCTIONS_DIR to the functions/ directory)")
    name = module_name(function, instance)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing, as a normal import would: pydantic and dataclasses resolve
    # postponed annotations through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_handler(function: str, directory: Path | None = None, *, instance: int | None = None) -> Handler:
    """The `lambda_handler(event, context)` of one function, freshly loaded."""
    handler: Handler = load_function(function, directory, instance=instance).lambda_handler
    return handler


class FakeLambdaContext:
    """The attributes of `awslambdaric`'s context object that handlers and Powertools read.

    `get_remaining_time_in_millis` counts down from the moment the context is created, like a
    real invocation's deadline.
    """

    def __init__(
        self,
        function_name: str,
        *,
        timeout_seconds: float = 30.0,
        memory_limit_in_mb: int = 256,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        request_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"FakeLambdaContext({self.function_name!r}, request_id={self.aws_request_id!r})"
