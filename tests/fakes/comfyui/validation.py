"""Prompt validation the way ComfyUI 0.3.64 does it (execution.validate_prompt / validate_inputs).

Error bodies are shaped and worded exactly like the recorded server's, quirks included: a broken
upstream node gives the output an empty `details`, a dangling link is reported under the linking
node with the downstream input's name, and every failing output is appended to the
`dependent_outputs` of every invalid node seen so far.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _error(type_: str, message: str, details: str, extra_info: dict | None = None) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _type_name(exc_type: type) -> str:
    module = exc_type.__module__
    return exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"


@dataclass
class ValidationResult:
    """What POST /prompt needs: `error` is None when at least one output validated."""

    error: dict | None
    good_outputs: list[str] = field(default_factory=list)
    node_errors: dict = field(default_factory=dict)


class PromptValidator:
    """Checks an API-format workflow against /object_info; coerces literals in place like ComfyUI."""

    def __init__(self, object_info: dict, image_exists: Callable[[str], bool]):
        self.object_info = object_info
        self.image_exists = image_exists  # LoadImage's own VALIDATE_INPUTS looks at input/

    def validate(self, prompt: dict, partial_targets: list | None = None) -> ValidationResult:
        outputs = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return ValidationResult(
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    )
                )
            class_type = node["class_type"]
            if class_type not in self.object_info:
                return ValidationResult(
                    _error(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{node_id}'",
                    )
                )
            if self.object_info[class_type].get("output_node") and (
                partial_targets is None or node_id in partial_targets
            ):
                outputs.append(node_id)
        if not outputs:
            return ValidationResult(_error("prompt_no_outputs", "Prompt has no outputs", ""))

        good_outputs: list[str] = []
        failed: list[tuple[str, list]] = []
        node_errors: dict = {}
        validated: dict = {}
        for output_id in outputs:
            try:
                valid, reasons = self._validate_node(prompt, output_id, validated)[:2]
            except Exception as ex:  # noqa: BLE001 - mirrors the server's catch-all
                exc_type, _, tb = sys.exc_info()
                valid = False
                reasons = [
                    _error(
                        "exception_during_validation",
                        "Exception when validating node",
                        str(ex),
                        {"exception_type": _type_name(exc_type), "traceback": traceback.format_tb(tb)},
                    )
                ]
                validated[output_id] = (False, reasons, output_id)
            if valid is True:
                good_outputs.append(output_id)
                continue
            if reasons:
                failed.append((output_id, reasons))
            for node_id, (node_valid, node_reasons, _) in validated.items():
                if node_valid is not True and node_reasons:
                    if node_id not in node_errors:
                        node_errors[node_id] = {
                            "errors": node_reasons,
                            "dependent_outputs": [],
                            "class_type": prompt[node_id]["class_type"],
                        }
                    node_errors[node_id]["dependent_outputs"].append(output_id)

        if not good_outputs:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in failed for e in errors)
            return ValidationResult(
                _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), [], node_errors
            )
        return ValidationResult(None, good_outputs, node_errors)

    def _validate_node(self, prompt: dict, node_id: str, validated: dict) -> tuple:
        if node_id in validated:
            return validated[node_id]
        node = prompt[node_id]
        class_type = node["class_type"]
        info = self.object_info[class_type]
        inputs = node.setdefault("inputs", {})
        sections = info["input"]
        order = info.get("input_order", {})
        names = [(n, "required") for n in order.get("required", sections.get("required", {}))]
        names += [(n, "optional") for n in order.get("optional", sections.get("optional", {}))]
        errors: list[dict] = []
        valid = True

        for name, category in names:
            spec = sections[category][name]
            input_type = spec[0]
            options = spec[1] if len(spec) > 1 else {}
            config = [input_type, options]
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error("required_input_missing", "Required input is missing", name, {"input_name": name})
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                if len(value) != 2:
                    errors.append(
                        _error(
                            "bad_linked_input",
                            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                            name,
                            {"input_name": name, "input_config": config, "received_value": value},
                        )
                    )
                    continue
                source_id = value[0]
                source_class = prompt[source_id]["class_type"]  # KeyError for a dangling link, as upstream
                received_type = self.object_info[source_class]["output"][value[1]]
                if not _types_match(received_type, input_type):
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            f"{name}, received_type({received_type}) mismatch input_type({input_type})",
                            {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received_type,
                                "linked_node": value,
                            },
                        )
                    )
                    continue
                try:
                    if self._validate_node(prompt, source_id, validated)[0] is False:
                        valid = False
                        continue
                except Exception as ex:  # noqa: BLE001 - mirrors the server's catch-all
                    exc_type, _, tb = sys.exc_info()
                    valid = False
                    validated[source_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(ex),
                                {
                                    "input_name": name,
                                    "input_config": config,
                                    "exception_message": str(ex),
                                    "exception_type": _type_name(exc_type),
                                    "traceback": traceback.format_tb(tb),
                                    "linked_node": value,
                                },
                            )
                        ],
                        source_id,
                    )
                    continue
                continue

            if class_type == "LoadImage" and name == "image":
                if not self.image_exists(value):  # LoadImage.VALIDATE_INPUTS replaces the combo check
                    errors.append(
                        _error(
                            "custom_validation_failed",
                            "Custom validation failed for node",
                            f"{name} - Invalid image file: {value}",
                            {"input_name": name},
                        )
                    )
                continue
            error, value = _check_literal(name, value, input_type, options, config)
            inputs[name] = value
            if error:
                errors.append(error)

        result = (False, errors, node_id) if errors or valid is not True else (True, [], node_id)
        validated[node_id] = result
        return result


def _types_match(received: Any, expected: Any) -> bool:
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if "*" in (received, expected) or received == expected:
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def _check_literal(name: str, value: Any, input_type: Any, options: dict, config: list) -> tuple[dict | None, Any]:
    """Coerce and range-check one widget value; returns (error or None, coerced value)."""
    try:
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        if input_type == "INT":
            value = int(value)
        elif input_type == "FLOAT":
            value = float(value)
        elif input_type == "STRING":
            value = str(value)
        elif input_type == "BOOLEAN":
            value = bool(value)
    except Exception as ex:  # noqa: BLE001 - any conversion failure is reported, like upstream
        return _error(
            "invalid_input_type",
            f"Failed to convert an input value to a {input_type} value",
            f"{name}, {value}, {ex}",
            {"input_name": name, "input_config": config, "received_value": value, "exception_message": str(ex)},
        ), value
    if "min" in options and value < options["min"]:
        return _error(
            "value_smaller_than_min",
            f"Value {value} smaller than min of {options['min']}",
            name,
            {"input_name": name, "input_config": config, "received_value": value},
        ), value
    if "max" in options and value > options["max"]:
        return _error(
            "value_bigger_than_max",
            f"Value {value} bigger than max of {options['max']}",
            name,
            {"input_name": name, "input_config": config, "received_value": value},
        ), value
    if isinstance(input_type, list) or input_type == "COMBO":
        choices = options.get("options", []) if input_type == "COMBO" else input_type
        if value not in choices:
            shown_config, listed = (
                (None, f"(list of length {len(choices)})") if len(choices) > 20 else (config, str(choices))
            )
            return _error(
                "value_not_in_list",
                "Value not in list",
                f"{name}: '{value}' not in {listed}",
                {"input_name": name, "input_config": shown_config, "received_value": value},
            ), value
    return None, value
