"""A mode added to the manifest alone (no Python change) is a /colorize choice and an Other-mode button."""

from __future__ import annotations

from backend.workflows import Workflows
from bots.discord.messages import result_view
from tests.fakes.discord_api import APP_ID
from tests.support.workflows import workflows_with_new_mode


async def test_a_new_mode_is_a_choice_in_both_languages(start_bot, discord_settings, discord_fake, tmp_path):
    settings = discord_settings.model_copy(update={"workflows_dir": workflows_with_new_mode(tmp_path)})
    async with start_bot(settings):
        [call] = discord_fake.calls_to("PUT", rf"/applications/{APP_ID}/commands")
    colorize = next(c for c in call.json if c["name"] == "colorize")
    mode = next(o for o in colorize["options"] if o["name"] == "mode")
    assert [c["value"] for c in mode["choices"]] == ["person", "building", "sepia"]  # preview is not choosable
    sepia = mode["choices"][2]
    assert sepia["name"].startswith("sepia (") and sepia["name_localizations"]["zh-CN"].startswith("棕褐色")


def test_other_mode_buttons_follow_the_manifest(tmp_path):
    workflows = Workflows.load(workflows_with_new_mode(tmp_path))
    view = result_view("t" * 16, "zh", workflows, "building")
    assert [item.custom_id for item in view.children] == [
        "repairbot:other:tttttttttttttttt:person",
        "repairbot:other:tttttttttttttttt:sepia",
        "repairbot:compare:tttttttttttttttt",
    ]
    assert [item.label for item in view.children][:2] == ["试试人物", "试试棕褐色"]
