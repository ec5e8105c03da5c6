"""Reading YAML while keeping line numbers: typed getters over PyYAML's node tree.

Every getter raises InputError pointing at `file:line:col` of the offending node,
so a story's errors read like a compiler's.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from storyd.errors import InputError

MAX_DEPTH = 64  # lists and mappings inside each other; a story needs a handful, and PyYAML recurses per level

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
            self._check_depth(text)
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
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. a NUL byte
            line = text.count("\n", 0, exc.position) + 1
            raise InputError(
                f"not valid YAML: the control character U+{_code(exc.character):04X} is not allowed in a story",
                "remove it, or save the file as plain UTF-8 text",
                path=path,
                line=line,
            ) from None
        self._constructor = SafeConstructor()

    def _check_depth(self, text: str) -> None:
        """Refuse nesting deeper than MAX_DEPTH from the event stream, which PyYAML builds without
        recursing, so that composing the node tree below cannot overflow the stack."""
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise InputError(
                        f"lists and mappings are nested more than {MAX_DEPTH} deep",
                        "a story needs only a few levels; check the brackets and indentation",
                        path=self.path,
                        line=mark.line + 1,
                        col=mark.column + 1,
                    )
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1

    def error(self, node: Node | None, message: str, hint: str | None = None) -> InputError:
        if node is None:
            return InputError(message, hint, path=self.path)
        mark = node.start_mark
        return InputError(message, hint, path=self.path, line=mark.line + 1, col=mark.column + 1)

    def value(self, node: Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):  # e.g. `!!int abc`, `!!binary ?`, `!foo x`
            raise self.error(node, f"can't read this value as {self.type_name(node)}", "put it in quotes") from None

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
        if not math.isfinite(value):
            raise self.error(node, f"{what} is {value}, not a finite number", "write a plain number such as 7.5")
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


def _code(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def line_of(node: Node) -> int:
    return node.start_mark.line + 1
