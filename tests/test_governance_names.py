"""Person names and postal addresses: context recognizers, the exact fast path, a local NER model, settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf_ray.governance import ADDRESS, PERSON, NerModel, PiiMasker, PiiSection
from rlhf_ray.governance.recognizers import RECOGNIZERS, triggered

MASKER = PiiMasker()
SLOW = PiiMasker(fast_path=False)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # self-introductions
        ("my name is Zorblat Quenby and I need help", "my name is <PERSON> and I need help"),
        ("my name is zorblat quenby i need help", "my name is <PERSON> i need help"),
        ("Hi, I'm Ada Quenby. The answer was wrong.", "Hi, I'm <PERSON>. The answer was wrong."),
        ("This is Zorblat from the billing team.", "This is <PERSON> from the billing team."),
        ("Name: Zorblat Quenby\nissue: refund", "Name: <PERSON>\nissue: refund"),
        ("you can call me Zorblat.", "you can call me <PERSON>."),
        # signatures
        ("the refund never came.\n\nThanks,\nZorblat Quenby", "the refund never came.\n\nThanks,\n<PERSON>"),
        ("wrong again. Best regards, Ada O'Quenby", "wrong again. Best regards, <PERSON>"),
        ("see above\n-- Zorblat", "see above\n-- <PERSON>"),
        ("see above\nZorblat Quenby\n", "see above\n<PERSON>\n"),
        # greetings, honorifics, relations
        ("Hi Zorblat, the link is broken.", "Hi <PERSON>, the link is broken."),
        ("Dear Mr. Quenby:\nplease fix it", "Dear Mr. <PERSON>:\nplease fix it"),
        ("Dr. Zorblat Quenby told me so", "Dr. <PERSON> told me so"),
        ("my colleague Ada van Quenby said so", "my colleague <PERSON> said so"),
        # addresses
        ("my address is 42 Quenby Avenue, Apt 4B, Springfield, IL 62704. thanks",
         "my address is <ADDRESS>. thanks"),
        ("Please ship it to 42 Quenby Ave. Springfield.", "Please ship it to <ADDRESS>."),
        ("ship it to Quenby Avenue please", "ship it to <ADDRESS> please"),
        ("I live on Old Quenby Road", "I live on <ADDRESS>"),
        ("my address is 7 quenby close and it is wrong", "my address is <ADDRESS> and it is wrong"),
        ("send it to Quenbystraße 12, 10115 Berlin", "send it to <ADDRESS>"),
        ("Rue Quenby 5 is the place", "<ADDRESS> is the place"),
        ("mail it to P.O. Box 1234", "mail it to <ADDRESS>"),
    ],
)
def test_names_and_addresses_are_masked_by_context(text: str, expected: str) -> None:
    masked, counts = MASKER.mask(text)
    assert masked == expected
    assert set(counts) <= {PERSON, ADDRESS} and sum(counts.values()) >= 1
    assert SLOW.mask(text) == (masked, counts)  # the cue trigger never changes the result


def test_a_masked_name_is_masked_everywhere_in_the_text() -> None:
    masked, counts = MASKER.mask("my name is Zorblat Quenby. Zorblat wants the Quenby account closed")
    assert masked == "my name is <PERSON>. <PERSON> wants the <PERSON> account closed"
    assert counts == Counter({PERSON: 3})


def test_structured_pii_inside_an_address_keeps_its_own_placeholder() -> None:
    masked, counts = MASKER.mask("my address is 42 Quenby Avenue, call (415) 555-0134 if needed")
    assert masked == "my address is <ADDRESS>, call <PHONE> if needed"
    assert counts == Counter({ADDRESS: 1, "phone": 1})


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, that helps.",
        "Hi there, the answer is wrong.",
        "Hello World!",
        "This is Python code that fails.",
        "I am using Windows 11.",
        "Dear Sir or Madam,",
        "Hello Team, any update?",
        "Best practices for React?",
        "my name is not showing on the invoice",
        "My address book is empty.",
        "I live in a small town.",
        "send it to the printer",
        "the <PERSON> and <ADDRESS> placeholders stay",
        "how do i reset my email password ? open settings in the email app .",
    ],
)
def test_ordinary_text_with_cue_words_is_left_alone(text: str) -> None:
    assert MASKER.mask(text) == (text, Counter())


def test_person_and_address_kinds_can_be_switched_off() -> None:
    text = "my name is Zorblat Quenby, ship it to 42 Quenby Avenue"
    assert PiiMasker(kinds=frozenset({"email"})).mask(text) == (text, Counter())
    masked, counts = PiiMasker(kinds=frozenset({PERSON})).mask(text)
    assert masked == "my name is <PERSON>, ship it to 42 <PERSON> Avenue" and counts == Counter({PERSON: 2})


def test_every_recognizer_has_cues_and_a_pii_group() -> None:
    assert len({r.name for r in RECOGNIZERS}) == len(RECOGNIZERS)
    for recognizer in RECOGNIZERS:
        assert recognizer.phrases or recognizer.cased or recognizer.parts, recognizer.name
        assert "pii" in recognizer.pattern.groupindex, recognizer.name
        assert recognizer.kind in (PERSON, ADDRESS)


def test_trigger_finds_cues_as_whole_words_and_parts() -> None:
    assert triggered("plain prose without any of them") == frozenset()
    assert "greeting" in triggered("HI Ada,") and "signature_last_line" in triggered("a\nb")
    assert "street_address_number_last" in triggered("Quenbystraße 5")
    assert "self_introduction_capitalized" in triggered("I’m here") and "relation" in triggered("my  Friend")
    assert "street_after_place_word" in triggered("on Quenby Way") and triggered("the best way") == {"signature"}
    assert triggered("K\u212athis is") >= {"self_introduction_capitalized"}  # the Kelvin sign is not an ASCII k


NAME_ALPHABET = st.sampled_from(["my name is ", "Hi ", "Thanks,\n", "-- ", "Dr. ", "I'm ", "ship it to ", "42 ",
                                 "Avenue", "Street", "Ada", "Quenby", "van ", "O'", ", ", ".", "\n", " ", "and ",
                                 "address: ", "St. ", "a.b@example.com", "<PERSON>", "<ADDRESS>", "zor"])


@PROPERTY
@given(st.lists(NAME_ALPHABET, max_size=14).map("".join))
def test_masking_names_is_idempotent_and_exact_without_the_trigger(text: str) -> None:
    masked, _ = MASKER.mask(text)
    assert MASKER.mask(masked) == (masked, Counter())
    assert SLOW.mask(text) == MASKER.mask(text)


# --- a local NER model ---------------------------------------------------------------------------------


def _tiny_token_classifier(folder: Path) -> Path:
    """A 1-layer BERT token classifier whose head says B-PER for every token (weights zero, bias on B-PER)."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "said", "no"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=16, max_position_embeddings=64,
                        id2label={0: "O", 1: "B-PER", 2: "I-PER"}, label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def token_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_token_classifier(tmp_path_factory.mktemp("ner"))


def test_a_local_transformers_ner_model_masks_what_it_tags(token_classifier: Path) -> None:
    model = NerModel(str(token_classifier))
    assert model.backend == "transformers"
    masker = PiiMasker(ner=model)
    masked, counts = masker.mask("Zorblat said no, mail a.b@example.com")
    assert "Zorblat" not in masked and "said" not in masked and "<EMAIL>" in masked
    assert counts[PERSON] >= 3 and counts["email"] == 1
    assert "<EMAIL>" in masked  # the model never splits a placeholder
    other = PiiMasker(ner=NerModel(str(token_classifier), labels={"LOC": ADDRESS}))
    assert other.mask("Zorblat said no") == ("Zorblat said no", Counter())


def test_a_ner_masker_pickles_without_its_model(token_classifier: Path) -> None:
    import pickle

    masker = PiiSection(ner_model=str(token_classifier)).masker()
    blob = pickle.dumps(masker)
    assert len(blob) < 4_000  # settings only: each worker loads the model itself
    assert pickle.loads(blob).mask("Zorblat") == masker.mask("Zorblat")


def test_a_local_spacy_pipeline_masks_its_person_entities(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Zorblat Quenby"}])
    nlp.to_disk(tmp_path / "pipeline")
    masker = PiiMasker(ner=NerModel(str(tmp_path / "pipeline")))
    assert masker.mask("Zorblat Quenby said the answer was wrong") == (
        "<PERSON> said the answer was wrong", Counter({PERSON: 1}))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "is not a folder"),
        (lambda p: p, "holds neither config.cfg"),
    ],
)
def test_a_bad_ner_model_folder_fails_naming_the_setting(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        PiiSection(ner_model=str(make(tmp_path))).masker()
    assert "pii.ner_model" in str(error.value)


def test_pii_section_defaults_to_the_recognizers_only() -> None:
    section = PiiSection.model_validate(json.loads('{"custom_patterns": {"ticket": "TCK-[0-9]+"}}'))
    masker = section.masker()
    assert masker.ner is None
    assert masker.mask("TCK-12 from Zorblat\n-- Zorblat")[0] == "<TICKET> from <PERSON>\n-- <PERSON>"


def test_no_placeholder_is_a_cue() -> None:
    """`PiiMasker` computes the cues once per round, before the digit and email passes put placeholders in."""
    placeholders = " ".join(f"<{kind.upper()}>" for kind in ("email", "ipv6", "card", "ipv4", "phone", "national_id"))
    assert triggered(placeholders) == frozenset()
