"""The catalog covers every key the code asks for, in both languages, with the same placeholders.

A missing key would show a user the generic apology; here it fails a test instead.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from backend.settings import REPO_ROOT
from backend.texts import CATALOG, has, text
from backend.workflows import Workflows

SOURCES = [p for folder in ("backend", "bots") for p in (REPO_ROOT / folder).rglob("*.py")]
KEY_USES = re.compile(
    r"""\b(?:text|Refused|PermanentTaskError|TransientTaskError|RepairError|_say|_t)\(\s*["']([a-z0-9_]+)["']"""
)
CODE_ATTRS = re.compile(r"""\bcode\s*=\s*["']([a-z0-9_]+)["']""")


def used_keys() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SOURCES:
        source = path.read_text(encoding="utf-8")
        for match in (*KEY_USES.finditer(source), *CODE_ATTRS.finditer(source)):
            found.setdefault(match.group(1), path)
    return found


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_key_the_code_uses_is_in_the_catalog():
    keys = used_keys()
    assert len(keys) > 40  # the scan finds the code's keys at all
    missing = {key: str(path.relative_to(REPO_ROOT)) for key, path in keys.items() if not has(key)}
    assert not missing, f"keys used but not in the catalog: {missing}"


def test_both_languages_have_the_same_keys_and_placeholders():
    english, chinese = CATALOG["en"], CATALOG["zh"]
    singular_only = {k for k in english if k.endswith("_one")}  # Chinese has no plural forms
    assert set(english) - singular_only == set(chinese), "English and Chinese must cover the same keys"
    for key, template in chinese.items():
        assert placeholders(template) == placeholders(english[key]), key
    for key in singular_only:
        assert placeholders(english[key]) <= placeholders(english[key.removesuffix("_one") + "_other"]), key


def test_plurals_are_right_in_both_languages():
    assert text("cancelled_count", "en", count=1) == "Cancelled 1 photo."
    assert text("cancelled_count", "en", count=3) == "Cancelled 3 photos."
    assert text("cancelled_count", "zh", count=1) == "已取消 1 张照片。"


def test_a_missing_key_is_logged_not_shown_raw(caplog):
    assert text("no_such_key_anywhere", "en") == CATALOG["en"]["error_generic"]
    assert "no_such_key_anywhere" in caplog.text


def test_no_file_under_bots_names_a_mode():
    modes = Workflows.load(REPO_ROOT / "workflows").names
    named = re.compile(r"""["'](""" + "|".join(map(re.escape, modes)) + r""")["']""")
    offenders = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "bots").rglob("*.py")
        if named.search(p.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"mode names belong in workflows/modes.toml: {offenders}"


def test_every_choosable_mode_is_labelled_in_both_languages():
    for mode in Workflows.load(REPO_ROOT / "workflows").choosable:
        assert set(mode.labels) >= set(CATALOG) and set(mode.descriptions) >= set(CATALOG), mode.name
        assert mode.caption_words, mode.name
