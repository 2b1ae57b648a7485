"""What a chaos scenario did to the photos that went in: one row per scenario.

Counted from outside the system: submissions and chat posts on the platform fakes, ComfyUI runs on the
ComfyUI fake, dead letters in Redis. Every scenario's row is kept for the session summary (printed as a
table and written to JSON, see tests/conftest.py).

- submitted: photos sent by the fake users;
- delivered: of those, how many got their result in the chat;
- refused: how many got a final answer instead of a result (a refusal such as a rate limit, or that it failed);
- lost: photos that got neither their result nor a final answer (a refusal, or being told it failed);
- duplicates: result posts beyond the first, per chat message (photo and file counted separately);
- in_flight_at_kill: sends Telegram had accepted but whose reply had not reached the notifier at a kill
  (still being answered, or a photo or file answered within the last quarter second);
- runs / reruns: ComfyUI prompts, and prompts beyond one per task;
- dead: entries in the dead-letter stream at the end;
- generic_errors: "something went wrong" messages users got;
- detect_s: from the fault to the first sign the system acts on it (a takeover, a retry, a reconnect);
- recover_s: from the fault to every affected photo delivered.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

LEDGERS: list[Ledger] = []


@dataclass
class Ledger:
    scenario: str
    submitted: int = 0
    delivered: int = 0
    refused: int = 0
    lost: int = 0
    duplicates: int = 0
    in_flight_at_kill: int = 0
    runs: int = 0
    reruns: int = 0
    dead: int = 0
    generic_errors: int = 0
    detect_s: float | None = None
    recover_s: float | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    _fault_at: float | None = field(default=None, repr=False)
    _started: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        LEDGERS.append(self)

    # --- timing ----------------------------------------------------------------------------------
    def fault(self) -> float:
        """The fault is injected now (the first call counts)."""
        if self._fault_at is None:
            self._fault_at = time.monotonic()
        return self._fault_at

    def detected(self) -> None:
        if self._fault_at is not None and self.detect_s is None:
            self.detect_s = round(time.monotonic() - self._fault_at, 2)

    def recovered(self) -> None:
        if self._fault_at is not None and self.recover_s is None:
            self.recover_s = round(time.monotonic() - self._fault_at, 2)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> Ledger:
        self.wall_s = round(time.monotonic() - self._started, 1)
        return self

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def __str__(self) -> str:
        return (
            f"{self.scenario}: submitted {self.submitted}, delivered {self.delivered}, refused {self.refused}, "
            f"lost {self.lost}, duplicates {self.duplicates} (in flight at kill {self.in_flight_at_kill}), "
            f"runs {self.runs} (reruns {self.reruns}), dead {self.dead}, generic errors {self.generic_errors}, "
            f"detect {self.detect_s} s, recover {self.recover_s} s; {'; '.join(self.notes)}"
        )


COLUMNS = [
    ("scenario", 44),
    ("submitted", 5),
    ("delivered", 5),
    ("refused", 5),
    ("lost", 4),
    ("duplicates", 4),
    ("in_flight_at_kill", 4),
    ("reruns", 6),
    ("dead", 4),
    ("generic_errors", 4),
    ("detect_s", 8),
    ("recover_s", 8),
    ("wall_s", 6),
]
HEADERS = {
    "scenario": "scenario",
    "submitted": "sub",
    "delivered": "deliv",
    "refused": "refus",
    "lost": "lost",
    "duplicates": "dup",
    "in_flight_at_kill": "infl",
    "reruns": "reruns",
    "dead": "dead",
    "generic_errors": "gen",
    "detect_s": "detect s",
    "recover_s": "recov s",
    "wall_s": "wall s",
}


def table(rows: list[dict]) -> str:
    """A Markdown table, one row per scenario (also readable in a terminal)."""

    def cell(value: object) -> str:
        return "–" if value is None else str(value)

    lines = [
        "| " + " | ".join(HEADERS[name] for name, _ in COLUMNS) + " | outcome |",
        "|" + "|".join("---" for _ in range(len(COLUMNS) + 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(name)) for name, _ in COLUMNS) + f" | {row.get('outcome', '')} |")
    return "\n".join(lines)


def assert_clean(ledger: Ledger, *, dead: int = 0, duplicates_allowed: int = 0) -> None:
    """The promise: nothing lost, nothing dead-lettered (unless the scenario is a poison), nothing
    posted twice beyond the sends whose reply was in flight at a kill, no "something went wrong"."""
    problems = []
    if ledger.lost:
        problems.append(f"lost {ledger.lost}")
    if ledger.dead != dead:
        problems.append(f"dead {ledger.dead}, expected {dead}")
    if ledger.duplicates > duplicates_allowed:
        problems.append(f"duplicates {ledger.duplicates} > {duplicates_allowed} allowed")
    if ledger.generic_errors:
        problems.append(f"{ledger.generic_errors} 'something went wrong'")
    assert not problems, f"{', '.join(problems)}: {ledger}"
