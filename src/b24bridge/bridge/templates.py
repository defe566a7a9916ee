"""The route file's Jinja2 templates: compiled once, rendered in Jinja2's immutable sandbox with size caps.

Templates are configuration written by the operator; the data they read (deal titles, comments...) comes from a
partner's portal and is never evaluated. The sandbox keeps templates away from Python's internals (no ``__class__``,
no function globals, no mutation of the records); the caps keep an honest mistake (``'-' * 10**9``) from eating the
process. They are not a defence against a template written to burn CPU: the route file is trusted configuration.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

MAX_OUTPUT = 100_000  # characters one template may render
MAX_BUILT = 100_000  # items or characters of a sequence built inside a template with ``*``
MAX_EXPONENT = 1_000
MAX_FORMAT_WIDTH = 1_000
# Padding methods build strings as long as their argument says; the sandbox would let them through.
_PADDING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"})
_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateProblem(Exception):
    """A template that does not compile or cannot be rendered; the message is safe to show an operator."""


class Record(dict[str, Any]):
    """A record in the template context: a plain dict that knows its name for error messages."""

    def __init__(self, label: str, fields: Mapping[str, Any]) -> None:
        super().__init__(fields)
        self._label = label


class _Undefined(StrictUndefined):
    """StrictUndefined with messages that name the record and the field."""

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner, name = self._undefined_obj, self._undefined_name
        if isinstance(owner, Record):
            return f"{owner._label} has no field {name!r}"
        if owner is None:
            return f"cannot read {name!r}: the record is empty"
        if owner is missing:
            return f"{name!r} is undefined"
        return f"{type(owner).__name__} value has no {name!r}"


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise TemplateProblem(f"exponent {right} is over {MAX_EXPONENT}")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> None:
        # Jinja2 hands out a sandboxed str.format, whose widths (``{:>999999999}``) it does not bound: refuse it
        # like the other padding methods, through is_safe_attribute.
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _PADDING:
            return False
        return super().is_safe_attribute(obj, attr, value)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and isinstance(times, int) and len(sequence) * times > MAX_BUILT:
        raise TemplateProblem(f"a sequence repeated {times} times would be over {MAX_BUILT} long")


def _check_percent_format(text: str) -> None:
    for match in _PERCENT_WIDTH.finditer(text):
        for width in match.groups():
            if width == "*" or (width is not None and int(width) > MAX_FORMAT_WIDTH):
                raise TemplateProblem(f"a %-format width over {MAX_FORMAT_WIDTH}")


def _none_as_empty(value: Any) -> Any:
    # An empty Bitrix24 field is often null: it renders as nothing, while a field that does not exist is an error.
    return "" if value is None else value


def _money_part(value: Any, index: int) -> str:
    """A money user field reads ``"1500.5|EUR"``: the amount is part 0, the currency part 1."""
    text = "" if value is None else str(value)
    parts = text.split("|", 1)
    return parts[index].strip() if index < len(parts) else ""


def _build_environment() -> _Environment:
    environment = _Environment(
        undefined=_Undefined, autoescape=False, finalize=_none_as_empty, keep_trailing_newline=True
    )
    for unsafe_filter in ("center", "indent", "format"):
        del environment.filters[unsafe_filter]
    del environment.globals["lipsum"]
    environment.filters["amount"] = functools.partial(_money_part, index=0)
    environment.filters["currency"] = functools.partial(_money_part, index=1)
    return environment


_ENVIRONMENT = _build_environment()


def is_template(text: str) -> bool:
    """A string constant in the route file is a template when it holds Jinja2 markup."""
    return "{{" in text or "{%" in text or "{#" in text


@functools.lru_cache(maxsize=1024)
def compile_template(source: str) -> Template:
    try:
        return _ENVIRONMENT.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template does not compile: {exc.message} (template line {exc.lineno})") from None


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context``; every failure (a missing field, a sandbox refusal, a Python error in an
    expression, output over ``MAX_OUTPUT``) is a :class:`TemplateProblem`."""
    template = compile_template(source)
    chunks: list[str] = []
    size = 0
    try:
        # Streaming lets a runaway loop stop at the cap instead of building its whole output first.
        for chunk in template.generate(dict(context)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateProblem(f"template output is over {MAX_OUTPUT} characters")
            chunks.append(chunk)
    except TemplateProblem:
        raise
    except TemplateError as exc:
        raise TemplateProblem(exc.message or type(exc).__name__) from None
    except Exception as exc:  # an expression's own error (1/0, int("x")...) is the template's problem
        raise TemplateProblem(f"{type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def referenced_fields(source: str) -> Iterable[tuple[str, str]]:
    """``(variable, field)`` for each ``deal.TITLE`` or ``deal["TITLE"]`` the template reads directly."""
    tree = _ENVIRONMENT.parse(source)
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            yield node.node.name, node.attr
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.node, nodes.Name) and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
            yield item.node.name, item.arg.value


def unknown_names(source: str, known: Iterable[str]) -> list[str]:
    """Variables the template reads that are neither in ``known`` nor Jinja2's own globals (``range``...)."""
    names = meta.find_undeclared_variables(_ENVIRONMENT.parse(source))
    return sorted(names - set(known) - set(_ENVIRONMENT.globals))
