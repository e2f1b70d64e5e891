"""YAML parsing keeps the line of every value and refuses ambiguous documents."""

import pytest

from libs.common.refdata.yamlsource import YamlProblem, YamlSourceError, parse_yaml

TEXT = """\
# a comment
towns:
  - code: "430281001"
    villages:
      - {code: "430281001001", name: 建设社区}
"""


def make_problems(text: str) -> list[YamlProblem]:
    with pytest.raises(YamlSourceError) as caught:
        parse_yaml(text)
    return caught.value.problems


def test_values_become_plain_python() -> None:
    document = parse_yaml(TEXT)

    expected = {
        "towns": [{"code": "430281001", "villages": [{"code": "430281001001", "name": "建设社区"}]}]
    }
    assert document.data == expected


def test_every_path_has_its_line() -> None:
    document = parse_yaml(TEXT)

    assert document.line_of(("towns", 0, "code")) == 3
    assert document.line_of(("towns", 0, "villages", 0, "name")) == 5


def test_unknown_paths_fall_back_to_the_closest_enclosing_value() -> None:
    document = parse_yaml(TEXT)

    assert document.line_of(("towns", 0, "sector")) == 3
    assert document.line_of(("towns", 0, "villages", 0, "webhook", "name")) == 5
    assert document.line_of(("nothing",)) == 2


def test_all_duplicate_keys_are_reported() -> None:
    problems = make_problems("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")

    assert problems == [
        YamlProblem(4, "duplicate key 'c' (first at line 3)"),
        YamlProblem(5, "duplicate key 'a' (first at line 1)"),
    ]


def test_syntax_errors_carry_the_parsers_line() -> None:
    (problem,) = make_problems("a: 1\nb: [1, 2\nc: 3\n")

    assert problem.line == 3
    assert problem.reason.startswith("YAML syntax error:")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("on: 1\n", "mapping key 'on' is not a string; quote it"),
        ("? [a]\n: 1\n", "mapping keys must be plain scalars"),
        ("a: &x\n  b: *x\n", "recursive alias"),
        ("a: !!python/name:os.system x\n", "unsupported YAML: could not determine a constructor"),
    ],
)
def test_ambiguous_or_unsafe_yaml_is_refused(text: str, reason: str) -> None:
    (problem,) = make_problems(text)

    assert problem.reason.startswith(reason)


def test_an_empty_document_is_none() -> None:
    assert parse_yaml("# nothing here\n").data is None
