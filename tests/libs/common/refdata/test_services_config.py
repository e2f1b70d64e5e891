"""Category forms, proxy-service items and the Open311 configuration, each problem at its line."""

from pathlib import Path

from libs.common.refdata.loader import ConfigIssue, load_reference_data
from libs.common.refdata.models import CategoryForm
from tests.libs.common.refdata.factories import (
    issues_of,
    line_with,
    make_categories,
    make_client,
    make_open311,
    make_open311_service,
    make_service_item,
    make_service_items,
    only_issue,
    write_config,
)

SERVICE = "service.civil_affairs"


def make_service_categories() -> str:
    """city.garbage (an incident) and service.civil_affairs (a proxy service)."""
    return make_categories("city.garbage", SERVICE, forms={SERVICE: "service"})


def in_file(config_dir: Path, name: str) -> str:
    return str(config_dir / name)


def test_the_form_defaults_to_incident(tmp_path: Path) -> None:
    data = load_reference_data(write_config(tmp_path, categories=make_service_categories()))

    assert data.categories["city.garbage"].form is CategoryForm.INCIDENT
    assert data.categories[SERVICE].form is CategoryForm.SERVICE


def test_an_unknown_form_is_refused(tmp_path: Path) -> None:
    categories = make_categories("city.garbage", forms={"city.garbage": "report"})

    issue = only_issue(write_config(tmp_path, categories=categories))

    assert issue.line == line_with(categories, "form: report")
    assert issue.reason == (
        "categories[0].form: Input should be 'incident', 'hazard', 'dispute' or 'service'"
    )


def test_service_items_load_by_code(tmp_path: Path) -> None:
    items = make_service_items(make_service_item())

    data = load_reference_data(
        write_config(tmp_path, categories=make_service_categories(), service_items=items)
    )

    item = data.service_items["minimum_living_allowance"]
    assert (item.category, item.documents, item.time_limit_days) == (
        SERVICE,
        ("居民身份证", "户口簿"),
        30,
    )


def test_a_service_item_needs_a_category_of_form_service(tmp_path: Path) -> None:
    items = make_service_items(make_service_item(category="city.garbage"))

    issue = only_issue(
        write_config(tmp_path, categories=make_service_categories(), service_items=items)
    )

    assert issue == ConfigIssue(
        in_file(tmp_path, "service_items.yaml"),
        line_with(items, "category: city.garbage"),
        "items[0].category: category 'city.garbage' has form incident;"
        " a service item needs a category of form 'service'",
    )


def test_a_service_item_with_an_unknown_category(tmp_path: Path) -> None:
    items = make_service_items(make_service_item(category="service.nothing"))

    issue = only_issue(
        write_config(tmp_path, categories=make_service_categories(), service_items=items)
    )

    assert (issue.line, issue.reason) == (
        line_with(items, "service.nothing"),
        "items[0].category: unknown category 'service.nothing'",
    )


def test_a_service_item_lists_at_least_one_document(tmp_path: Path) -> None:
    items = make_service_items(make_service_item(documents="[]"))

    issue = only_issue(
        write_config(tmp_path, categories=make_service_categories(), service_items=items)
    )

    assert (issue.line, issue.reason) == (
        line_with(items, "documents: []"),
        "items[0].documents: must list at least one entry",
    )


def test_service_item_codes_and_documents_are_unique(tmp_path: Path) -> None:
    items = make_service_items(
        make_service_item(), make_service_item(documents="[居民身份证, 居民身份证]")
    )

    issues = issues_of(
        write_config(tmp_path, categories=make_service_categories(), service_items=items)
    )

    second = line_with(items, "code:", 2)
    assert [(issue.line, issue.reason) for issue in issues] == [
        (second, "items[1].code: duplicate code 'minimum_living_allowance' (first at line 2)"),
        (
            second + 3,
            f"items[1].documents[1]: duplicate document '居民身份证' (first at line {second + 3})",
        ),
    ]


def test_open311_clients_and_services_load(tmp_path: Path) -> None:
    open311 = make_open311([make_client()], [make_open311_service()])

    data = load_reference_data(write_config(tmp_path, open311=open311)).open311

    assert data.clients["resident-app"].key_env == "GRIDFLOW_OPEN311_KEY_RESIDENT_APP"
    assert [(s.category, s.group, s.keywords) for s in data.services] == [
        ("city.garbage", "市容环境", ("垃圾", "卫生"))
    ]


def test_an_open311_service_with_an_unknown_category(tmp_path: Path) -> None:
    open311 = make_open311(services=[make_open311_service("city.nothing")])

    issue = only_issue(write_config(tmp_path, open311=open311))

    assert issue == ConfigIssue(
        in_file(tmp_path, "open311.yaml"),
        line_with(open311, "city.nothing"),
        "services[0].category: unknown category 'city.nothing'",
    )


def test_open311_does_not_offer_proxy_services_or_a_category_twice(tmp_path: Path) -> None:
    services = [make_open311_service(SERVICE), make_open311_service(), make_open311_service()]
    open311 = make_open311(services=services)

    issues = issues_of(
        write_config(tmp_path, categories=make_service_categories(), open311=open311)
    )

    assert [(issue.line, issue.reason) for issue in issues] == [
        (
            line_with(open311, SERVICE),
            f"services[0].category: category '{SERVICE}' has form service;"
            " proxy services are not offered through Open311",
        ),
        (
            line_with(open311, "city.garbage", 2),
            "services[2].category: duplicate category 'city.garbage'"
            f" (first at line {line_with(open311, 'city.garbage')})",
        ),
    ]


def test_duplicate_client_ids_and_key_names(tmp_path: Path) -> None:
    open311 = make_open311([make_client(), make_client()])

    issues = issues_of(write_config(tmp_path, open311=open311))

    assert [(issue.file, issue.line, issue.reason) for issue in issues] == [
        (
            in_file(tmp_path, "open311.yaml"),
            line_with(open311, "id: resident-app", 2),
            "clients[1].id: duplicate client id 'resident-app' (first at line 2)",
        ),
        (
            in_file(tmp_path, "open311.yaml"),
            line_with(open311, "key_env:", 2),
            "clients[1].key_env: duplicate key_env 'GRIDFLOW_OPEN311_KEY_RESIDENT_APP'"
            " (first at line 4)",
        ),
    ]


def test_an_inline_api_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    open311 = make_open311([make_client(key_env="o311_live_9fQwZr2LpX")])

    issue = only_issue(write_config(tmp_path, open311=open311))

    assert issue.file == in_file(tmp_path, "open311.yaml")
    assert issue.line == line_with(open311, "key_env:")
    assert issue.reason == (
        "clients[0].key_env: key_env must be the NAME of an environment variable matching"
        " ^GRIDFLOW_[A-Z0-9_]+$, never the key itself"
    )
    assert "o311_live" not in issue.reason


def test_a_key_field_is_refused_as_unknown(tmp_path: Path) -> None:
    open311 = make_open311([make_client() + "\n    key: o311_live_9fQwZr2LpX"])

    issue = only_issue(write_config(tmp_path, open311=open311))

    assert (issue.line, issue.reason) == (
        line_with(open311, "key:"),
        "clients[0].key: unknown field",
    )
