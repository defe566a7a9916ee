"""The route file as a tree that remembers lines: YAML read safely, duplicate keys refused, ``${NAME}`` replaced.

Problems are collected, not raised, so one pass over a file reports all of them; each reads
``file:line: path: what is wrong; allowed: what is``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..observability import redact_text
from ..safetext import refusal

Segment = str | int
_MAX_NODES = 100_000  # an alias bomb expands to far more; an honest route file has a few hundred
_VARIABLE = re.compile(r"\$(\$?)\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_:-]+")


def format_path(path: Sequence[Segment]) -> str:
    """``routes.partner-to-acme.deal.STAGE_ID``; list positions as ``[0]``, odd keys quoted as ``["a b"]``."""
    if not path:
        return "(file)"
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _PLAIN_SEGMENT.fullmatch(segment):
            text += f".{segment}" if text else segment
        else:
            text += f"[{segment!r}]"
    return text


def choices(value: str, allowed: Iterable[str]) -> str:
    """``one of a, b, c (did you mean b?)``: what an operator needs after a typo."""
    names = list(allowed)
    text = "one of " + ", ".join(names) if names else "none exist"
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return f"{text} (did you mean {close[0]}?)" if close else text


@dataclass
class Problems:
    """Problems of one file, in the shape every message of the route file and of ``routes check`` has."""

    file: str
    messages: list[str] = field(default_factory=list)

    def add(self, line: int, path: Sequence[Segment], what: str, allowed: str | None = None) -> None:
        message = f"{self.file}:{line}: {format_path(path)}: {what}"
        if allowed is not None:
            message += f"; allowed: {allowed}"
        # Nothing quoted from the file may carry a webhook code; mask it as the logs do.
        self.messages.append(redact_text(message))


@dataclass(frozen=True)
class Scalar:
    value: Any  # str, int, float, bool or None (dates stay strings)
    text: str  # as written: map keys compare as text, so `1:30` or `on` never turn into numbers or booleans
    line: int
    broken: bool = False  # a ${NAME} in it could not be replaced (already reported): check nothing else


@dataclass(frozen=True)
class Entry:
    key_line: int
    node: Tree


@dataclass(frozen=True)
class Map:
    entries: dict[str, Entry]
    line: int


@dataclass(frozen=True)
class Seq:
    items: list[Tree]
    line: int


Tree = Scalar | Map | Seq


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as the text written (values go to Bitrix24 as text anyway)."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: Node) -> str:
    return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def parse(text: str, problems: Problems, environ: Mapping[str, str]) -> Tree | None:
    """The document as a tree; ``None`` when the YAML itself is broken (the problem is recorded)."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            problems.add(1, [], "the file is empty", "a mapping with portals and routes")
            return None
        builder = _Builder(loader, problems, environ)
        return builder.build(root, [])
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problems.add(line, [], f"not valid YAML: {exc.problem or exc.context}", "YAML 1.1 (block or flow)")
        return None
    finally:
        loader.dispose()


class _Builder:
    def __init__(self, loader: _Loader, problems: Problems, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.problems = problems
        self.environ = environ
        self.count = 0

    def build(self, node: Node, path: list[Segment]) -> Tree:
        self.count += 1
        if self.count > _MAX_NODES:
            raise yaml.MarkedYAMLError(problem=f"more than {_MAX_NODES} values", problem_mark=node.start_mark)
        line = node.start_mark.line + 1
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return Seq([self.build(item, [*path, i]) for i, item in enumerate(node.value)], line)
        assert isinstance(node, ScalarNode)
        value = self.loader.construct_object(node, deep=True)
        if not isinstance(value, str):
            return Scalar(value, node.value, line)
        reported = len(self.problems.messages)
        value = self._interpolate(value, line, path)
        unstorable = refusal(value)
        if unstorable is not None:  # a "\0" or "\ud800" escape, or an environment variable's undecodable bytes
            self.problems.add(line, path, f"the value {unstorable}", "text without NUL characters")
        return Scalar(value, node.value, line, broken=len(self.problems.messages) > reported)

    def _mapping(self, node: MappingNode, path: list[Segment]) -> Map:
        # Duplicates are looked for among the keys written here; keys merged in with `<<: *anchor` may be
        # overridden, as YAML means them to be.
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = _key_text(key_node), key_node.start_mark.line + 1
            if key in seen:
                self.problems.add(line, [*path, key], f"duplicate key (first at line {seen[key]})", "each key once")
            seen.setdefault(key, line)
        self.loader.flatten_mapping(node)
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.add(key_node.start_mark.line + 1, path, "a key must be a plain value", "text keys")
                continue
            key = _key_text(key_node)
            if refusal(key) is not None:
                self.problems.add(key_node.start_mark.line + 1, path, f"a key {refusal(key)}", "text keys")
                continue
            entries[key] = Entry(key_node.start_mark.line + 1, self.build(value_node, [*path, key]))
        return Map(entries, node.start_mark.line + 1)

    def _interpolate(self, text: str, line: int, path: list[Segment]) -> str:
        def replace(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped:
                return "${" + name + "}"
            if not _VARIABLE_NAME.fullmatch(name):
                self.problems.add(line, path, f"${{{name}}} is not a variable name", "${NAME} with A-Z, 0-9 and _")
                return ""
            if name not in self.environ:
                self.problems.add(line, path, f"environment variable {name} is not set", "a variable set for b24bridge")
                return ""
            return self.environ[name]

        return _VARIABLE.sub(replace, text)


def _key_text(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else "?"
