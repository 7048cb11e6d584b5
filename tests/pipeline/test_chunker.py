"""The incremental speech chunker: where answers are cut, what is spoken, and that neither depends on tokens."""

import copy
import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from answers.pipeline.chunker import Chunk, SpeechChunker

# Boundary cases use min_chars=1 so every sentence end shows; the grouping rules have their own cases.
SPLIT = {"min_chars": 1}
DEFAULT: dict[str, int] = {}

LONG_SENTENCE = (
    "When you prepare for a long hike in the mountains, you should pack enough water for the whole day, "
    "a warm jacket even if the forecast looks sunny, a small first aid kit with bandages and tape, "
    "and a paper map because phones run out of battery at the worst possible moment."
)

CASES: list[tuple[str, dict[str, int], list[str]]] = [
    # Numbers, decimals, versions, prices, temperatures and times.
    ("Pi is 3.14. Next", SPLIT, ["Pi is 3.14.", "Next"]),
    ("It costs $1,299.99 today. Cheap!", SPLIT, ["It costs $1,299.99 today.", "Cheap!"]),
    ("Python 3.11.7 is out. Upgrade now.", SPLIT, ["Python 3.11.7 is out.", "Upgrade now."]),
    ("GPT-4.1 is a model. It is fast.", SPLIT, ["GPT-4.1 is a model.", "It is fast."]),
    ("It is 23.5℃ outside. Wear a coat.", SPLIT, ["It is 23.5℃ outside.", "Wear a coat."]),
    ("Meet at 10:30. Bring snacks.", SPLIT, ["Meet at 10:30.", "Bring snacks."]),
    ("The answer is 42. The end.", SPLIT, ["The answer is 42.", "The end."]),
    ("Price: $5. Tax: $1.", SPLIT, ["Price: $5.", "Tax: $1."]),
    ("No. 5 is the answer. Fig. 3 shows it.", SPLIT, ["No. 5 is the answer.", "Fig. 3 shows it."]),
    # Abbreviations, titles and initials.
    ("Dr. Smith arrived. Mr. and Mrs. Brown left.", SPLIT, ["Dr. Smith arrived.", "Mr. and Mrs. Brown left."]),
    (
        "Ms. Lee met Prof. Chan at St. Mary's. They talked.",
        SPLIT,
        ["Ms. Lee met Prof. Chan at St. Mary's.", "They talked."],
    ),
    ("Buy fruit, e.g. apples and pears. Then rest.", SPLIT, ["Buy fruit, e.g. apples and pears.", "Then rest."]),
    ("U.S. policy changed. The U.K. agreed.", SPLIT, ["U.S. policy changed.", "The U.K. agreed."]),
    ("Cats vs. Dogs is a debate. Pick one.", SPLIT, ["Cats vs. Dogs is a debate.", "Pick one."]),
    (
        "Bring pens, paper, etc. and snacks. Then go.",
        SPLIT,
        ["Bring pens, paper, etc. and snacks.", "Then go."],
    ),
    (
        "I woke at 7 a.m. and ran. Then I ate at 1 p.m. Lunch was good.",
        SPLIT,
        ["I woke at 7 a.m. and ran.", "Then I ate at 1 p.m.", "Lunch was good."],
    ),
    ("J. K. Rowling wrote it. Read it.", SPLIT, ["J. K. Rowling wrote it.", "Read it."]),
    ("Approx. 5 people came. Really.", SPLIT, ["Approx. 5 people came.", "Really."]),
    # URLs and e-mail addresses.
    (
        "Visit https://example.com/docs.html now. It helps.",
        SPLIT,
        ["Visit https://example.com/docs.html now.", "It helps."],
    ),
    (
        "See https://example.com/a.b?c=d for more. Thanks!",
        SPLIT,
        ["See https://example.com/a.b?c=d for more.", "Thanks!"],
    ),
    ("Check https://example.com. Then reply.", SPLIT, ["Check https://example.com.", "Then reply."]),
    ("Mail a.b@example.co.uk today. We reply fast.", SPLIT, ["Mail a.b@example.co.uk today.", "We reply fast."]),
    # Lists and paragraphs.
    ("1. Drink water\n2. Sleep", SPLIT, ["1. Drink water", "2. Sleep"]),
    (
        "Steps:\n1. Drink water.\n2. Sleep well.\n3. Eat",
        SPLIT,
        ["Steps:", "1. Drink water.", "2. Sleep well.", "3. Eat"],
    ),
    ("- Apples\n- Pears\n\nThat is all.", DEFAULT, ["Apples", "Pears", "That is all."]),
    ("2024. A great year. It was fun.", SPLIT, ["2024. A great year.", "It was fun."]),
    ("First paragraph\n\nSecond paragraph", DEFAULT, ["First paragraph", "Second paragraph"]),
    ("This line wraps\nhere and ends. Next one.", SPLIT, ["This line wraps here and ends.", "Next one."]),
    ("> Quoted text here.\nNormal text.", SPLIT, ["Quoted text here.", "Normal text."]),
    ("Intro text.\n\n---\n\nOutro text.", DEFAULT, ["Intro text.", "Outro text."]),
    # Ellipses, quotes and brackets.
    ("Wait... what? Okay.", SPLIT, ["Wait... what?", "Okay."]),
    ("I thought... No. Never mind.", SPLIT, ["I thought...", "No.", "Never mind."]),
    ("Hmm… let me think. Done.", SPLIT, ["Hmm… let me think.", "Done."]),
    ('He said "Hi." Then he left.', SPLIT, ['He said "Hi."', "Then he left."]),
    (
        "Read the intro (see above.) Then continue.",
        SPLIT,
        ["Read the intro (see above.)", "Then continue."],
    ),
    ("Really?! Yes.", SPLIT, ["Really?!", "Yes."]),
    ("First sentence here. and a second", SPLIT, ["First sentence here. and a second"]),
    # Chinese and mixed text.
    ("今天天气很好。我们去公园吧！你觉得呢？", SPLIT, ["今天天气很好。", "我们去公园吧！", "你觉得呢？"]),
    ("今天天气很好。我们去公园吧！你觉得呢？", DEFAULT, ["今天天气很好。", "我们去公园吧！你觉得呢？"]),
    ("价格是3.5元。很便宜。", SPLIT, ["价格是3.5元。", "很便宜。"]),
    ("他说：“你好。”然后走了。", SPLIT, ["他说：“你好。”", "然后走了。"]),
    ("版本是3.11.7，发布于10:30。", SPLIT, ["版本是3.11.7，发布于10:30。"]),
    ("第一，准备材料；第二，开始做饭。", SPLIT, ["第一，准备材料；", "第二，开始做饭。"]),
    ("我用Python写代码。It works well.", SPLIT, ["我用Python写代码。", "It works well."]),
    ("Hello.你好。", SPLIT, ["Hello.", "你好。"]),
    ("我想想……好吧。", SPLIT, ["我想想……好吧。"]),
    ("春天来了，花都开了，鸟儿在唱歌。", DEFAULT, ["春天来了，花都开了，", "鸟儿在唱歌。"]),
    # Markdown.
    (
        "**Important:** drink *more* water. Use `pip install x` now.",
        SPLIT,
        ["Important: drink more water.", "Use pip install x now."],
    ),
    (
        "See [the docs](https://example.com/a.b) for details. Then ask.",
        SPLIT,
        ["See the docs for details.", "Then ask."],
    ),
    (
        "# Getting started\nInstall it first. Then run it.",
        SPLIT,
        ["Getting started", "Install it first.", "Then run it."],
    ),
    (
        "Here is code:\n```python\nx = 1. \nprint(x)\n```\nThat prints 1.",
        SPLIT,
        ["Here is code:", "That prints 1."],
    ),
    ("```\nunclosed code. Still code", SPLIT, []),
    ("Salt &amp; pepper, please. Thanks.", SPLIT, ["Salt & pepper, please.", "Thanks."]),
    ("**First one. Second one.**", SPLIT, ["First one.", "Second one."]),
    ("Great job! 🎉 Keep going.", SPLIT, ["Great job!", "🎉 Keep going."]),
    ("🎉🎉\n\nHello there.", SPLIT, ["Hello there."]),
    # Grouping: fast first chunk, merged short sentences, split long ones, nothing lost at the end.
    ("The last sentence has no period", DEFAULT, ["The last sentence has no period"]),
    (
        "Sure thing, let me explain, this is how it works in practice. Next sentence is here.",
        DEFAULT,
        ["Sure thing, let me explain,", "this is how it works in practice.", "Next sentence is here."],
    ),
    (
        "Yes. That is right. It works well today.",
        DEFAULT,
        ["Yes. That is right.", "It works well today."],
    ),
    (
        "Photosynthesis is fascinating. Ok. Sure. Plants turn light into sugar.",
        DEFAULT,
        ["Photosynthesis is fascinating.", "Ok. Sure. Plants turn light into sugar."],
    ),
    (
        "This is the first sentence. " + LONG_SENTENCE,
        DEFAULT,
        [
            "This is the first sentence.",
            "When you prepare for a long hike in the mountains, you should pack enough water for the whole "
            "day, a warm jacket even if the forecast looks sunny, a small first aid kit with bandages and tape,",
            "and a paper map because phones run out of battery at the worst possible moment.",
        ],
    ),
]


def splits(text: str) -> dict[str, list[str]]:
    """The same text as a model might stream it: whole, per character, per word, random pieces."""
    ways = {"whole": [text], "chars": list(text), "words": re.findall(r"\s*\S+|\s+", text)}
    for seed in (0, 1, 2):
        rng = random.Random(seed)
        pieces, i = [], 0
        while i < len(text):
            size = rng.randint(1, 8)
            pieces.append(text[i : i + size])
            i += size
        ways[f"random{seed}"] = pieces
    return ways


def stream(pieces: list[str], **options: int) -> list[Chunk]:
    chunker = SpeechChunker(**options)
    chunks = [chunk for piece in pieces for chunk in chunker.feed(piece)]
    return chunks + chunker.flush()


@pytest.mark.parametrize(("text", "options", "expected"), CASES, ids=[case[0][:40] for case in CASES])
def test_hard_cases_cut_the_same_whatever_the_tokens(text: str, options: dict[str, int], expected: list[str]):
    """Each case gives the expected captions, identical for every way of splitting the text into tokens."""
    results = {name: stream(pieces, **options) for name, pieces in splits(text).items()}
    assert [chunk.caption for chunk in results["whole"]] == expected
    for name, chunks in results.items():
        assert chunks == results["whole"], name
        assert [chunk.seq for chunk in chunks] == list(range(len(chunks)))


def test_case_table_is_large():
    assert len(CASES) >= 40


def test_speech_drops_markdown_syntax_and_emoji_but_keeps_words():
    chunks = stream(
        ["## Tips 🚀\n", "- **Drink** `water`, see [the guide](https://x.io/a.b).\n", "1. Sleep well 😴\n"], **SPLIT
    )
    assert [(c.caption, c.speech) for c in chunks] == [
        ("Tips 🚀", "Tips"),
        ("Drink water, see the guide.", "Drink water, see the guide."),
        ("1. Sleep well 😴", "1. Sleep well"),
    ]


def test_code_blocks_and_emoji_only_chunks_are_skipped_and_seq_stays_contiguous():
    text = "Run this:\n```sh\npip install x\n```\n🎉🎉\n\nThen it works.\n~~~\nmore code\n~~~\nDone now."
    chunks = stream(list(text), **SPLIT)
    assert [(c.seq, c.speech) for c in chunks] == [(0, "Run this:"), (1, "Then it works."), (2, "Done now.")]


def test_table_rows_are_spoken_as_cells_and_borders_are_skipped():
    chunks = stream(["| City | Temp |\n|---|---|\n| Oslo | 3.5℃ |\n"], **SPLIT)
    assert [c.speech for c in chunks] == ["City, Temp", "Oslo, 3.5℃"]


def test_language_follows_the_script_of_the_chunk():
    chunks = stream(["我用Python写代码。", "It works well. ", "好的。"], **SPLIT)
    assert [c.language for c in chunks] == ["zh", "en", "zh"]


def test_ambiguous_period_waits_for_the_next_character():
    """'Pi is 3.' could become 'Pi is 3.14', so nothing is released until the next character arrives."""
    chunker = SpeechChunker(**SPLIT)
    assert chunker.feed("Pi is 3.") == []
    assert chunker.feed(" ") == []
    assert [c.caption for c in chunker.feed("N")] == ["Pi is 3."]
    assert chunker.feed("ext") == []
    assert [c.caption for c in chunker.flush()] == ["Next"]


def test_flush_speaks_the_unfinished_last_sentence():
    chunker = SpeechChunker()
    assert chunker.feed("and that is all there is to it") == []
    assert [c.caption for c in chunker.flush()] == ["and that is all there is to it"]


def test_first_chunk_is_released_at_the_first_clause_with_enough_words():
    chunker = SpeechChunker()
    assert chunker.feed("Sure, here is the answer,") == []  # the comma needs its look-ahead
    first = chunker.feed(" ")
    assert [c.caption for c in first] == ["Sure, here is the answer,"]
    # Later clauses are not released early: later chunks are whole sentences.
    assert chunker.feed("step by step, with care, and more words here") == []
    assert [c.caption for c in chunker.flush()] == ["step by step, with care, and more words here"]


def test_first_chunk_is_not_released_before_it_has_enough_words():
    chunker = SpeechChunker(first_chunk_min_words=4)
    assert chunker.feed("Well, ok, so ") == []
    assert [c.caption for c in chunker.feed("yes, fine")] == ["Well, ok, so yes,"]


def test_short_sentence_waits_to_be_merged_with_the_next():
    chunker = SpeechChunker()
    assert [c.caption for c in chunker.feed("Photosynthesis is fascinating. Ok. ")] == [
        "Photosynthesis is fascinating."
    ]
    assert chunker.feed("Plants use light.") == []
    assert [c.caption for c in chunker.feed(" And")] == ["Ok. Plants use light."]
    assert [c.caption for c in chunker.flush()] == ["And"]


def test_no_chunk_is_longer_than_max_chars_without_punctuation_or_spaces():
    chunks = stream(["a" * 450], max_chars=200)
    assert [len(c.caption) for c in chunks] == [200, 200, 50]


def test_words_that_can_end_nothing_still_split_an_overlong_chunk_at_a_space():
    """Text with no punctuation skips the scan until it would make the chunk too long."""
    words = [f" word{i}" for i in range(30)]  # 6 to 7 characters each, 199 in all
    chunker = SpeechChunker(max_chars=40, min_chars=10)
    chunks = [chunk for word in words for chunk in chunker.feed(word)] + chunker.flush()
    assert all(len(chunk.caption) <= 40 for chunk in chunks)
    assert " ".join(chunk.caption for chunk in chunks) == "".join(words).strip()
    assert chunks == stream(["".join(words)], max_chars=40, min_chars=10)


def test_flush_leaves_the_chunker_ready_for_a_new_answer():
    chunker = SpeechChunker(**SPLIT)
    chunker.feed("One answer here.")
    chunker.flush()
    assert stream(["Second answer."], **SPLIT) == chunker.feed("Second answer.") + chunker.flush()


# -- properties -----------------------------------------------------------------------------------

WORD = st.one_of(
    st.from_regex(r"[A-Za-z][a-z]{0,7}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}([.,:][0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["Dr.", "e.g.", "U.S.", "a.b@example.com", "https://x.io/a.b?c=d", "3.11.7", "$1,299.99"]),
    st.from_regex(r"[\u4e00-\u4e2f]{1,6}", fullmatch=True),
)
PUNCTUATION = st.sampled_from(["", "", "", ",", ".", "!", "?", ";", ":", "...", "…", "。", "，", "！", '."', ".)"])
SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n"])


TRICKY = [*"ab AZ1.,:;!?…。，！“”\"')(*`#-\n~🎉", "```", "1. ", "http://x.y", "Dr.", "...", "\n\n"]


@st.composite
def plain_answers(draw: st.DrawFn) -> str:
    """Plain text without markdown: words with punctuation, spaces and line breaks."""
    parts = []
    for _ in range(draw(st.integers(1, 60))):
        parts.append(draw(WORD) + draw(PUNCTUATION))
        parts.append(draw(SEPARATOR))
    return "".join(parts)


@st.composite
def token_splits(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=len(text))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def normalize(text: str) -> str:
    return "".join(text.split())


@settings(max_examples=300, deadline=None)
@given(text=plain_answers(), options=st.sampled_from([DEFAULT, SPLIT, {"max_chars": 40, "min_chars": 10}]))
def test_every_word_of_plain_text_is_captioned_in_order(text: str, options: dict[str, int]):
    chunks = stream([text], **options)
    assert normalize("".join(c.caption for c in chunks)) == normalize(text)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), options=st.sampled_from([DEFAULT, SPLIT, {"max_chars": 40, "min_chars": 10}]))
def test_chunks_do_not_depend_on_tokenization(data: st.DataObject, options: dict[str, int]):
    text = data.draw(
        st.one_of(
            plain_answers(),
            st.lists(st.sampled_from(TRICKY), max_size=60).map("".join),
        )
    )
    pieces = data.draw(token_splits(text))
    assert stream(pieces, **options) == stream([text], **options)


# --- Tentative chunks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Redis keeps the whole", " channel layer in memory,"], "Redis keeps the whole channel layer in memory,"),
        (["The answer is short."], "The answer is short."),
        (['He said "we are done."'], 'He said "we are done."'),
        (["Redis keeps the whole", " channel"], None),  # no punctuation yet
        (["Well,"], None),  # too few words for a first chunk
        (["Ask Dr."], None),  # an abbreviation, not a sentence end
    ],
)
def test_tentative_is_the_chunk_a_following_space_and_capital_would_cut(pieces: list[str], expected: str | None):
    chunker = SpeechChunker()
    for piece in pieces:
        assert chunker.feed(piece) == []
    chunk = chunker.tentative()
    assert (chunk.caption if chunk else None) == expected


def test_tentative_consumes_nothing_and_can_be_wrong():
    chunker = SpeechChunker()
    assert chunker.feed("The price is 1,") == []
    guess = chunker.tentative()
    assert guess is not None and guess.speech == "The price is 1,"
    assert chunker.feed("299") == []
    assert chunker.tentative() is None  # "1,299" is a number, not a clause end
    assert chunker.feed(" dollars in total.") == []
    guess = chunker.tentative()
    assert guess is not None and (guess.seq, guess.speech) == (0, "The price is 1,299 dollars in total.")
    assert chunker.feed(" Then") == [guess]
    assert [(c.seq, c.caption) for c in chunker.flush()] == [(1, "Then")]


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["The ticket costs 3."], None),  # "3.5" as often as "3. Then"
        (["The price is 1,"], None),
        (['He slowly counted to "3."'], None),
        (["It was built in 1905 by hand."], "It was built in 1905 by hand."),
        (["Redis keeps the whole channel layer in memory,"], "Redis keeps the whole channel layer in memory,"),
    ],
)
def test_without_after_digits_punctuation_right_after_a_digit_is_not_guessed_to_end_a_chunk(
    pieces: list[str], expected: str | None
):
    chunker = SpeechChunker()
    for piece in pieces:
        assert chunker.feed(piece) == []
    chunk = chunker.tentative(after_digits=False)
    assert (chunk.caption if chunk else None) == expected
    if expected is None:
        assert chunker.tentative() is not None  # guessed by default


@settings(max_examples=200, deadline=None)
@given(data=st.data(), options=st.sampled_from([DEFAULT, SPLIT]))
def test_asking_for_the_tentative_chunk_between_tokens_changes_no_chunk(data: st.DataObject, options: dict[str, int]):
    text = data.draw(plain_answers())
    pieces = data.draw(token_splits(text))
    chunker = SpeechChunker(**options)
    chunks = []
    for piece in pieces:
        chunks += chunker.feed(piece)
        chunker.tentative()
    assert chunks + chunker.flush() == stream([text], **options)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), options=st.sampled_from([DEFAULT, SPLIT, {"max_chars": 40, "min_chars": 10}]))
def test_the_tentative_chunk_after_text_that_can_end_nothing_is_what_a_full_scan_finds(
    data: st.DataObject, options: dict[str, int]
):
    # tentative() skips its scan when the text since the last one holds nothing that could end a chunk.
    text = data.draw(plain_answers())
    chunker = SpeechChunker(**options)
    for piece in data.draw(token_splits(text)):
        chunker.feed(piece)
        rescanned = copy.deepcopy(chunker)
        rescanned._quiet_weight = None  # forget what the last scan saw: scan again
        assert chunker.tentative() == rescanned.tentative()
