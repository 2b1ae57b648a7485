"""Workflow templates and the manifest: shipped modes load, broken ones fail at load time."""

import json
from pathlib import Path

import pytest

from backend.errors import Refused
from backend.settings import REPO_ROOT
from backend.workflows import WorkflowError, Workflows, check_against_object_info

RECORDED_OBJECT_INFO = REPO_ROOT / "tests" / "data" / "comfyui" / "object_info.json"


@pytest.fixture(scope="module")
def shipped() -> Workflows:
    return Workflows.load(REPO_ROOT / "workflows")


def test_shipped_modes(shipped):
    assert {"person", "building", "preview"} <= set(shipped.names)
    person = shipped.get("person").build("repairbot-x-1.png", task_id="abc12345")
    classes = {node["class_type"] for node in person.values()}
    assert classes == {"LoadImage", "DDColor_Colorize", "SaveImage"}
    ddcolor = next(n for n in person.values() if n["class_type"] == "DDColor_Colorize")
    assert ddcolor["inputs"]["model_input_size"] % 32 == 0
    assert ddcolor["inputs"]["checkpoint"] == "ddcolor_modelscope.pth"
    building = next(
        n for n in shipped.get("building").build("x.png", task_id="t").values() if n["class_type"] == "DDColor_Colorize"
    )
    assert building["inputs"]["model_input_size"] > ddcolor["inputs"]["model_input_size"]
    preview = shipped.get("preview").build("x.png", task_id="t")
    assert {n["class_type"] for n in preview.values()} <= {"LoadImage", "ImageScaleBy", "ImageScale", "SaveImage"}


def test_build_sets_input_prefix_and_params_without_touching_the_template(shipped):
    mode = shipped.get("person")
    workflow = mode.build("in.png", task_id="task123", params={"model_input_size": 768})
    assert workflow[mode.input_node]["inputs"]["image"] == "in.png"
    assert workflow[mode.output_node]["inputs"]["filename_prefix"] == "repairbot/task123"
    assert workflow["2"]["inputs"]["model_input_size"] == 768
    assert mode.template["2"]["inputs"]["model_input_size"] == 512


@pytest.mark.parametrize(
    "params",
    [
        {"model_input_size": 500},
        {"model_input_size": 64},
        {"checkpoint": "evil.pth"},
        {"unknown": 1},
        {"model_input_size": "512"},
        {"model_input_size": True},
    ],
)
def test_params_outside_the_whitelist_are_refused(shipped, params):
    with pytest.raises(Refused) as caught:
        shipped.get("person").check_params(params)
    assert caught.value.code == "bad_params"


def test_unknown_mode_is_refused(shipped):
    with pytest.raises(Refused) as caught:
        shipped.get("sepia")
    assert caught.value.code == "unknown_mode"


def test_shipped_modes_pass_against_recorded_object_info(shipped):
    object_info = json.loads(RECORDED_OBJECT_INFO.read_text())
    for mode in shipped.modes.values():
        assert check_against_object_info(mode, object_info) == []


def test_object_info_check_reads_both_combo_encodings(shipped):
    object_info = json.loads(RECORDED_OBJECT_INFO.read_text())
    checkpoint = object_info["DDColor_Colorize"]["input"]["required"]["checkpoint"]
    object_info["DDColor_Colorize"]["input"]["required"]["checkpoint"] = ["COMBO", {"options": checkpoint[0]}]
    assert check_against_object_info(shipped.get("person"), object_info) == []
    object_info["DDColor_Colorize"]["input"]["required"]["checkpoint"] = ["COMBO", {"options": ["other.pth"]}]
    assert any("checkpoint" in p for p in check_against_object_info(shipped.get("person"), object_info))
    del object_info["DDColor_Colorize"]
    assert any("not installed" in p for p in check_against_object_info(shipped.get("person"), object_info))


def write_mode(folder: Path, template: dict, entry: str) -> None:
    (folder / "t.json").write_text(json.dumps(template))
    (folder / "modes.toml").write_text(entry)


GOOD = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "p"}},
}


@pytest.mark.parametrize(
    "template, entry, message",
    [
        (GOOD, '[modes.m]\ntemplate = "t.json"\ninput_node = "9"\noutput_node = "2"\n', "input_node 9"),
        (
            {**GOOD, "2": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "p"}}},
            '[modes.m]\ntemplate = "t.json"\ninput_node = "1"\noutput_node = "2"\n',
            "missing node 7",
        ),
        (
            {**GOOD, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0, 3], "filename_prefix": "p"}}},
            '[modes.m]\ntemplate = "t.json"\ninput_node = "1"\noutput_node = "2"\n',
            "malformed link",
        ),
        (GOOD, '[modes.m]\ntemplate = "../t.json"\ninput_node = "1"\noutput_node = "2"\n', "must sit in"),
        (
            GOOD,
            '[modes.m]\ntemplate = "t.json"\ninput_node = "1"\noutput_node = "2"\n'
            '[modes.m.params.size]\nnode = "2"\ninput = "nope"\n',
            "missing input",
        ),
        (GOOD, '[modes.m]\ntemplate = "t.json"\noutput_node = "2"\n', "missing 'input_node'"),
    ],
)
def test_broken_modes_fail_at_load(tmp_path, template, entry, message):
    write_mode(tmp_path, template, entry)
    with pytest.raises(WorkflowError, match=message):
        Workflows.load(tmp_path)


def test_adding_a_mode_needs_only_files(tmp_path):
    write_mode(tmp_path, GOOD, '[modes.plain]\ntemplate = "t.json"\ninput_node = "1"\noutput_node = "2"\n')
    assert Workflows.load(tmp_path).names == ["plain"]
