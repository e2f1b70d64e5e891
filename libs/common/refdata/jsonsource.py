"""JSON loading that remembers the line of every value, as yamlsource does for YAML.

The result is the same `YamlDocument` (plain values plus the line of every path) and problems
are the same `YamlProblem`s, so the loader reports JSON and YAML files alike. Duplicate keys and
the non-standard NaN/Infinity are refused; the json module would accept both silently.
"""

import json
import re
from bisect import bisect_right
from types import MappingProxyType

from libs.common.refdata.yamlsource import Loc, YamlDocument, YamlProblem, YamlSourceError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NON_STANDARD = ("NaN", "Infinity", "-Infinity")
_SCALARS = json.JSONDecoder()
_TRAILING_AT = re.compile(r" (starting )?at$")


class _InvalidJsonError(Exception):
    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(reason)


def parse_json(text: str) -> YamlDocument:
    """Parse one JSON document; raises YamlSourceError listing every problem found."""
    parser = _Parser(text)
    try:
        data = parser.document()
    except _InvalidJsonError as error:
        problem = YamlProblem(parser.line_at(error.position), f"invalid JSON: {error.reason}")
        raise YamlSourceError([problem]) from None
    if parser.problems:
        raise YamlSourceError(parser.problems)
    return YamlDocument(data=data, lines=MappingProxyType(parser.lines))


class _Parser:
    """A recursive-descent walk over containers; the json module decodes each scalar."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", text))]
        self.lines: dict[Loc, int] = {}
        self.problems: list[YamlProblem] = []

    def line_at(self, position: int) -> int:
        return bisect_right(self._line_starts, position)

    def document(self) -> object:
        data, end = self._value(self._skip(0), ())
        end = self._skip(end)
        if end < len(self._text):
            raise _InvalidJsonError(end, "extra data after the document")
        return data

    def _skip(self, position: int) -> int:
        match = _WHITESPACE.match(self._text, position)
        return position if match is None else match.end()

    def _at(self, position: int, char: str) -> bool:
        return self._text.startswith(char, position)

    def _value(self, position: int, loc: Loc) -> tuple[object, int]:
        if position >= len(self._text):
            raise _InvalidJsonError(position, "expected a value, found the end of the file")
        self.lines[loc] = self.line_at(position)
        if self._at(position, "{"):
            return self._object(position + 1, loc)
        if self._at(position, "["):
            return self._array(position + 1, loc)
        if self._text.startswith(_NON_STANDARD, position):
            raise _InvalidJsonError(position, "NaN and Infinity are not JSON numbers")
        return self._scalar(position)

    def _scalar(self, position: int) -> tuple[object, int]:
        try:
            value, end = _SCALARS.raw_decode(self._text, position)
        except json.JSONDecodeError as error:
            # "Unterminated string starting at": the line number says where.
            raise _InvalidJsonError(error.pos, _TRAILING_AT.sub("", error.msg)) from None
        return value, end

    def _object(self, position: int, loc: Loc) -> tuple[dict[str, object], int]:
        result: dict[str, object] = {}
        first_lines: dict[str, int] = {}
        position = self._skip(position)
        if self._at(position, "}"):
            return result, position + 1
        while True:
            if not self._at(position, '"'):
                raise _InvalidJsonError(position, "expected a property name in double quotes")
            line = self.line_at(position)
            name, position = self._scalar(position)
            key = str(name)  # already a str: a JSON string starts at '"'
            position = self._skip(position)
            if not self._at(position, ":"):
                raise _InvalidJsonError(position, "expected ':' after a property name")
            value, position = self._value(self._skip(position + 1), (*loc, key))
            if key in result:
                first = first_lines[key]
                self.problems.append(
                    YamlProblem(line, f"duplicate key {key!r} (first at line {first})")
                )
            else:
                first_lines[key] = line
                result[key] = value
            position = self._skip(position)
            if self._at(position, "}"):
                return result, position + 1
            if not self._at(position, ","):
                raise _InvalidJsonError(position, "expected ',' or '}' after a property")
            position = self._skip(position + 1)

    def _array(self, position: int, loc: Loc) -> tuple[list[object], int]:
        result: list[object] = []
        position = self._skip(position)
        if self._at(position, "]"):
            return result, position + 1
        while True:
            value, position = self._value(position, (*loc, len(result)))
            result.append(value)
            position = self._skip(position)
            if self._at(position, "]"):
                return result, position + 1
            if not self._at(position, ","):
                raise _InvalidJsonError(position, "expected ',' or ']' after an array item")
            position = self._skip(position + 1)
