"""Incremental speech chunker: cuts a streamed LLM answer into speakable chunks as tokens arrive.

Every cut is a pure function of the text seen so far: where a cut needs look-ahead the chunker waits
for it, so the chunks never depend on how the answer was split into tokens. Rules: docs/chunking.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from markdown_it import MarkdownIt


@dataclass(frozen=True)
class Chunk:
    seq: int  # 0, 1, 2... over the chunks actually returned
    caption: str  # readable text for people: markdown syntax removed, trimmed
    speech: str  # text for TTS: caption without emoji (code blocks never reach a chunk)
    language: str  # "zh" if the chunk is mainly CJK, else "en"


_SENTENCE_ENDS = ".!?…"
_CJK_SENTENCE_ENDS = "。！？；"
_TERMINATORS = _SENTENCE_ENDS + _CJK_SENTENCE_ENDS
_CLAUSE_MARKS = ",;:"
_CJK_CLAUSE_MARKS = "，、："
# Characters at which a chunk may end, or that decide whether the text before them does.
_CUT_CHARACTERS = frozenset(_TERMINATORS + _CLAUSE_MARKS + _CJK_CLAUSE_MARKS + "\n")
# What text most likely goes on with after a chunk's end: a space and a capital letter.
_LIKELY_CONTINUATION = " A"
# Closing quotes, brackets and emphasis markers stay with the sentence or clause they close.
_CLOSERS = "\"'”’」』）)]】》〉»*_~`"
# Skipped when looking past a sentence end for the first character of the next sentence.
_OPENERS = "\"'“‘「『（([【《〈«*_~`"

# A "." after these never ends a sentence ("Dr. Smith", "e.g. Apples", "cats vs. Dogs").
_NEVER_FINAL = frozenset({
    "dr", "mr", "mrs", "ms", "prof", "st", "mt", "messrs", "gen", "col", "lt", "sgt", "capt", "rev",
    "hon", "sen", "rep", "gov", "pres", "e.g", "i.e", "vs", "cf", "viz", "approx", "incl", "esp", "ca",
})  # fmt: skip
# A "." after these does not end a sentence when a number follows ("No. 5", "p. 12", "Fig. 3").
_BEFORE_NUMBER = frozenset({
    "no", "nos", "vol", "p", "pp", "fig", "figs", "eq", "ch", "sec", "art", "ver", "v", "op", "ref", "tel",
})  # fmt: skip

_LINE_BREAKS_AFTER = frozenset({"heading", "list", "quote", "table"})
_LINE_BREAKS_BEFORE = frozenset({"blank", "heading", "list", "quote", "table", "fence"})

_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # emoticons, pictographs, transport, flags, skin tones, ...
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # stars, squares, arrows used as emoji
    (0x2300, 0x23FF),  # watch, hourglass, media controls
    (0xFE00, 0xFE0F),  # variation selectors
    (0x200D, 0x200D),  # zero-width joiner
    (0x20E3, 0x20E3),  # combining keycap
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
)
# Emphasis markers that markdown-it leaves behind when a chunk boundary fell inside the emphasis.
_STRAY_MARKUP = re.compile(r"\*{2,}|_{2,}|`+|~{2,}|(?<!\S)[*_](?=\S)|(?<=\S)[*_](?!\S)")

_markdown = MarkdownIt("commonmark").enable("strikethrough")


class SpeechChunker:
    """Feed an answer's text as it streams; get back the chunks that are ready to be spoken.

    One chunker per answer: `flush()` ends the answer and leaves the chunker empty.
    """

    def __init__(self, *, first_chunk_min_words: int = 4, max_chars: int = 200, min_chars: int = 20):
        if max_chars < 2:
            raise ValueError("max_chars must be at least 2")
        self.first_chunk_min_words = first_chunk_min_words
        self.max_chars = max_chars
        self.min_chars = min_chars
        self._reset()

    def _reset(self) -> None:
        # The whole answer is kept (answers are a few kB): look-behind for abbreviations and list
        # markers then never depends on where the previous chunk ended.
        self._text = ""
        self._cursor = 0  # everything before it has been chunked or dropped
        self._fence: tuple[str, int] | None = None  # (fence character, length) inside a code block
        self._seq = 0
        # The last scan read to the end of the text without meeting anything that could end a chunk:
        # the spoken weight it counted. Text that brings nothing that could end one (most tokens: a
        # word and a space) then needs no new scan.
        self._quiet_weight: int | None = None
        self._rendered: tuple[str, str] | None = None  # the last chunk's markdown source and its caption

    def feed(self, text: str) -> list[Chunk]:
        """Add streamed text; return the chunks whose end is now certain."""
        self._text += text
        if self._quiet_weight is not None and _CUT_CHARACTERS.isdisjoint(text):
            weight = self._quiet_weight + _weight(text)
            if weight <= self.max_chars:
                self._quiet_weight = weight
                return []
        return self._drain(final=False)

    def flush(self) -> list[Chunk]:
        """End of the answer: return everything left, then start afresh."""
        chunks = self._drain(final=True)
        self._reset()
        return chunks

    def tentative(self, *, after_digits: bool = True) -> Chunk | None:
        """The next chunk, if the text seen so far ends where its most likely continuation (a space
        and a capital letter) would cut it: "…in memory," or "…is late.". Nothing is consumed.

        A caller may start synthesizing it early to save the wait for the character that confirms the
        cut; the chunk `feed()` returns then is usually, not always, the same. Most wrong guesses are
        numbers whose digits come in the next token ("1," then "299", "3." then "5"): with
        `after_digits=False`, punctuation right after a digit is not guessed to end a chunk."""
        if self._quiet_weight is not None and self._quiet_weight + _weight(_LIKELY_CONTINUATION) <= self.max_chars:
            return None  # nothing seen can end a chunk, and the continuation does not make one too long
        text, state = self._text, (self._cursor, self._fence, self._seq, self._quiet_weight)
        self._text += _LIKELY_CONTINUATION
        ends: list[int] = []
        try:
            chunks = self._drain(final=False, ends=ends)
        finally:
            self._text = text
            self._cursor, self._fence, self._seq, self._quiet_weight = state
        # One chunk, ending inside the text that was really seen.
        if len(chunks) != 1 or ends[0] > len(text):
            return None
        if not after_digits and _punctuation_after_digit(text, ends[0]):
            return None
        return chunks[0]

    # -- scanning ---------------------------------------------------------------------------------

    def _drain(self, *, final: bool, ends: list[int] | None = None) -> list[Chunk]:
        """Cut every chunk whose end is certain; `ends` collects where each one ended."""
        chunks: list[Chunk] = []
        text = self._text
        self._quiet_weight = None
        while True:
            if self._fence is not None:
                if not self._skip_code(final=final):
                    break
                continue
            start = self._cursor
            while start < len(text) and text[start].isspace():
                start += 1
            # Whitespace between chunks belongs to no chunk, but a line start stays visible via _text.
            self._cursor = start
            if start == len(text):
                break
            line_start = text.rfind("\n", 0, start) + 1
            if not text[line_start:start].strip(" \t"):
                kind = self._line_kind(start, final=final)
                if kind is None:
                    break
                if kind == "fence":
                    if not self._open_fence(start, final=final):
                        break
                    continue
            end = self._find_end(start, final=final)
            if end is None:
                break
            self._cursor = end
            chunk = self._make_chunk(text[start:end])
            if chunk is not None:
                chunks.append(chunk)
                if ends is not None:
                    ends.append(end)
        return chunks

    def _open_fence(self, start: int, *, final: bool) -> bool:
        text = self._text
        newline = text.find("\n", start)
        if newline == -1 and not final:
            return False
        marker = text[start]
        self._fence = (marker, _run_end(text, start, marker) - start)
        self._cursor = len(text) if newline == -1 else newline + 1
        return True

    def _skip_code(self, *, final: bool) -> bool:
        """Drop the code block's lines up to and including its closing fence; False while waiting."""
        assert self._fence is not None
        marker, length = self._fence
        text = self._text
        while True:
            newline = text.find("\n", self._cursor)
            if newline == -1:
                if final:
                    self._cursor = len(text)
                    self._fence = None
                    return True
                return False
            line = text[self._cursor : newline].strip()
            self._cursor = newline + 1
            if len(line) >= length and line == marker * len(line):
                self._fence = None
                return True

    def _line_kind(self, i: int, *, final: bool) -> str | None:
        """Markdown block kind of the line whose first non-blank character is at `i`; None: wait."""
        text = self._text
        n = len(text)
        if i >= n:
            return "blank" if final else None
        c = text[i]
        if c == "\n":
            return "blank"
        if c in "`~":
            j = _run_end(text, i, c)
            if j - i >= 3:
                return "fence"
            return None if j == n and not final else "text"
        if c == "#":
            j = _run_end(text, i, "#")
            if j == n:
                return None if not final else "heading"
            return "heading" if j - i <= 6 and text[j] in " \t\n" else "text"
        if c in "-*+":
            if i + 1 == n:
                return None if not final else "text"
            return "list" if text[i + 1] in " \t" else "text"
        if "0" <= c <= "9":
            j = i
            while j < n and "0" <= text[j] <= "9" and j - i < 10:
                j += 1
            if j + 1 >= n:
                return None if not final else "text"
            if j - i > 9 or text[j] not in ".)":
                return "text"
            return "list" if text[j + 1] in " \t\n" else "text"
        if c == ">":
            return "quote"
        if c == "|":
            return "table"
        return "text"

    def _find_end(self, start: int, *, final: bool) -> int | None:
        """Where the chunk starting at `start` ends; None when that is not certain yet."""
        text = self._text
        n = len(text)
        first = self._seq == 0
        line_start = text.rfind("\n", 0, start) + 1
        line_kind = self._line_kind(_skip_blanks(text, line_start), final=final)
        if line_kind is None:
            return None
        weight = 0  # spoken length so far; CJK characters count double
        last_soft: int | None = None  # last clause or sentence end, for splitting an overlong chunk
        last_space: int | None = None
        i = start
        while i < n:
            c = text[i]
            w = _weight(c)
            if weight + w > self.max_chars and i > start:
                return last_soft or last_space or i
            weight += w

            if c == "\n":
                if line_kind in _LINE_BREAKS_AFTER:
                    return i
                j = _skip_blanks(text, i + 1)
                next_kind = self._line_kind(j, final=final)
                if next_kind is None:
                    return None
                if next_kind in _LINE_BREAKS_BEFORE:
                    return i
                line_kind = next_kind
                last_space = i
            elif c.isspace():
                if not text[i - 1].isspace():
                    last_space = i
            elif c in _TERMINATORS and (i == start or text[i - 1] not in _TERMINATORS):
                end = self._sentence_end(i, final=final)
                if end is None:
                    return None
                if end:
                    long_enough = weight + _weight(text[i + 1 : end]) >= self.min_chars
                    if long_enough or (first and _words(text[start:end]) >= self.first_chunk_min_words):
                        return end
                    last_soft = end
            elif c in _CLAUSE_MARKS or c in _CJK_CLAUSE_MARKS:
                end = _skip_closers(text, i + 1)
                if end == n:
                    if not final:
                        return None
                elif c == ";" and "&" in _word_before(text, i):
                    pass  # an HTML entity such as "&amp;"
                elif c in _CJK_CLAUSE_MARKS or text[end].isspace() or _is_cjk(text[end]):
                    if first and _words(text[start:end]) >= self.first_chunk_min_words:
                        return end
                    last_soft = end
            i += 1
        if final:
            return n
        self._quiet_weight = weight  # what follows decides nothing before it
        return None

    def _sentence_end(self, i: int, *, final: bool) -> int | None:
        """For the run of sentence punctuation starting at `i`: the index just after it (and its
        closing quotes/brackets) if it ends a sentence, 0 if it doesn't, None if that isn't known yet."""
        text = self._text
        n = len(text)
        j = i
        while j < n and text[j] in _TERMINATORS:
            j += 1
        end = _skip_closers(text, j)
        if end == n:
            return end if final else None
        run = text[i:j]
        after = text[end]
        if any(c in _CJK_SENTENCE_ENDS for c in run):
            return end
        if "!" in run or "?" in run:
            return end if after.isspace() or _is_cjk(after) else 0
        if not after.isspace():
            # "3.14", "a.b@example.com", "docs.html", "U.S." - but CJK text has no spaces.
            return end if run == "." and _is_cjk(after) else 0
        k = end
        while k < n and (text[k].isspace() or text[k] in _OPENERS):
            k += 1
        if k == n:
            return end if final else None
        following = text[k]
        if len(run) > 1 or "…" in run:
            # "Wait... what?" continues; "I see... Next" ends.
            return 0 if following.islower() else end
        word = _word_before(text, i)
        if word.lower() in _NEVER_FINAL or _is_list_marker(text, i):
            return 0
        if following.islower():
            return 0
        if following.isdigit() or following == "$":
            return 0 if word.lower() in _BEFORE_NUMBER else end
        if following.isupper() and len(word) == 1 and word.isupper():
            return 0  # an initial: "J. K. Rowling"
        return end

    # -- cleaning ---------------------------------------------------------------------------------

    def _make_chunk(self, source: str) -> Chunk | None:
        source = source.strip()
        # A chunk guessed by tentative() is usually cut for real a token later: rendered once.
        if self._rendered is not None and self._rendered[0] == source:
            caption = self._rendered[1]
        else:
            caption = _plain_text(source)
            self._rendered = (source, caption)
        speech = " ".join(_strip_emoji(caption).split())
        if source.startswith("|"):
            speech = ", ".join(cell.strip() for cell in speech.strip("| ").split("|"))  # a table row
        if not any(c.isalnum() for c in speech):
            return None  # nothing to say: emoji, a rule, a table border
        chunk = Chunk(seq=self._seq, caption=caption, speech=speech, language=_language(speech))
        self._seq += 1
        return chunk


def _run_end(text: str, i: int, char: str) -> int:
    while i < len(text) and text[i] == char:
        i += 1
    return i


def _skip_blanks(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _punctuation_after_digit(text: str, end: int) -> bool:
    """Whether the run of punctuation (and closers) that ends at `end` follows a digit: "3.", "1,"."""
    i = end
    while i > 0 and (text[i - 1] in _CUT_CHARACTERS or text[i - 1] in _CLOSERS):
        i -= 1
    return i > 0 and text[i - 1].isdigit()


def _skip_closers(text: str, i: int) -> int:
    while i < len(text) and text[i] in _CLOSERS:
        i += 1
    return i


def _word_before(text: str, i: int) -> str:
    start = i
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:i].lstrip(_OPENERS)


def _is_list_marker(text: str, i: int) -> bool:
    """The "1." of "1. Drink water" at the start of a line."""
    line_start = text.rfind("\n", 0, i) + 1
    number = text[line_start:i].strip(" \t")
    return number.isascii() and number.isdigit()


def _is_cjk(c: str) -> bool:
    """A CJK letter (ideograph, kana, hangul); CJK text runs on without spaces."""
    return c.isalnum() and unicodedata.east_asian_width(c) in "WF"


def _weight(text: str) -> int:
    if text.isascii():  # most text, and it is measured again at every token
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _word_counts(text: str) -> tuple[int, int]:
    """(non-CJK words, CJK characters)."""
    cjk = sum(1 for c in text if _is_cjk(c))
    latin = sum(1 for token in text.split() if any(c.isalnum() and not _is_cjk(c) for c in token))
    return latin, cjk


def _words(text: str) -> int:
    """Words spoken, counting one and a half CJK characters as a word."""
    latin, cjk = _word_counts(text)
    return latin + cjk * 2 // 3


def _language(text: str) -> str:
    latin, cjk = _word_counts(text)
    return "zh" if cjk > latin else "en"


def _is_emoji(c: str) -> bool:
    code = ord(c)
    return code >= 0x200D and any(low <= code <= high for low, high in _EMOJI_RANGES)


def _strip_emoji(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in text if not _is_emoji(c))


def _plain_text(source: str) -> str:
    """Render one chunk of markdown as plain text: keep words, numbers and punctuation; drop syntax.

    Ordered list numbers are kept ("1. Drink water"), bullets are not; links keep their text,
    images their alt text; inline code keeps its content; HTML and code blocks are dropped.
    """
    parts: list[str] = []
    for token in _markdown.parse(source):
        if token.type == "inline":
            for child in token.children or ():
                if child.type in ("text", "text_special", "image"):
                    parts.append(_STRAY_MARKUP.sub("", child.content))
                elif child.type == "code_inline":
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
        elif token.type == "list_item_open" and token.info:
            parts.append(f"{token.info}{token.markup} ")
        elif token.nesting == -1 and token.block:
            parts.append(" ")
    return " ".join("".join(parts).split())
