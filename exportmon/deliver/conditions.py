"""Conditions on a receiving system's status answer: ``status_done``, ``status_fail``,
``status_warn``.

A condition compares fields of the answer with values::

    queuedCount == 0
    errorCount > 0 or warningCount > 0
    state == "finished" and (errors == 0 or ignored >= errors)

* a comparison is ``field OP value`` with ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``;
* ``field`` is a name (letters, digits, ``_``, ``-``), or a dotted path
  (``result.counts.errors``); ``value`` is a number (``0``, ``-1.5``) or a quoted
  string (``"done"`` or ``'done'``, with ``\\"`` and ``\\\\`` escapes);
* comparisons are joined by ``and`` and ``or``; ``and`` binds tighter than ``or``,
  and parentheses group.

Fields are looked up in the answer (:func:`parse_answer`): in an XML answer, the
first element of that name anywhere in the document (namespaces ignored; a
dotted path names an element inside another: ``dataSetStatus.errorCount``); in a
JSON answer, the key at that dotted path (list items by number: ``items.0.state``).
A number compares as a number when the field's text is one, else the comparison
is false; a string compares with the field's text. A field the answer does not
have raises :class:`MissingField`.

It is a parser, not ``eval``: nothing but these comparisons can be expressed.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exportmon import json_answers
from exportmon.errors import ExportmonError

#: The largest status answer read, in bytes.
ANSWER_LIMIT = 1024 * 1024

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>)
      | (?P<paren>[()])
      | (?P<word>[A-Za-z_][\w-]*(?:\.[\w-]+)*)
    )""",
    re.VERBOSE,
)


class ConditionError(ExportmonError):
    """A condition that cannot be parsed."""

    retryable = False


class AnswerError(ExportmonError):
    """A status answer that is not XML or JSON, or a field it does not have."""


class MissingField(AnswerError):
    """The answer has no field of the name a condition compares."""


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: float | str


@dataclass(frozen=True)
class Either:
    """``or``: true when any part is."""

    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Both:
    """``and``: true when every part is."""

    parts: tuple[Node, ...]


Node = Comparison | Either | Both


@dataclass(frozen=True)
class Condition:
    """A parsed condition: :meth:`holds` on an answer, :attr:`fields` it reads."""

    text: str
    tree: Node

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields compared, in the order written, each once."""
        found: list[str] = []

        def walk(node: Node) -> None:
            if isinstance(node, Comparison):
                if node.field not in found:
                    found.append(node.field)
            else:
                for part in node.parts:
                    walk(part)

        walk(self.tree)
        return tuple(found)

    def holds(self, answer: Answer) -> bool:
        """Whether the condition is true of ``answer``; :class:`MissingField` when it
        compares a field the answer lacks."""
        return _evaluate(self.tree, answer)


def parse_condition(text: str) -> Condition:
    """``text`` parsed; :class:`ConditionError` saying what is wrong and where."""
    tokens = _tokens(text)
    parser = _Parser(text, tokens)
    tree = parser.expression()
    if parser.position < len(tokens):
        _, value, at = tokens[parser.position]
        raise ConditionError(
            f"unexpected {value!r} at character {at + 1} of {text!r}",
            hint="join comparisons with and / or",
        )
    return Condition(text, tree)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            at = position + len(text[position:]) - len(text[position:].lstrip())
            raise ConditionError(
                f"cannot read {text[at : at + 10]!r} at character {at + 1} of {text!r}",
                hint='write field OP value, e.g. queuedCount == 0 or state == "done"',
            )
        group = match.lastgroup
        value = match.group(group)
        kind = value if group == "word" and value in ("and", "or") else group
        tokens.append((kind, value, match.start(group)))
        position = match.end()
    if not tokens:
        raise ConditionError("empty condition", hint="e.g. queuedCount == 0")
    return tokens


class _Parser:
    """Recursive descent: expression := all ('or' all)*; all := one ('and' one)*;
    one := '(' expression ')' | word OP (number | string)."""

    def __init__(self, text: str, tokens: list[tuple[str, str, int]]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def _take(self, kind: str, what: str) -> str:
        if self._peek() != kind:
            if self.position < len(self.tokens):
                _, value, at = self.tokens[self.position]
                found = f"{value!r} at character {at + 1}"
            else:
                found = "the end"
            raise ConditionError(
                f"expected {what} but found {found} in {self.text!r}",
                hint='write field OP value, e.g. queuedCount == 0 or state == "done"',
            )
        value = self.tokens[self.position][1]
        self.position += 1
        return value

    def expression(self) -> Node:
        parts = [self.conjunction()]
        while self._peek() == "or":
            self.position += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.one()]
        while self._peek() == "and":
            self.position += 1
            parts.append(self.one())
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def one(self) -> Node:
        if self._peek() == "paren" and self.tokens[self.position][1] == "(":
            self.position += 1
            inner = self.expression()
            if self._peek() != "paren" or self.tokens[self.position][1] != ")":
                self._take("close", "')'")
            self.position += 1
            return inner
        name = self._take("word", "a field name")
        op = self._take("op", "a comparison (==, !=, <, <=, >, >=)")
        kind = self._peek()
        if kind == "number":
            return Comparison(name, op, float(self._take("number", "")))
        if kind == "string":
            quoted = self._take("string", "")
            return Comparison(name, op, _unquote(quoted))
        self._take("value", "a number or a quoted string")
        raise AssertionError("unreachable")


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


# --- answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A status answer: an XML element tree or JSON data."""

    xml: ElementTree.Element | None = None
    data: Any = None

    def lookup(self, field: str) -> str | float | bool | None:
        """The value of ``field``; :class:`MissingField` when there is none."""
        if self.xml is not None:
            element = _xml_find(self.xml, field.split("."))
            if element is None:
                raise MissingField(f"the status answer has no element {field}")
            return (element.text or "").strip()
        value: Any = self.data
        for part in field.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise MissingField(f"the status answer has no key {field}")
        if isinstance(value, (dict, list)):
            raise MissingField(f"the status answer's {field} is not a single value")
        return value  # type: ignore[no-any-return]

    def fields(self, limit: int = 20) -> dict[str, str | float | bool | None]:
        """The answer's simple fields (an XML root's children with text, a JSON
        object's scalar keys), at most ``limit``: what is recorded and shown."""
        found: dict[str, str | float | bool | None] = {}
        if self.xml is not None:
            for child in self.xml:
                if len(child) == 0 and len(found) < limit:
                    found.setdefault(_local(child.tag), (child.text or "").strip()[:100])
        elif isinstance(self.data, dict):
            for key, value in self.data.items():
                if len(found) >= limit:
                    break
                if isinstance(value, (str, int, float, bool)) or value is None:
                    found[str(key)[:60]] = value[:100] if isinstance(value, str) else value
        return found


def parse_answer(body: bytes) -> Answer:
    """A status answer (XML or JSON) parsed; :class:`AnswerError` when it is neither.

    XML with a document type declaration is refused, so entity expansion (the
    "billion laughs") and external entities never come into play.
    """
    text = body.lstrip(b"\xef\xbb\xbf").strip()
    if text.startswith((b"{", b"[")):
        try:
            return Answer(data=json_answers.loads(text))
        except ValueError as exc:
            raise AnswerError(f"the status answer is not valid JSON: {exc}") from None
    if text.startswith(b"<"):
        if b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
            raise AnswerError("the status answer declares a DOCTYPE: refused")
        try:
            return Answer(xml=ElementTree.fromstring(text))
        except ElementTree.ParseError as exc:
            raise AnswerError(f"the status answer is not valid XML: {exc}") from None
    raise AnswerError("the status answer is neither XML nor JSON")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_find(root: ElementTree.Element, path: list[str]) -> ElementTree.Element | None:
    for element in root.iter():
        if _local(element.tag) != path[0]:
            continue
        if len(path) == 1:
            return element
        for child in element:
            found = _xml_find(child, path[1:])
            if found is not None:
                return found
    return None


def _evaluate(node: Node, answer: Answer) -> bool:
    if isinstance(node, Either):
        return any(_evaluate(part, answer) for part in node.parts)
    if isinstance(node, Both):
        return all(_evaluate(part, answer) for part in node.parts)
    value = answer.lookup(node.field)
    compare = OPERATORS[node.op]
    if isinstance(node.value, float):
        number = _number(value)
        if number is None:
            return node.op == "!="
        return compare(number, node.value)
    text = value if isinstance(value, str) else json.dumps(value)
    return compare(text, node.value)


def _number(value: str | float | bool | None) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


__all__ = [
    "Answer",
    "AnswerError",
    "Condition",
    "ConditionError",
    "MissingField",
    "parse_answer",
    "parse_condition",
]
