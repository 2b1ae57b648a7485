"""The catalog covers every key the code asks for, in both languages, with the same placeholders.

A missing key would show a user the generic apology; here it fails a test instead.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

from backend.settings import REPO_ROOT
from backend.texts import CATALOG, text
from backend.workflows import Workflows

SOURCES = [p for folder in ("backend", "bots") for p in (REPO_ROOT / folder).rglob("*.py")]
# Calls whose first argument is a catalog key (or an error code, which is one).
KEY_TAKERS = {"text", "Refused", "PermanentTaskError", "TransientTaskError", "RepairError", "_say", "_t"}


def _strings(node: ast.AST | None, assigned: dict[str, list[ast.AST]]) -> set[str]:
    """The string constants an expression can evaluate to: literals, both arms of `a if c else b`, the
    fallbacks of `x or "internal"`, and what a plain name was assigned in the same function."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body, assigned) | _strings(node.orelse, assigned)
    if isinstance(node, ast.BoolOp):
        return set().union(*(_strings(value, assigned) for value in node.values))
    if isinstance(node, ast.Name):
        return set().union(*(_strings(value, {}) for value in assigned.get(node.id, [])))
    return set()


def _keys_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in [tree, *scopes]:
        assigned: dict[str, list[ast.AST]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        assigned.setdefault(target.id, []).append(node.value)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in KEY_TAKERS and node.args:
                found |= _strings(node.args[0], assigned)
            found |= {s for kw in node.keywords if kw.arg == "code" for s in _strings(kw.value, assigned)}
    return {key for key in found if KEY_SHAPE.fullmatch(key)}


KEY_SHAPE = re.compile(r"[a-z0-9_]+")


def used_keys() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in SOURCES:
        for key in _keys_in(ast.parse(path.read_text(encoding="utf-8"))):
            found.setdefault(key, path)
    return found


def in_language(key: str, lang: str) -> bool:
    """`key` itself, or its plural forms: `key_other` everywhere, and `key_one` too where the language
    has a singular (English)."""
    table = CATALOG[lang]
    if key in table:
        return True
    needs_one = any(k.endswith("_one") for k in table)
    return f"{key}_other" in table and (not needs_one or f"{key}_one" in table)


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_key_the_code_uses_is_in_every_language():
    keys = used_keys()
    assert len(keys) > 80  # the scan finds the code's keys at all
    assert {"admin_status_counts", "admin_dlq_line", "admin_stats", "cancelled_count"} <= set(keys)
    for lang in CATALOG:
        missing = {key: str(path.relative_to(REPO_ROOT)) for key, path in keys.items() if not in_language(key, lang)}
        assert not missing, f"keys used but not in the {lang} catalog: {missing}"


def test_the_scan_sees_keys_chosen_by_a_condition_or_a_variable():
    source = (
        "def f(ok, count, error):\n"
        "    key = 'admin_retried' if ok else 'admin_retry_missing'\n"
        "    text(key, 'en')\n"
        "    text('cancelled_count' if count else 'button_gone', 'en', count=count)\n"
        "    text(error or 'internal', 'en')\n"
    )
    assert _keys_in(ast.parse(source)) == {
        "admin_retried",
        "admin_retry_missing",
        "cancelled_count",
        "button_gone",
        "internal",
    }


def test_a_plural_key_needs_its_singular_where_the_language_has_one():
    assert in_language("cancelled_count", "en") and in_language("cancelled_count", "zh")
    assert in_language("admin_status_waiting", "en") and in_language("admin_status_waiting", "zh")
    assert not in_language("no_such_key_anywhere", "zh")


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


def test_every_command_in_the_menus_is_described_in_every_language():
    """The Telegram menus name their descriptions `cmd_<command>` (a key the scan can't see)."""
    from bots.telegram.app import ADMIN_MENU, PUBLIC_MENU

    for lang in CATALOG:
        missing = [name for name in PUBLIC_MENU + ADMIN_MENU if f"cmd_{name}" not in CATALOG[lang]]
        assert not missing, f"{lang}: {missing}"
