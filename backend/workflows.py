"""Colorization modes as data: ComfyUI API-format templates plus `workflows/modes.toml`.

Loading validates each template (the marked nodes exist, links are well-formed, parameters point at
real inputs) so a broken mode fails at start-up, not on a user's photo. `check_against_object_info`
lets `repairbot doctor` confirm a ComfyUI instance has every node and allows every value.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import Refused


class WorkflowError(ValueError):
    """A template or manifest that cannot work; raised at load time."""


@dataclass(frozen=True)
class Param:
    """One input a task may set, with its default and limits."""

    name: str
    node: str
    input: str
    default: Any
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    choices: tuple[Any, ...] = ()

    def coerce(self, value: Any) -> Any:
        """Check a requested value against this parameter's limits; Refused('bad_params') if not allowed."""
        if self.choices:
            if value not in self.choices:
                raise Refused("bad_params", detail=f"{self.name}={value!r} is not one of the choices")
            return value
        if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
            if not isinstance(value, type(self.default)):
                raise Refused("bad_params", detail=f"{self.name} has the wrong type")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused("bad_params", detail=f"{self.name} must be a number")
        if isinstance(self.default, int) and value != int(value):
            raise Refused("bad_params", detail=f"{self.name} must be a whole number")
        value = int(value) if isinstance(self.default, int) else float(value)
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise Refused("bad_params", detail=f"{self.name}={value} is out of range")
        if self.multiple_of and value % self.multiple_of:
            raise Refused("bad_params", detail=f"{self.name} must be a multiple of {self.multiple_of}")
        return value


@dataclass(frozen=True)
class Mode:
    """One manifest entry: the template and its parameters, and what chat users see of it."""

    name: str
    template: dict[str, Any]
    input_node: str
    output_node: str
    description: str = ""
    params: dict[str, Param] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # language -> short name shown in chat
    descriptions: dict[str, str] = field(default_factory=dict)  # language -> what the mode is for
    caption_words: tuple[str, ...] = ()
    choosable: bool = False

    def label(self, lang: str = "en") -> str:
        """The mode's name in `lang`, English when untranslated, its key when unlabelled."""
        return self.labels.get(lang) or self.labels.get("en") or self.name

    def describe(self, lang: str = "en") -> str:
        return self.descriptions.get(lang) or self.descriptions.get("en") or self.description

    def check_params(self, requested: dict[str, Any] | None) -> dict[str, Any]:
        """Only whitelisted parameters, each within its limits."""
        checked: dict[str, Any] = {}
        for name, value in (requested or {}).items():
            param = self.params.get(name)
            if param is None:
                raise Refused("bad_params", detail=f"mode {self.name} has no parameter {name!r}")
            checked[name] = param.coerce(value)
        return checked

    def build(self, image_name: str, *, task_id: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A fresh workflow for one task: its uploaded image, its own output prefix, its parameters."""
        workflow = copy.deepcopy(self.template)
        workflow[self.input_node]["inputs"]["image"] = image_name
        workflow[self.output_node]["inputs"]["filename_prefix"] = f"repairbot/{task_id}"
        values = {name: p.default for name, p in self.params.items()}
        values.update(self.check_params(params))
        for name, value in values.items():
            param = self.params[name]
            workflow[param.node]["inputs"][param.input] = value
        return workflow


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _validate_template(name: str, template: Any) -> None:
    if not isinstance(template, dict) or not template:
        raise WorkflowError(f"{name}: template is not a non-empty object")
    for node_id, node in template.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"{name}: node {node_id} lacks class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise WorkflowError(f"{name}: node {node_id} lacks inputs")
        for input_name, value in inputs.items():
            if isinstance(value, list):
                if not _is_link(value) or not isinstance(value[0], str) or not isinstance(value[1], int):
                    raise WorkflowError(f"{name}: node {node_id}.{input_name} is a malformed link")
                if value[0] not in template:
                    raise WorkflowError(f"{name}: node {node_id}.{input_name} links to missing node {value[0]}")
                if value[1] < 0:
                    raise WorkflowError(f"{name}: node {node_id}.{input_name} has a negative output index")


def _load_mode(name: str, entry: dict[str, Any], folder: Path) -> Mode:
    try:
        template_name = entry["template"]
        input_node = str(entry["input_node"])
        output_node = str(entry["output_node"])
    except KeyError as exc:
        raise WorkflowError(f"mode {name}: missing {exc.args[0]!r}") from exc
    path = folder / template_name
    if path.resolve().parent != folder.resolve():
        raise WorkflowError(f"mode {name}: template must sit in {folder}")
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError(f"mode {name}: cannot read {template_name}: {exc}") from exc
    _validate_template(name, template)
    for role, node_id in (("input_node", input_node), ("output_node", output_node)):
        if node_id not in template:
            raise WorkflowError(f"mode {name}: {role} {node_id} is not in {template_name}")
    if "image" not in template[input_node]["inputs"]:
        raise WorkflowError(f"mode {name}: input node {input_node} has no 'image' input")
    if "filename_prefix" not in template[output_node]["inputs"]:
        raise WorkflowError(f"mode {name}: output node {output_node} has no 'filename_prefix' input")
    params: dict[str, Param] = {}
    for param_name, spec in (entry.get("params") or {}).items():
        node_id = str(spec.get("node", ""))
        input_name = spec.get("input", "")
        if node_id not in template or input_name not in template[node_id]["inputs"]:
            raise WorkflowError(f"mode {name}: parameter {param_name} points at a missing input")
        param = Param(
            name=param_name,
            node=node_id,
            input=input_name,
            default=spec.get("default", template[node_id]["inputs"][input_name]),
            min=spec.get("min"),
            max=spec.get("max"),
            multiple_of=spec.get("multiple_of"),
            choices=tuple(spec.get("choices", ())),
        )
        try:
            param.coerce(param.default)
        except Refused as exc:
            raise WorkflowError(f"mode {name}: default of {param_name} breaks its limits: {exc.detail}") from exc
        params[param_name] = param
    labels = _per_language(name, "label", entry.get("label"))
    descriptions = _per_language(name, "description", entry.get("description"))
    words = entry.get("caption_words", [])
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise WorkflowError(f"mode {name}: caption_words must be a list of words")
    choosable = entry.get("choosable", False)
    if not isinstance(choosable, bool):
        raise WorkflowError(f"mode {name}: choosable must be true or false")
    return Mode(
        name,
        template,
        input_node,
        output_node,
        descriptions.get("en", ""),
        params,
        labels=labels,
        descriptions=descriptions,
        caption_words=tuple(w.strip().lower() for w in words),
        choosable=choosable,
    )


def _per_language(name: str, what: str, value: Any) -> dict[str, str]:
    """`label = "x"` (English) or `label = { en = "x", zh = "y" }`."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"en": value}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise WorkflowError(f"mode {name}: {what} must be text or a table of languages")


class Workflows:
    """Every mode in a workflows folder, validated."""

    def __init__(self, modes: dict[str, Mode]):
        if not modes:
            raise WorkflowError("no modes defined")
        self.modes = modes

    @classmethod
    def load(cls, folder: Path) -> Workflows:
        folder = Path(folder)
        manifest_path = folder / "modes.toml"
        try:
            manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise WorkflowError(f"cannot read {manifest_path}: {exc}") from exc
        entries = manifest.get("modes") or {}
        return cls({name: _load_mode(name, entry, folder) for name, entry in entries.items()})

    def __contains__(self, name: str) -> bool:
        return name in self.modes

    def get(self, name: str) -> Mode:
        mode = self.modes.get(name)
        if mode is None:
            raise Refused("unknown_mode", detail=f"no mode {name!r}", modes=self._names_to_choose())
        return mode

    @property
    def names(self) -> list[str]:
        return list(self.modes)

    @property
    def choosable(self) -> list[Mode]:
        """The modes users may pick in chat, in manifest order."""
        return [mode for mode in self.modes.values() if mode.choosable]

    def choosable_mode(self, name: str) -> Mode:
        """A mode a chat user may pick; Refused("unknown_mode") for any other name."""
        mode = self.modes.get(name)
        if mode is None or not mode.choosable:
            raise Refused("unknown_mode", detail=f"no choosable mode {name!r}", modes=self._names_to_choose())
        return mode

    def _names_to_choose(self) -> str:
        return ", ".join(mode.name for mode in self.choosable) or ", ".join(self.modes)

    def others(self, name: str) -> list[Mode]:
        """What "Other mode" offers after `name`: every other mode users may choose."""
        return [mode for mode in self.choosable if mode.name != name]

    def from_words(self, words: str | None) -> str | None:
        """The choosable mode a caption or command argument names (its key, label or a caption word)."""
        if not words:
            return None
        lowered = words.lower()
        tokens = set(lowered.split())
        for mode in self.choosable:
            names = {mode.name.lower(), *(label.lower() for label in mode.labels.values())}
            if tokens & names or any(word in lowered for word in mode.caption_words):
                return mode.name
        return None

    def labels(self, lang: str) -> str:
        """The choosable modes as one readable list, for help and refusals ("person, building")."""
        return ("、" if lang == "zh" else ", ").join(mode.label(lang) for mode in self.choosable)


def _allowed_values(spec: Any) -> list[Any] | None:
    """Combo choices in either encoding: a plain list, or ["COMBO", {"options": [...]}]."""
    if not isinstance(spec, list) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    if kind == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options", []))
    return None


def _check_value(node_id: str, input_name: str, value: Any, spec: Any) -> str | None:
    allowed = _allowed_values(spec)
    if allowed is not None:
        if value not in allowed:
            return f"node {node_id}: {input_name}={value!r} is not one of {allowed[:8]}"
        return None
    if isinstance(spec, list) and spec and spec[0] in ("INT", "FLOAT") and len(spec) > 1:
        limits = spec[1] if isinstance(spec[1], dict) else {}
        if "min" in limits and value < limits["min"]:
            return f"node {node_id}: {input_name}={value} is below {limits['min']}"
        if "max" in limits and value > limits["max"]:
            return f"node {node_id}: {input_name}={value} is above {limits['max']}"
    return None


def check_against_object_info(mode: Mode, object_info: dict[str, Any]) -> list[str]:
    """Problems that would make ComfyUI refuse this mode (the uploaded image name is not checked)."""
    problems: list[str] = []
    workflow = mode.build("probe.png", task_id="doctor-probe")
    for node_id, node in workflow.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: class {node['class_type']} is not installed")
            continue
        declared = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        for input_name in info.get("input", {}).get("required", {}):
            if input_name not in node["inputs"]:
                problems.append(f"node {node_id}: required input {input_name} is missing")
        for input_name, value in node["inputs"].items():
            if _is_link(value) or node_id == mode.input_node and input_name == "image":
                continue
            if input_name not in declared:
                problems.append(f"node {node_id}: {node['class_type']} has no input {input_name}")
                continue
            problem = _check_value(node_id, input_name, value, declared[input_name])
            if problem:
                problems.append(problem)
    return problems
