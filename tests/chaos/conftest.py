"""Chaos fixtures: a ledger per scenario, the stack factory, and the session summary of every ledger.

The summary is printed after the run as a Markdown table and written as JSON to `$CHAOS_LEDGER_OUT`
(default: `chaos-ledger.json` in pytest's base temp directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.ledger import LEDGERS, Ledger, table
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


def ledger_path(config: pytest.Config) -> Path:
    configured = os.environ.get("CHAOS_LEDGER_OUT")
    if configured:
        return Path(configured)
    return Path(config._tmp_path_factory.getbasetemp()) / "chaos-ledger.json"  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not LEDGERS:
        return
    rows = [ledger.row() | {"outcome": getattr(ledger, "outcome", "?")} for ledger in LEDGERS]
    path = ledger_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    terminalreporter.section("chaos ledger")
    terminalreporter.write_line(table(rows))
    for row in rows:
        if row["notes"]:
            terminalreporter.write_line(f"{row['scenario']}: {'; '.join(row['notes'])}")
    terminalreporter.write_line(f"ledger JSON: {path}")
