"""Concurrency stress under plain threads and under gevent monkey patching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..stress_workload import run

ROOT = Path(__file__).resolve().parents[2]


def check(result):
    assert result["errors"] == [], result["errors"][0]
    assert result["alive"] == 0
    assert result["problems"] == []
    assert result["ops"] > 1000 and result["streams"] > 10, result


@pytest.mark.timeout(60)
def test_stress_plain_threads():
    check(run(seconds=3, workers=16, seed=1))


@pytest.mark.timeout(90)
def test_stress_gevent_monkey_patched():
    proc = subprocess.run(
        [sys.executable, "-m", "tests.stress_workload", "--gevent", "--seconds", "3", "--workers", "32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["gevent"] is True
    check(result)
