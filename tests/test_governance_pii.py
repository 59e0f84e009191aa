"""Governance at capture: PII masking (planted values never survive) and keyed pseudonyms."""

from __future__ import annotations

import os
import pickle
import stat
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ray.governance import (
    PII_KINDS,
    PiiMasker,
    Pseudonymizer,
    generate_key_file,
    load_key,
    luhn_valid,
    placeholder,
)
from rlhf_ray.sim.pii import PII_GENERATORS, luhn_check_digit, plant_pii

MASKER = PiiMasker()
KEY = bytes.fromhex("0f" * 32)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _planted(kind: str, count: int, seed: int) -> list[str]:
    generate, _ = PII_GENERATORS[kind]
    rng = np.random.default_rng(seed)
    return [generate(rng) for _ in range(count)]


# --- every kind, in context ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PII_GENERATORS))
def test_every_planted_value_is_masked_with_its_placeholder(kind: str) -> None:
    _, sentence = PII_GENERATORS[kind]
    for value in _planted(kind, 300, seed=sorted(PII_GENERATORS).index(kind)):
        masked, counts = MASKER.mask(sentence.format(value=value))
        assert value not in masked
        assert masked == sentence.format(value=placeholder(kind)), value
        assert counts == Counter({kind: 1}), value


def test_plant_pii_on_simulated_text_never_survives() -> None:
    rng = np.random.default_rng(7)
    base = "how do i reset my email password ? open settings in the email app ."
    for _ in range(500):
        text, kind, value = plant_pii(base, rng)
        masked, counts = MASKER.mask(text)
        assert value not in masked
        assert counts[kind] == 1
        assert masked.startswith(base)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call 415-555-0134 , 415.555.0134 or 415 555 0134", "call <PHONE> , <PHONE> or <PHONE>"),
        ("toll free 1-800-555-0199 .", "toll free <PHONE> ."),
        ("ring +1 (415) 555-0134 or +33 1 23 45 67 89 or +14155550134", "ring <PHONE> or <PHONE> or <PHONE>"),
        ("ssn 123 45 6789 .", "ssn <NATIONAL_ID> ."),
        ("compressed fe80::1 , ::1 and 2001:db8::8a2e:370:7334 .", "compressed <IPV6> , <IPV6> and <IPV6> ."),
        ("mapped ::ffff:192.168.0.1 .", "mapped <IPV6> ."),
        ("upper case 2001:DB8:0:0:8:800:200C:417A .", "upper case <IPV6> ."),
        ("edges 0.0.0.0 and 255.255.255.255 .", "edges <IPV4> and <IPV4> ."),
        ("with port 10.1.2.3:8080 and cidr 10.0.0.0/8", "with port <IPV4>:8080 and cidr <IPV4>/8"),
        ("amex 3782 822463 10005 and 13 digits 4222222222222 .", "amex <CARD> and 13 digits <CARD> ."),
        ("mail \"o'neil+tag@sub.example.co.uk\" or josé.müller@exemple.fr", "mail \"<EMAIL>\" or <EMAIL>"),
    ],
)
def test_other_common_formats(text: str, expected: str) -> None:
    assert MASKER.mask(text)[0] == expected


def test_counts_add_up_per_kind() -> None:
    text = ("mail a.b@example.com or c@mail.test , card 4111-1111-1111-1111 , ip 10.0.0.1 , "
            "phone (415) 555-0134 , ssn 123-45-6789 , addr 2001:db8:1:2:3:4:5:6")
    masked, counts = MASKER.mask(text)
    assert counts == Counter(email=2, card=1, ipv4=1, phone=1, national_id=1, ipv6=1)
    residue = masked.replace("<IPV4>", "").replace("<IPV6>", "")
    assert not any(c.isdigit() for c in residue) and "@" not in residue


# --- cards and Luhn --------------------------------------------------------------------------------


def test_luhn_valid_known_values() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("")
    assert not luhn_valid("4111 1111 1111 1111")
    assert not luhn_valid("٤١١١")  # non-ASCII digits are not card digits


def test_luhn_agrees_with_the_simulators_check_digit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        payload = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(12, 19))))
        digit = luhn_check_digit(payload)
        assert luhn_valid(payload + digit)
        assert not luhn_valid(payload + str((int(digit) + 1) % 10))


@pytest.mark.parametrize("separator", [" ", "-", ""])
def test_luhn_invalid_16_digit_numbers_are_not_cards(separator: str) -> None:
    for card in _planted("card", 200, seed=11):
        digits = card.replace(" ", "").replace("-", "")
        broken = digits[:-1] + str((int(digits[-1]) + 3) % 10)
        assert not luhn_valid(broken)
        number = separator.join(broken[i : i + 4] for i in range(0, 16, 4))
        text = f"your order number is {number} ."
        masked, counts = MASKER.mask(text)
        assert counts["card"] == 0
        assert masked == text



def test_card_inside_a_longer_digit_run_is_still_found() -> None:
    assert MASKER.mask("2 4111 1111 1111 1111 7")[0] == "2 <CARD> 7"
    assert MASKER.mask("items 12 34 4111-1111-1111-1111")[0] == "items 12 34 <CARD>"


# --- false positives -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "six to ten minutes",
        "five days",
        "it takes about 3 to 5 business days .",
        "guideline gl-1.1 and gl-1.0",
        "version 1.2.3 of the app , build v1.2.3.4",
        "2026-01-05T00:00:00.000Z",
        "created at 2026-01-05 12:30:45 utc , 10:00 to 18:30",
        "bfd07f7c-3798-4445-6a60-0a7501fa448e",
        "12345678-1234-1234-1234-1234abcd5678",
        "order 1234567812345678 and ref 2024-000123",
        "score 0.4111111111111111 , ratio 3.14159265358979323",
        '{"actor_id":"usr_4111111111111111","x":0.5}',
        "sha 4111111111111111ab9f00e and ann_0123456789012345",
        "c++ std::vector , a::b and a bare :: here",
        "mac 00:1a:2b:3c:4d:5e",
        "ip 256.1.2.3 and 1.2.3.4.5",
        "call me @ noon , email me at home",
        "plus one +1 2 3 and phone 415-555-01345",
        "<EMAIL> <PHONE> <CARD> <IPV4> <IPV6> <NATIONAL_ID>",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert MASKER.mask(text) == (text, Counter())


# --- configuration ---------------------------------------------------------------------------------


def test_custom_pattern_is_masked_with_its_own_placeholder() -> None:
    masker = PiiMasker(custom_patterns={"ticket_id": r"TCK-[0-9]{6}", "employee": r"\bemp[0-9]{4}\b"})
    masked, counts = masker.mask("see TCK-123456 from emp0042 , mail x@example.com")
    assert masked == "see <TICKET_ID> from <EMPLOYEE> , mail <EMAIL>"
    assert counts == Counter(ticket_id=1, employee=1, email=1)


def test_zero_width_custom_pattern_masks_nothing() -> None:
    assert PiiMasker(custom_patterns={"edge": r"\b"}).mask("plain words") == ("plain words", Counter())


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"ticket": "TCK-[0-9"}, "custom_patterns.ticket: invalid regex"),
        ({"email": "x"}, "clashes with the built-in kind"),
        ({"bad name": "x"}, "name 'bad name'"),
        ({"caps": "[A-Z]+"}, "matches the placeholder"),
    ],
)
def test_bad_custom_patterns_fail_at_construction(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiMasker(custom_patterns=patterns)


def test_kinds_can_be_narrowed_and_unknown_kinds_fail() -> None:
    masked, counts = PiiMasker(kinds=frozenset({"email"})).mask("a@example.com (415) 555-0134")
    assert masked == "<EMAIL> (415) 555-0134" and counts == Counter(email=1)
    with pytest.raises(ValueError, match="unknown \\['passport'\\]"):
        PiiMasker(kinds=frozenset({"email", "passport"}))


def test_fast_path_gives_the_same_result_as_running_every_pass() -> None:
    slow = PiiMasker(fast_path=False)
    rng = np.random.default_rng(3)
    planted = [plant_pii("hi", rng)[0] for _ in range(200)]
    texts = ["five days", "reset the password", "meet at 10:30", "gl-1.1", *planted]
    for text in texts:
        assert MASKER.mask(text) == slow.mask(text)


def test_masker_pickles_for_ray_workers() -> None:
    masker = PiiMasker(custom_patterns={"ticket": r"TCK-[0-9]+"})
    clone = pickle.loads(pickle.dumps(masker))
    assert clone == masker
    assert clone.mask("TCK-1 a@example.com") == masker.mask("TCK-1 a@example.com")


def test_mask_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expects str, got int"):
        MASKER.mask(42)  # type: ignore[arg-type]


# --- structured values -----------------------------------------------------------------------------


def test_mask_value_recurses_into_lists_tuples_and_dicts() -> None:
    value = {
        "responses": ["mail a@example.com", "fine", ["nested 10.0.0.1"]],
        "pair": ("call (415) 555-0134", 3),
        "score": 4.5,
        "flag": None,
    }
    masked, counts = MASKER.mask_value(value)
    assert masked == {
        "responses": ["mail <EMAIL>", "fine", ["nested <IPV4>"]],
        "pair": ("call <PHONE>", 3),
        "score": 4.5,
        "flag": None,
    }
    assert counts == Counter(email=1, ipv4=1, phone=1)
    assert value["responses"][0] == "mail a@example.com"  # the input is not modified


@pytest.mark.parametrize("value", [7, 2.5, None, True, b"a@example.com"])
def test_mask_value_leaves_other_types_alone(value: object) -> None:
    assert MASKER.mask_value(value) == (value, Counter())


def test_mask_value_masks_numpy_text_arrays_without_truncation() -> None:
    masked, counts = MASKER.mask_value(np.array(["ssn 123-45-6789", "ok"]))
    assert list(masked) == ["ssn <NATIONAL_ID>", "ok"] and counts == Counter(national_id=1)


def test_mask_fields_masks_a_ranking_row_in_place() -> None:
    row = {
        "signal_type": "ranking",
        "prompt": "my ssn is 123-45-6789 .",
        "responses": ["reply to a@example.com", "call +44 20 1234 5678"],
        "rationale": None,
        "actor_id": "user-000123",
    }
    counts = MASKER.mask_fields(row, ["prompt", "responses", "rationale", "missing"])
    assert row["prompt"] == "my ssn is <NATIONAL_ID> ."
    assert row["responses"] == ["reply to <EMAIL>", "call <PHONE>"]
    assert row["rationale"] is None and row["actor_id"] == "user-000123"
    assert counts == Counter(national_id=1, email=1, phone=1)


# --- properties ------------------------------------------------------------------------------------

PII_ALPHABET = "0123456789 -.:@+()abcdefx_/"
planted_values = st.sampled_from(sorted(PII_GENERATORS)).flatmap(
    lambda kind: st.integers(0, 2**32 - 1).map(lambda seed: _planted(kind, 1, seed)[0])
)


@PROPERTY
@given(st.text())
def test_mask_never_raises_and_is_idempotent_on_any_text(text: str) -> None:
    masked, counts = MASKER.mask(text)
    assert MASKER.mask(masked) == (masked, Counter())
    assert set(counts) <= set(PII_KINDS)


@PROPERTY
@given(st.text(alphabet=PII_ALPHABET, max_size=80))
def test_mask_is_idempotent_on_pii_like_text(text: str) -> None:
    masked, _ = MASKER.mask(text)
    assert MASKER.mask(masked) == (masked, Counter())


@PROPERTY
@given(st.text(), st.text(alphabet=PII_ALPHABET), planted_values, st.data())
def test_a_planted_value_anywhere_in_random_text_is_removed(text: str, noise: str, value: str, data) -> None:
    host = text + noise
    position = data.draw(st.integers(0, len(host)))
    masked, counts = MASKER.mask(f"{host[:position]} {value} {host[position:]}")
    assert value not in masked
    assert sum(counts.values()) >= 1


# --- pseudonyms ------------------------------------------------------------------------------------


def test_pseudonyms_are_deterministic_and_key_sensitive() -> None:
    first, again = Pseudonymizer(KEY), Pseudonymizer(KEY)
    other = Pseudonymizer(bytes.fromhex("a0" * 32))
    ids = [f"user-{i:06d}" for i in range(200)] + [f"annotator-{i:03d}" for i in range(50)]
    names = [first.pseudonym(i) for i in ids]
    assert names == [again.pseudonym(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert not set(names) & {other.pseudonym(i) for i in ids}


def test_pseudonym_prefix_and_shape() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    annotator, user, other = (pseudonymizer.pseudonym(i) for i in ("annotator-003", "user-000123", "p-000001"))
    assert annotator.startswith("ann_") and user.startswith("usr_") and other.startswith("id_")
    for name in (annotator, user, other):
        digest = name.split("_", 1)[1]
        assert len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)
    assert Pseudonymizer(KEY, prefix_by_kind=False).pseudonym("annotator-003").startswith("id_")


@PROPERTY
@given(st.sampled_from(["user", "annotator", "customer", "u"]), st.integers(0, 10**9), st.integers(0, 99),
       st.integers(0, 9999))
def test_no_raw_id_survives_in_a_pseudonym(kind: str, number: int, shard: int, position: int) -> None:
    pseudonymizer = Pseudonymizer(KEY)
    raw_id, suffix = f"{kind}-{number:06d}", f"s{shard}-{position}"
    session = pseudonymizer.pseudonymize_session(f"{raw_id}/{suffix}")
    for output in (pseudonymizer.pseudonym(raw_id), session):
        assert raw_id not in output and f"{kind}-" not in output
    assert suffix not in session


def test_session_pseudonyms_keep_the_actor_join_and_hide_everything() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    session = pseudonymizer.pseudonymize_session("annotator-003/s2-5")
    actor, suffix = session.split("/")
    assert actor == pseudonymizer.pseudonym("annotator-003")
    assert suffix.startswith("ses_") and "s2-5" not in session and "003" not in session.replace(actor, "")
    assert session == pseudonymizer.pseudonymize_session("annotator-003/s2-5")
    assert suffix != pseudonymizer.pseudonymize_session("annotator-004/s2-5").split("/")[1]
    assert pseudonymizer.pseudonymize_session("plain-session").startswith("ses_")


def test_pseudonymizer_hides_its_key_and_pickles() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    assert KEY.hex() not in repr(pseudonymizer) and "0f0f" not in repr(pseudonymizer)
    clone = pickle.loads(pickle.dumps(pseudonymizer))
    assert clone.pseudonym("user-000001") == pseudonymizer.pseudonym("user-000001")
    with pytest.raises(ValueError, match="at least 16"):
        Pseudonymizer(b"short")


# --- keys ------------------------------------------------------------------------------------------


def test_load_key_from_env_hex_or_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", "0f" * 32)
    assert load_key() == KEY
    monkeypatch.setenv("MY_KEY", "a long passphrase, not hex at all")
    assert load_key("MY_KEY") == b"a long passphrase, not hex at all"
    monkeypatch.setenv("MY_KEY", "tiny")
    with pytest.raises(ValueError, match="environment variable MY_KEY is 4 bytes"):
        load_key("MY_KEY")


def test_load_key_from_file_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("RLHF_RAY_PSEUDONYM_KEY", raising=False)
    path = tmp_path / "keys" / "pseudonym.key"
    key = generate_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(key_file=str(path)) == key
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp file left behind
    with pytest.raises(FileExistsError, match="already exists"):
        generate_key_file(path)
    assert load_key(key_file=str(path)) == key
    assert generate_key_file(path, overwrite=True) != key
    monkeypatch.setenv("RLHF_RAY_PSEUDONYM_KEY", "0f" * 32)
    assert load_key(key_file=str(path)) == KEY


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("RLHF_RAY_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match="RLHF_RAY_PSEUDONYM_KEY") as error:
        load_key()
    assert "key_file" in str(error.value) and "no default key" in str(error.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_key(key_file=str(tmp_path / "absent.key"))


def test_pseudonym_section_creates_a_missing_key_once_and_never_replaces_one(tmp_path, monkeypatch) -> None:
    from rlhf_ray.governance import PseudonymSection

    monkeypatch.delenv("RLHF_TEST_KEY", raising=False)
    key_file = tmp_path / "secrets" / "pseudonym.key"
    section = PseudonymSection(key_env="RLHF_TEST_KEY", key_file=str(key_file))
    with pytest.raises(ValueError, match="RLHF_TEST_KEY"):  # no key anywhere: the error names the setting
        section.pseudonymizer()
    assert not section.create_missing_key_file() and not key_file.exists()  # only when asked to
    creating = section.model_copy(update={"create_key_file": True})
    assert creating.create_missing_key_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    written = key_file.read_bytes()
    assert not creating.create_missing_key_file() and key_file.read_bytes() == written  # kept, not replaced
    one = creating.pseudonymizer().pseudonym("user-1")
    assert one == section.pseudonymizer().pseudonym("user-1") != "user-1"  # every job reading it agrees


def test_digest_is_keyed_and_separate_from_pseudonyms() -> None:
    pseudonyms = Pseudonymizer(KEY)
    digest = pseudonyms.digest("user-000123 reach me at a@example.com")
    assert digest.startswith("dig_") and len(digest) == 20
    assert digest == pseudonyms.digest("user-000123 reach me at a@example.com")
    assert digest != Pseudonymizer(b"another key, 16+ bytes").digest("user-000123 reach me at a@example.com")
    assert digest[4:] != pseudonyms.pseudonym("user-000123 reach me at a@example.com")[4:]
    with pytest.raises(TypeError, match="expects a str"):
        pseudonyms.digest(7)  # type: ignore[arg-type]
