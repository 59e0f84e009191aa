"""Feedback that cannot be gamed (issue 23, item 4) and clean shutdown of serving jobs (item 5).

Pure tests of the tokens, identity, rate limit, counting and ingest dedupe; one end-to-end check through a real
canary (echo policies: no model) on Ray Serve; one `rlhf-ray serve`-style job stopped by SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests

from rlhf_ray.dataplane.dedup import feedback_key, resolve_feedback_repeats
from rlhf_ray.evaluation.sequential import CountedOutcomes
from rlhf_ray.governance import PiiMasker, Pseudonymizer, generate_key_file
from rlhf_ray.roles.learner import free_port
from rlhf_ray.serving.admin import AuthError, identify, parse_api_keys
from rlhf_ray.serving.feedback import ServedResponse, feedback_row
from rlhf_ray.serving.schemas import FEEDBACK_ADAPTER, parse_model
from rlhf_ray.serving.tokens import (
    SeenKeys,
    UserRateLimiter,
    derive_key,
    feedback_token,
    issue_user_id,
    issued_user,
    token_matches,
)

KEY = derive_key(b"k" * 32, "feedback-token")
ADMIN = "admin-token-" + "a" * 24
ALICE_KEY, BOB_KEY = "alice-key-" + "1" * 20, "bob-key-" + "2" * 20
MODEL = "rlhf-policy"


# ---------------------------------------------------------------------------------------------- pure parts


def test_a_feedback_token_names_one_answer_one_user_one_variant() -> None:
    token = feedback_token(KEY, "r1", "usr_a", "canary")
    assert token_matches(KEY, token, "r1", "usr_a", "canary")
    for response, user, variant in (("r2", "usr_a", "canary"), ("r1", "usr_b", "canary"),
                                    ("r1", "usr_a", "incumbent")):
        assert not token_matches(KEY, token, response, user, variant)
    assert not token_matches(derive_key(b"k" * 32, "other"), token, "r1", "usr_a", "canary")
    assert not token_matches(KEY, None, "r1", "usr_a", "canary")
    assert not token_matches(KEY, "ft1." + "0" * 32, "r1", "usr_a", "canary")  # a forged one
    issued = issue_user_id(KEY)
    assert issued_user(KEY, issued) == issued
    assert issued_user(KEY, issued[:-1] + ("0" if issued[-1] != "0" else "1")) is None  # tampered
    assert issued_user(KEY, "anon.0123456789abcdef.0123456789abcdef") is None  # made up


def test_identity_comes_from_keys_or_the_server_never_from_the_client() -> None:
    names = Pseudonymizer(b"p" * 32)
    keys = parse_api_keys({"alice": ALICE_KEY, "bob": BOB_KEY}, "test", names)
    assert ALICE_KEY not in json.dumps(keys) and "alice" not in json.dumps(keys)
    alice = identify(f"Bearer {ALICE_KEY}", "bob", None, keys, ADMIN, names, KEY)
    assert (alice.user, alice.authenticated, alice.admin) == (names.pseudonym("alice"), True, False)  # 'bob' ignored
    with pytest.raises(AuthError, match="unknown API key"):
        identify("Bearer not-a-key-000000000000", None, None, keys, ADMIN, names, KEY)
    front = identify(f"Bearer {ADMIN}", "carol", None, keys, ADMIN, names, KEY)
    assert (front.user, front.authenticated, front.admin) == (names.pseudonym("carol"), True, True)
    # no keys configured: the openai client's placeholder key is ignored, the user is server-issued
    anonymous = identify("Bearer unused", "alice", None, {}, None, names, KEY)
    assert not anonymous.authenticated and anonymous.issued and anonymous.user != names.pseudonym("alice")
    again = identify(None, None, anonymous.issued, {}, None, names, KEY)
    assert again.user == anonymous.user and again.issued is None  # sent back: the same user, no new id
    with pytest.raises(ValueError, match="reuses another user's key"):
        parse_api_keys({"a": ALICE_KEY, "b": ALICE_KEY}, "test", names)


def test_rate_limit_dedupe_and_counting_rules() -> None:
    limiter = UserRateLimiter(rate=1.0, burst=3)
    assert [limiter.allow("u", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("v", 0.0)  # per user
    assert limiter.allow("u", 1.0) and not limiter.allow("u", 1.0)  # one more per second
    seen = SeenKeys(capacity=2)
    assert seen.add(("r", "u", "thumbs")) and not seen.add(("r", "u", "thumbs"))
    counted = CountedOutcomes(per_user_cap=2)
    assert not counted.admit("r0", "u", "canary", authenticated=False)
    assert counted.admit("r1", "u", "canary", True) and not counted.admit("r1", "w", "canary", True)
    assert counted.admit("r2", "u", "canary", True) and not counted.admit("r3", "u", "canary", True)
    assert counted.admit("r4", "u", "incumbent", True)  # the cap is per arm
    assert counted.refused == {"unauthenticated": 1, "repeat_response": 1, "user_cap": 1}


def test_unauthenticated_feedback_is_marked_and_ingest_drops_repeats_by_response_user_kind() -> None:
    now = datetime.now(UTC)
    served = ServedResponse("r1", "canary", "policy-c", "p-1", "hi ?", "hello .", "id_0123456789abcdef", "us")
    thumbs = parse_model(FEEDBACK_ADAPTER, {"kind": "thumbs", "response_id": "r1", "value": 1})
    row, _ = feedback_row(thumbs, served, signal_id="s1", now=now, actor_id=served.actor_id, masker=PiiMasker(),
                          authenticated=False)
    assert row["segment"] == "unauthenticated"
    likert = {**row, "signal_id": "s3", "scale": "likert5"}
    keys = [feedback_key(r) for r in (row, {**row, "signal_id": "s2"}, likert, {**row, "source": "annotator"})]
    assert keys[0] == keys[1] != keys[2] and keys[3] is None
    table = pa.table({"feedback_key": keys, "event_time": [2, 1, 3, 4], "source_file": ["a", "b", "c", "d"],
                      "row_number": [0, 0, 0, 0]})
    changed = resolve_feedback_repeats(table)
    assert changed.column("source_file").to_pylist() == ["a"]  # the later of the two thumbs
    assert changed.column("reason").to_pylist() == ["duplicate_feedback"]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.ray
def test_feedback_through_the_router_is_refused_unless_it_is_the_users_own_once(serve_instance, tmp_path) -> None:
    from ray import serve

    from actors.serve_app import deploy_canary
    from rlhf_ray.serving.config import CanaryAppArgs

    generate_key_file(tmp_path / "key")
    (tmp_path / "admin.token").write_text(ADMIN)
    (tmp_path / "keys.yaml").write_text(json.dumps({"alice": ALICE_KEY, "bob": BOB_KEY}))
    echo = {"backend": "echo", "num_cpus": 0.05}
    args = CanaryAppArgs.model_validate({
        "deployment_id": "feedback-test", "state_dir": str(tmp_path / "state"), "incumbent": echo, "canary": echo,
        "pseudonyms": {"key_file": str(tmp_path / "key")}, "admin": {"token_file": str(tmp_path / "admin.token")},
        "auth": {"keys_file": str(tmp_path / "keys.yaml")}, "router": {"initial_weight": 0.5, "num_cpus": 0.05,
                                                                       "monitor_num_cpus": 0.05},
        "feedback": {"flush_interval_s": 0.1, "burst": 5, "rate_per_s": 0.01}})
    url = deploy_canary(args, name="feedback-test", route_prefix="/fb", port=serve_instance)
    try:
        def chat(key: str | None, **extra: Any) -> requests.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            headers.update(extra.pop("headers", {}))
            return requests.post(f"{url}/v1/chat/completions", headers=headers, timeout=60, json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi ?"}], "max_tokens": 4, **extra})

        def feedback(key: str | None, body: dict[str, Any]) -> requests.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return requests.post(f"{url}/v1/feedback", json=body, headers=headers, timeout=60)

        answer = chat(ALICE_KEY)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        token = answer.headers["x-rlhf-feedback-token"]
        assert body["feedback_token"] == token and "variant" not in body and "policy_id" not in body
        assert "x-rlhf-variant" not in answer.headers
        # the arm follows the key's user: whatever user the client claims, alice stays where she is
        admin_view = [chat(ADMIN, user="alice").json()["variant"]]  # the admin, vouching for alice, sees it
        arms = {chat(ADMIN, headers={"x-user-id": "alice"}).headers["x-rlhf-variant"]}
        claimed = [chat(ALICE_KEY, user=f"claimed-{i}", headers={"x-user-id": f"x-{i}"}) for i in range(3)]
        assert all("variant" not in r.json() for r in claimed)
        assert len(set(admin_view) | arms) == 1

        thumbs = {"kind": "thumbs", "response_id": body["id"], "value": 1}
        bob_answer = chat(BOB_KEY).json()
        refused = {
            "no token": feedback(ALICE_KEY, thumbs),
            "forged": feedback(ALICE_KEY, {**thumbs, "feedback_token": "ft1." + "0" * 32}),
            "foreign": feedback(BOB_KEY, {**thumbs, "feedback_token": token}),  # bob presents alice's token
            "other answer": feedback(ALICE_KEY, {**thumbs, "response_id": bob_answer["id"], "feedback_token": token}),
            "unknown id": feedback(ALICE_KEY, {**thumbs, "response_id": "chatcmpl-nope", "feedback_token": token}),
            "no key": feedback(None, {**thumbs, "feedback_token": token}),
        }
        assert {k: r.status_code for k, r in refused.items()} == {
            "no token": 401, "forged": 403, "foreign": 403, "other answer": 403, "unknown id": 404, "no key": 401}
        first = feedback(ALICE_KEY, {**thumbs, "feedback_token": token})
        assert first.status_code == 202 and first.json()["authenticated"] is True, first.text
        assert feedback(ALICE_KEY, {**thumbs, "feedback_token": token}).status_code == 409
        # alice's bucket (burst 5, each attempt counts, next token in 100 s) is spent: even a good rating is refused
        likert = feedback(ALICE_KEY, {"kind": "likert", "value": 5, "response_id": body["id"],
                                      "feedback_token": token})
        assert likert.status_code == 429, likert.text

        # no API key: chat works, the feedback is recorded but marked and never counted
        anonymous = chat(None)
        assert anonymous.headers["x-rlhf-user"].startswith("anon.")
        unauth = feedback(None, {**thumbs, "response_id": anonymous.json()["id"],
                                 "feedback_token": anonymous.json()["feedback_token"]})
        assert unauth.status_code == 202 and unauth.json()["authenticated"] is False
        status = requests.get(f"{url}/v1/canary", timeout=30).json()
        assert status["sequential"]["not_counted"] == {"unauthenticated": 1}
        assert sum(v["judged"] for v in status["variants"].values()) == 1  # alice's one thumb

        # exactly the two accepted ratings reached a shard
        deadline, rows = time.monotonic() + 15, []
        while time.monotonic() < deadline and len(rows) < 2:
            requests.get(f"{url}/v1/canary", timeout=30)
            time.sleep(0.3)
            rows = [json.loads(line) for p in Path(args.feedback_dir).glob("[!.]*.jsonl")
                    for line in p.read_text().splitlines()]
        assert sorted(r.get("segment", "-") for r in rows) == ["-", "unauthenticated"], rows
        assert {r["signal_id"] for r in rows} == {first.json()["id"], unauth.json()["id"]}
    finally:
        serve.delete("feedback-test")


# ---------------------------------------------------------------------------------------------- clean shutdown


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_sigint_stops_a_canary_job_and_every_process_of_its_own_ray(tmp_path: Path) -> None:
    """`rlhf-ray canary` on live traffic (echo policies) started its own Ray: Ctrl-C deletes the application and
    shuts that Ray down — GCS, raylet, Serve controller, proxy and replicas — and the job exits."""
    import psutil

    generate_key_file(tmp_path / "key")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "jobs.cli", "canary", "--out", str(tmp_path / "out"),
               "incumbent.backend=echo", "canary.backend=echo", "simulation.enabled=false", "wandb.mode=disabled",
               f"pseudonyms.key_file={tmp_path / 'key'}", f"serve.port={free_port()}", "ray.num_cpus=2",
               "incumbent.num_cpus=0.05", "canary.num_cpus=0.05", "router.num_cpus=0.05"]
    job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[1])
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = job.stderr.readline()
            lines.append(line)
            if "[canary] serving on" in line or (not line and job.poll() is not None):
                break
        assert job.poll() is None, "".join(lines)[-3000:]
        family = _descendants(job.pid)
        names = " ".join(p.name() for p in family)
        assert "gcs_server" in names and "raylet" in names, names
        job.send_signal(signal.SIGINT)
        job.communicate(timeout=60)
        _, alive = psutil.wait_procs(family, timeout=20)
        assert alive == [], [(p.pid, p.name()) for p in alive]
    finally:
        if job.poll() is None:
            for process in _descendants(job.pid):
                process.kill()
            job.kill()
