"""The workbench end to end: real Ray Serve on the local cluster, its HTTP API, and a person's flows in headless
Chromium (Debian's package, driven by Playwright): label three tasks with the keyboard, hit the session cap,
resolve a dispute, read the dashboards and a guideline diff — blind throughout. Screenshots of every page go
to $RLHF_RAY_TEST_ARTIFACTS/workbench (default runs/test-artifacts/workbench)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("RLHF_RAY_TEST_ARTIFACTS", ROOT / "runs" / "test-artifacts")) / "workbench"
KEY_HEX = "7a" * 32
TOKENS = {"annotators": {"alice": "alice-token-9f8e7d6c5b4a", "api": "api-token-0a1b2c3d4e5f6a7b",
                         "bob": "bob-token-5566778899aabbcc", "carol": "carol-token-ddeeff001122"},
          "reviewers": {"rita": "rita-token-1122334455667788"}}
SECRETS = ("alice", "bob", "carol", "rita", *TOKENS["annotators"].values(), *TOKENS["reviewers"].values())
VARIANTS = ("policy-2025.12", "policy-2026.01")
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def workbench(serve_instance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from jobs.workbench import WorkbenchConfig, deploy, stop
    from rlhf_ray.config import load_config
    from rlhf_ray.governance import Pseudonymizer
    from rlhf_ray.workbench.demo import write_demo_inputs

    root = tmp_path_factory.mktemp("workbench-e2e")
    (root / "key.hex").write_text(KEY_HEX)
    (root / "tokens.json").write_text(json.dumps(TOKENS))
    demo = write_demo_inputs(root / "inputs", Pseudonymizer(bytes.fromhex(KEY_HEX)), num_prompts=80,
                             rows={"pairwise": 300, "ranking": 80, "rating": 160}, active_budget=20)
    overrides = {
        "curated": demo.curated, "dataset": demo.dataset, "gold": demo.gold, "output_dir": str(root / "feedback"),
        "guidelines_dir": str(ROOT / "guidelines"), "pseudonyms.key_file": str(root / "key.hex"),
        "pseudonyms.key_env": "RLHF_RAY_WORKBENCH_E2E_UNSET", "auth.tokens_file": str(root / "tokens.json"),
        "auth.tokens_env": "RLHF_RAY_WORKBENCH_E2E_UNSET", "wandb.mode": "disabled",
        "queue.adjudication": 4, "queue.active_learning": 8, "queue.rubric": 1, "queue.correction": 1,
        "queue.gold": 2, "queue.sla_hours": "{adjudication: 96, default: 48}",
        "session.max_tasks": 3, "session.rotate_after": 1, "shards.flush_every": 1,
        "serve.port": serve_instance, "serve.app_name": "workbench-e2e", "serve.route_prefix": "/workbench",
        "serve.num_cpus": 0.1,
    }
    config = load_config(WorkbenchConfig, None, [f"{k}={v}" for k, v in overrides.items()])
    url, handle = deploy(config)
    yield {"url": url, "out": root / "feedback", "config": config, "handle": handle}
    stop(config, handle)


@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _page(browser: Any, url: str, token: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    page.fill("#token", token)
    page.press("#token", "Enter")
    return page


def _assert_blind(page: Any) -> None:
    """Blind mode: no model/variant name, and no raw name or token, anywhere in the page's HTML or text."""
    content = page.content() + page.inner_text("body")
    assert not [name for name in VARIANTS if name in content], "a variant name is on the page"
    assert not [secret for secret in SECRETS if secret in content], "a raw name or a token is on the page"


def _shot(page: Any, name: str) -> str:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return str(path)


def _shard_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted((out / "shards").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def _auth(role: str, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role][name]}"}


# -- the API -----------------------------------------------------------------------------------------------------


def test_api_answers_bad_input_with_4xx_naming_the_field(workbench: dict[str, Any]) -> None:
    url, api = workbench["url"], _auth("annotators", "api")
    assert requests.get(f"{url}/api/health", timeout=30).json()["ok"] is True
    assert requests.get(f"{url}/api/tasks/next", timeout=30).status_code == 401
    bad_token = requests.get(f"{url}/api/tasks/next", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad_token.status_code == 401 and bad_token.json()["error"]["field"] == "authorization"
    assert requests.get(f"{url}/api/tasks/next", headers=_auth("reviewers", "rita"), timeout=30).status_code == 403
    assert requests.get(f"{url}/api/dashboard", headers=api, timeout=30).status_code == 403
    broken = requests.post(f"{url}/api/labels", data=b"{not json", headers=api, timeout=30)
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    listed = requests.post(f"{url}/api/labels", json=[1, 2], headers=api, timeout=30)
    assert listed.status_code == 400
    unknown = requests.post(f"{url}/api/labels", json={"assignment_id": "x", "choice": "a"}, headers=api, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "assignment_id"
    assert requests.post(f"{url}/api/session", headers=api, timeout=30).json()["session"]["state"] == "active"
    handed = requests.get(f"{url}/api/tasks/next", headers=api, timeout=30).json()
    wrong = {"assignment_id": handed["assignment_id"], "choice": "left", "ranking": "best", "scores": [],
             "edited_response": "", "rationale": "x"}
    rejected = requests.post(f"{url}/api/labels", json=wrong, headers=api, timeout=30)
    assert rejected.status_code == 422
    assert rejected.json()["error"]["field"] in ("choice", "ranking", "scores", "edited_response")
    assert requests.get(f"{url}/api/disputes/d-nope", headers=api, timeout=30).status_code == 404
    status = requests.get(f"{url}/api/disputes?status=maybe", headers=api, timeout=30)
    assert status.status_code == 422 and status.json()["error"]["field"] == "status"
    missing = requests.get(f"{url}/api/guidelines/preference?version=gl-9", headers=api, timeout=30)
    assert missing.status_code == 404 and "gl-9" in missing.json()["error"]["message"]
    assert requests.get(f"{url}/nope", timeout=30).status_code == 404
    assert requests.post(f"{url}/api/disputes/d-x/shout", json={}, headers=api, timeout=30).status_code == 404
    page = requests.get(f"{url}/label", timeout=30)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]


# -- a person in the browser -------------------------------------------------------------------------------------


def _label_with_keyboard(page: Any, task_type: str, number: int) -> None:
    keyboard = page.keyboard
    if task_type == "pairwise":
        keyboard.press("b")
    elif task_type == "ranking":
        for letter in "dcba"[-len(page.query_selector_all("#task-body .response")):]:
            keyboard.press(letter)
    elif task_type == "rubric":
        for score in "4352":
            keyboard.press(score)
    else:
        keyboard.press("e")
        keyboard.press("Control+End")
        keyboard.type(" Contact support if the code does not arrive.")
    keyboard.press("r")
    keyboard.type(f"task {number}: the chosen answer covers the required steps")
    keyboard.press("Control+Enter" if task_type == "correction" else "Enter")


def test_annotator_labels_three_tasks_with_the_keyboard_until_the_session_cap(workbench: dict[str, Any],
                                                                             browser: Any) -> None:
    from rlhf_ray.contracts.validation import validate_row
    from rlhf_ray.dataplane.records import ACCEPTED, FeedbackProcessor, read_shard
    from rlhf_ray.governance import PiiMasker, Pseudonymizer

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(workbench["url"] + "/")
    _shot(page, "01-signin")
    page.close()
    page = _page(browser, workbench["url"], TOKENS["annotators"]["alice"])
    types = []
    for number in range(1, 4):
        page.wait_for_selector(f"#session-info:has-text('task {number} of this session')")
        task_type = page.get_attribute("#task", "data-task-type")
        types.append(task_type)
        _assert_blind(page)
        _shot(page, f"02-label-{number}-{task_type}")
        _label_with_keyboard(page, task_type, number)
    message = page.wait_for_selector("#session-message")
    assert "3 tasks (cap 3)" in message.inner_text()
    _shot(page, "03-session-over")
    page.close()
    assert len(set(types)) >= 2, types  # rotation: not the same task type three times

    rows = [r for r in _shard_rows(workbench["out"]) if "task " in (r.get("rationale") or "")
            or r["signal_type"] == "correction"]
    assert len(rows) == 3, rows
    assert {r["signal_type"] for r in rows} == {{"rubric": "rating"}.get(t, t) for t in types}
    for row in rows:
        assert validate_row(row) is None
        assert row["actor_id"].startswith("ann_") and row["guideline_version"]
        assert not [s for s in SECRETS if s in json.dumps(row)]
    processor = FeedbackProcessor(PiiMasker(), Pseudonymizer(bytes.fromhex(KEY_HEX)), frozenset({"eu", "us", "apac"}),
                                  datetime.now(UTC))
    for path in (workbench["out"] / "shards").glob("*.jsonl"):
        assert all(r["status"] == ACCEPTED for r in (processor.process(raw) for raw in read_shard(str(path),
                                                                                                 path.read_bytes())))


def test_reviewer_resolves_a_dispute_in_the_browser(workbench: dict[str, Any], browser: Any) -> None:
    page = _page(browser, workbench["url"], TOKENS["reviewers"]["rita"])
    page.wait_for_selector(".dispute-row")
    _assert_blind(page)
    _shot(page, "04-review")
    page.keyboard.press("Enter")  # the first dispute row has the focus
    page.wait_for_selector("#thread .entry")
    task_type = page.get_attribute("#dispute", "data-task-type")
    responses = len(page.query_selector_all("#resolve-body .response"))
    assert len(page.query_selector_all("#thread .entry.label")) >= 2
    _assert_blind(page)
    _shot(page, "05-dispute-thread")
    if task_type == "pairwise":
        page.keyboard.press("a")
    else:
        for letter in "abcdefgh"[:responses]:
            page.keyboard.press(letter)
    page.keyboard.press("n")
    page.keyboard.type("A gives the refusal plus the legitimate path; see gl-1.2")
    page.keyboard.press("Enter")
    page.wait_for_selector("#thread .entry.resolution")
    _shot(page, "06-dispute-resolved")
    page.close()
    resolved = (workbench["out"] / "adjudication" / "resolved.jsonl").read_text().splitlines()
    assert len(resolved) == 1 and json.loads(resolved[0])["answer"] in ("a", list(range(responses)))
    high = [r for r in _shard_rows(workbench["out"]) if r["confidence"] == 1.0]
    assert len(high) == 1 and "legitimate path" in high[0]["rationale"]


def _inject(url: str, name: str) -> int:
    """Programmatic labeling through the JSON API, as a script would: sign in, next, submit until the cap."""
    from rlhf_ray.workbench.demo import scripted_answer

    headers, labeled = _auth("annotators", name), 0
    requests.post(f"{url}/api/session", headers=headers, timeout=30).raise_for_status()
    while (handed := requests.get(f"{url}/api/tasks/next", headers=headers, timeout=30).json())["state"] == "task":
        body = {"assignment_id": handed["assignment_id"], **scripted_answer(handed["task"])}
        assert requests.post(f"{url}/api/labels", json=body, headers=headers, timeout=30).status_code == 200
        labeled += 1
    return labeled


def test_dashboards_and_guideline_diff_pages(workbench: dict[str, Any], browser: Any) -> None:
    assert [_inject(workbench["url"], name) for name in ("bob", "carol")] == [3, 3]  # each up to the session cap
    page = _page(browser, workbench["url"], TOKENS["reviewers"]["rita"])
    page.wait_for_selector(".dispute-row")
    page.goto(workbench["url"] + "/dashboard")
    page.wait_for_selector("#dashboard #health")
    assert len(page.query_selector_all("#dashboard svg.chart")) >= 4
    text = page.inner_text("#dashboard")
    assert "SLA" in text and "Agreement per guideline version" in text and "gl-1.1" in text
    assert len(page.query_selector_all("#health tbody tr")) >= 3  # alice, bob, carol (pseudonymous)
    _assert_blind(page)
    _shot(page, "07-dashboard")
    page.goto(workbench["url"] + "/guidelines?family=preference")
    page.wait_for_selector("#diff .add")
    assert "+## Harmful requests" in page.inner_text("#diff")
    _assert_blind(page)
    _shot(page, "08-guidelines-diff")
    page.close()


def _off_loop(call: Any) -> Any:
    """Playwright's sync API keeps an asyncio loop on this thread; Serve's sync calls refuse to run under one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def test_a_restart_keeps_every_label_once(workbench: dict[str, Any]) -> None:
    from jobs.workbench import deploy

    before = _off_loop(lambda: workbench["handle"].summary.remote().result())
    rows_before = _shard_rows(workbench["out"])
    url, workbench["handle"] = _off_loop(lambda: deploy(workbench["config"]))  # a new replica replays the log
    after = _off_loop(lambda: workbench["handle"].summary.remote().result())
    assert before["labels"] >= 3 and before["disputes_resolved"] == 1
    assert (after["labels"], after["disputes_resolved"], after["events"]) == (
        before["labels"], before["disputes_resolved"], before["events"])
    assert _shard_rows(workbench["out"]) == rows_before
    assert requests.get(f"{url}/api/health", timeout=30).status_code == 200
