"""The sync function's init leaves the garbage collector settled (ld_audiences/gc_policy.py).

Each check runs in a fresh interpreter: the collector's state is per process, and this one's is whatever
earlier tests left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ld_audiences.gc_policy import YOUNG_THRESHOLD

REPO = Path(__file__).resolve().parents[2]
REPORT = "import gc, json; print(json.dumps({'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count()}))"


def _fresh(code: str, **env: str) -> dict[str, object]:
    out = subprocess.run(  # noqa: S603 (this interpreter, code written here)
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def test_settling_freezes_what_is_alive_and_raises_only_the_young_threshold() -> None:
    before = _fresh("")
    after = _fresh(
        "alive = [[] for _ in range(5000)]\nfrom ld_audiences.gc_policy import settle_after_init\nsettle_after_init()"
    )
    assert before["frozen"] == 0
    assert isinstance(after["frozen"], int) and after["frozen"] >= 5000
    assert after["threshold"] == [YOUNG_THRESHOLD, *before["threshold"][1:]]  # type: ignore[index]


def test_the_sync_function_settles_the_collector_at_the_end_of_its_init() -> None:
    env = {k: str(v) for k, v in json.loads((REPO / "events" / "env.json").read_text())["SyncFunction"].items()}
    report = _fresh(
        "from ld_audiences_local.handlers import load_handler\nload_handler('sync')",
        **env,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    assert report["threshold"][0] == YOUNG_THRESHOLD  # type: ignore[index]
    # boto3's service models and the clients were alive at the end of init: tens of thousands of objects
    assert isinstance(report["frozen"], int) and report["frozen"] > 20_000
