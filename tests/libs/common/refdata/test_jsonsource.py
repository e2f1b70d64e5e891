"""JSON parsing keeps the line of every value and refuses what the json module lets through."""

import pytest

from libs.common.refdata.jsonsource import parse_json
from libs.common.refdata.yamlsource import YamlProblem, YamlSourceError

TEXT = """\
{"type": "FeatureCollection", "features": [
{"type": "Feature", "properties": {"code": "430281001001001"}},
{"type": "Feature", "properties": {"code": "430281001001002"}}
]}
"""


def make_problems(text: str) -> list[YamlProblem]:
    with pytest.raises(YamlSourceError) as caught:
        parse_json(text)
    return caught.value.problems


def test_values_become_plain_python() -> None:
    document = parse_json('{"a": [1, 2.5, "x", true, null, {}], "b": {"c": []}}')

    assert document.data == {"a": [1, 2.5, "x", True, None, {}], "b": {"c": []}}


def test_every_path_has_its_line() -> None:
    document = parse_json(TEXT)

    assert document.line_of(("features", 0)) == 2
    assert document.line_of(("features", 1, "properties", "code")) == 3
    assert document.line_of(("features", 1, "geometry")) == 3
    assert document.line_of(("type",)) == 1


def test_an_empty_document_is_refused() -> None:
    (problem,) = make_problems("  \n")

    assert problem == YamlProblem(2, "invalid JSON: expected a value, found the end of the file")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": 1,\n "a": 2}', YamlProblem(2, "duplicate key 'a' (first at line 1)")),
        ('{"a": NaN}', YamlProblem(1, "invalid JSON: NaN and Infinity are not JSON numbers")),
        ("[1,\n-Infinity]", YamlProblem(2, "invalid JSON: NaN and Infinity are not JSON numbers")),
        ('{"a": 1,\n}', YamlProblem(2, "invalid JSON: expected a property name in double quotes")),
        ("[1, 2,]", YamlProblem(1, "invalid JSON: Expecting value")),
        ("[1 2]", YamlProblem(1, "invalid JSON: expected ',' or ']' after an array item")),
        ('{"a" 1}', YamlProblem(1, "invalid JSON: expected ':' after a property name")),
        ("{}\n{}", YamlProblem(2, "invalid JSON: extra data after the document")),
        ('{"a": "x\n"}', YamlProblem(1, "invalid JSON: Invalid control character")),
        ('[\n"abc', YamlProblem(2, "invalid JSON: Unterminated string")),
    ],
)
def test_invalid_or_ambiguous_json_is_refused(text: str, problem: YamlProblem) -> None:
    assert make_problems(text) == [problem]


def test_all_duplicate_keys_are_reported() -> None:
    problems = make_problems('{"a": 1,\n "b": {"c": 1,\n "c": 2},\n "a": 3}')

    assert problems == [
        YamlProblem(3, "duplicate key 'c' (first at line 2)"),
        YamlProblem(4, "duplicate key 'a' (first at line 1)"),
    ]
