"""YAML loading that remembers the line of every value, so errors can point into the file."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import yaml

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlProblem:
    line: int | None  # 1-based
    reason: str


class YamlSourceError(Exception):
    """The text is not usable YAML: syntax errors, duplicate keys, non-scalar keys."""

    def __init__(self, problems: Sequence[YamlProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"line {p.line}: {p.reason}" for p in self.problems))


@dataclass(frozen=True)
class YamlDocument:
    data: object  # plain dicts, lists and scalars
    lines: Mapping[Loc, int]  # path of every value -> 1-based line

    def line_of(self, loc: Iterable[str | int]) -> int | None:
        """Line of the deepest recorded path along `loc`.

        Parts of `loc` that are not in the document (a missing field, a union tag added by
        pydantic) are skipped, so the answer is the closest enclosing value.
        """
        path: Loc = ()
        line = self.lines.get(path)
        for part in loc:
            candidate = (*path, part)
            if candidate in self.lines:
                path = candidate
                line = self.lines[candidate]
        return line


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document; raises YamlSourceError listing every problem found."""
    loader = yaml.SafeLoader(text)
    converter = _Converter(loader)
    try:
        root = loader.get_single_node()
        data = None if root is None else converter.convert(root, (), _line(root))
    except yaml.MarkedYAMLError as error:
        raise YamlSourceError([_marked_problem(error)]) from error
    except yaml.YAMLError as error:
        raise YamlSourceError([YamlProblem(None, f"YAML error: {error}")]) from error
    finally:
        loader.dispose()
    if converter.problems:
        raise YamlSourceError(converter.problems)
    return YamlDocument(data=data, lines=MappingProxyType(converter.lines))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _marked_problem(error: yaml.MarkedYAMLError) -> YamlProblem:
    mark = error.problem_mark or error.context_mark
    parts = [part for part in (error.context, error.problem) if part]
    kind = (
        "unsupported YAML"
        if isinstance(error, yaml.constructor.ConstructorError)
        else "YAML syntax error"
    )
    reason = f"{kind}: " + (", ".join(parts) or str(error))
    return YamlProblem(None if mark is None else int(mark.line) + 1, reason)


class _Converter:
    """Turns composed nodes into plain values while recording each value's line."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self._open: set[int] = set()  # nodes being converted, to catch recursive aliases
        self.lines: dict[Loc, int] = {}
        self.problems: list[YamlProblem] = []

    def convert(self, node: yaml.Node, loc: Loc, line: int) -> object:
        self.lines[loc] = line
        if isinstance(node, yaml.ScalarNode):
            return self._loader.construct_object(node)
        if id(node) in self._open:
            self.problems.append(YamlProblem(line, "recursive alias"))
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [
                    self.convert(item, (*loc, index), _line(item))
                    for index, item in enumerate(node.value)
                ]
            return self._mapping(node, loc)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.Node, loc: Loc) -> dict[str | int, object]:
        result: dict[str | int, object] = {}
        first_lines: dict[str | int, int] = {}
        for key_node, value_node in node.value:
            line = _line(key_node)
            key = self._key(key_node)
            if key is None:
                continue
            if key in result:
                self.problems.append(
                    YamlProblem(line, f"duplicate key {key!r} (first at line {first_lines[key]})")
                )
                continue
            first_lines[key] = line
            result[key] = self.convert(value_node, (*loc, key), line)
        return result

    def _key(self, node: yaml.Node) -> str | int | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(YamlProblem(_line(node), "mapping keys must be plain scalars"))
            return None
        key = self._loader.construct_object(node)
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        self.problems.append(
            YamlProblem(_line(node), f"mapping key {node.value!r} is not a string; quote it")
        )
        return None
