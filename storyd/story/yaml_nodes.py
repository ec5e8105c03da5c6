"""Reading YAML while keeping line numbers: typed getters over PyYAML's node tree.

Every getter raises InputError pointing at `file:line:col` of the offending node,
so a story's errors read like a compiler's.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from storyd.errors import InputError

_TYPE_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "empty",
    "tag:yaml.org,2002:seq": "a list",
    "tag:yaml.org,2002:map": "a mapping",
}


class YamlDoc:
    """A parsed YAML file: the root node plus the means to report errors at any node."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise InputError(
                f"not valid YAML: {exc.problem or exc.context}",
                "check the indentation and quoting on that line",
                path=path,
                line=mark.line + 1 if mark else None,
                col=mark.column + 1 if mark else None,
            ) from None
        self._constructor = SafeConstructor()

    def error(self, node: Node | None, message: str, hint: str | None = None) -> InputError:
        if node is None:
            return InputError(message, hint, path=self.path)
        mark = node.start_mark
        return InputError(message, hint, path=self.path, line=mark.line + 1, col=mark.column + 1)

    def value(self, node: Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def type_name(self, node: Node) -> str:
        return _TYPE_NAMES.get(node.tag, node.tag)

    # --- typed getters -------------------------------------------------------------

    def mapping(self, node: Node, what: str, allowed: Iterable[str] | None) -> dict[str, tuple[ScalarNode, Node]]:
        """A mapping's entries by key; duplicates, and keys not in `allowed` (unless None), are errors."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what} must be a mapping (key: value lines), not {self.type_name(node)}")
        allowed = None if allowed is None else list(allowed)
        entries: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"keys in {what} must be names, not {self.type_name(key_node)}")
            if key in entries:
                raise self.error(key_node, f"'{key}' appears twice in {what}", "keep one of them")
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
                raise self.error(key_node, f"unknown key '{key}' in {what}", hint)
            entries[key] = (key_node, value_node)
        return entries

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.error(node, f"{what} must be a list (lines starting with '- '), not {self.type_name(node)}")
        return list(node.value)

    def string(self, node: Node, what: str, *, choices: Iterable[str] | None = None, empty_ok: bool = False) -> str:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and node.style is None:
            value = str(node.value)  # a bare number used as text, e.g. a caption "42"
        if not isinstance(value, str):
            raise self.error(node, f"{what} must be text, not {self.type_name(node)}", "put it in quotes")
        if not empty_ok and not value.strip():
            raise self.error(node, f"{what} is empty", "write something, or remove the key")
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                close = difflib.get_close_matches(value, choices, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(choices)}"
                raise self.error(node, f"{what} '{value}' is not one of the known values", hint)
        return value

    def integer(self, node: Node, what: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{what} must be a whole number, not {self.type_name(node)}")
        self._check_range(node, what, value, minimum, maximum)
        return value

    def number(self, node: Node, what: str, *, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(node, f"{what} must be a number, not {self.type_name(node)}")
        self._check_range(node, what, value, minimum, maximum)
        return float(value)

    def boolean(self, node: Node, what: str) -> bool:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, bool):
            raise self.error(node, f"{what} must be true or false, not {self.type_name(node)}")
        return value

    def _check_range(self, node: Node, what: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.error(node, f"{what} is {value}, below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(node, f"{what} is {value}, above the maximum {maximum}")


def line_of(node: Node) -> int:
    return node.start_mark.line + 1
