"""Chaos fixtures: a ledger per scenario and the stack factory. The session summary of every ledger
is in tests/conftest.py: with tests in parallel it is the controller's, which never loads this file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.ledger import Ledger
from tests.chaos.stack import ChaosStack

CHAOS_LONG = os.environ.get("CHAOS_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any):
    outcome = yield
    report = outcome.get_result()
    ledger = getattr(item, "chaos_ledger", None)
    if ledger is not None and (report.when == "call" or report.failed):
        if report.when == "call":
            ledger.outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        elif report.failed:
            ledger.outcome = f"error in {report.when}"


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    name = request.node.name.removeprefix("test_")
    ledger = Ledger(name)
    request.node.chaos_ledger = ledger
    return ledger


@pytest.fixture
def chaos(tmp_path: Path, ledger: Ledger):
    """`async with chaos(env={...}, ...) as stack:` a fresh deployment for this scenario."""

    def make(**kwargs: Any) -> ChaosStack:
        return ChaosStack(tmp_path, ledger, **kwargs)

    return make
