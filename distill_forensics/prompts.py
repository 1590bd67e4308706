"""What a prompt says about its sender: its template and the capabilities it asks for.

Both run for every request, so each is one compiled pass over the prompt bytes
for ASCII text, with regular expressions (the definitions) for the rest:

- :func:`template_key`: the masked skeleton of a prompt's opening, shared by
  prompts generated from one template;
- :func:`capability_flags`: which capability classes a prompt asks for
  (chain-of-thought, grading, coding, tool use), the ones the 2026
  distillation reports saw harvested.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from distill_forensics.jit import compiled, string_buffers

# Capability classes of a prompt; a prompt may fall in several.
COT_PATTERN = (
    r"(?i)step[- ]by[- ]step|chain[- ]of[- ]thought|show (?:all |your |the )?(?:full |complete )?"
    r"(?:work|reasoning|thinking|steps)|think (?:carefully|through|aloud|out loud)|"
    r"explain your reasoning|reason (?:carefully|through)|full reasoning|detailed reasoning"
)
GRADING_PATTERN = (
    r"(?i)rubric|grade (?:this|the|each)|score (?:the|this|each|from|on a scale)|"
    r"rate (?:the|this) (?:answer|response)|evaluate (?:the|this) (?:answer|response)|"
    r"which (?:answer|response) is better"
)
CODING_PATTERN = (
    r"(?i)coding agent|```|\bdef |\bclass |implement|refactor|unit tests?|stack trace|"
    r"repository|pull request|\bbash\b|terminal|compile|function that|write (?:a|the) "
    r"(?:python|javascript|typescript|rust|go|java|sql|c\+\+)"
)
TOOL_PATTERN = (
    r"(?i)tool[ _]calls?|function[ _]call|available tools|call the tool|json schema|"
    r"\"name\"\s*:|tools?:\s*\[|<tool"
)

CAPABILITY_PATTERNS: dict[str, str] = {
    "cot": COT_PATTERN,
    "grading": GRADING_PATTERN,
    "coding": CODING_PATTERN,
    "tool": TOOL_PATTERN,
}
"""The capability classes counted per account (``n_<name>`` columns)."""


# ---------------------------------------------------------------------------
# Template keys

TEMPLATE_WORDS = 8
"""A prompt's template is its masked skeleton cut to its first words."""

TEMPLATE_CHARS = 128
"""Characters of a prompt's opening that can hold its first words."""


def template_key(prompt: pl.Expr) -> pl.Expr:
    """The template skeleton of a prompt: names, numbers and punctuation masked, first words.

    Two prompts generated from one template with different fills (numbers,
    names, task text after the fixed opening) get the same key. The prompt is
    cut to its first ``TEMPLATE_CHARS`` characters; in that opening a capitalised
    word becomes ``n``, a number (with its ``.,:`` separators) ``#``, the rest is
    lowercased, every run of other characters (not letters or ``#``) separates
    words, and the key is the first four to eight words joined by spaces (null
    when there are fewer than four: "hi" says nothing about a template).

    It runs for every request, so prompts whose opening is ASCII take one
    compiled pass; the others go through the regular expressions of
    :func:`template_key_regex`, which define the same key.
    """
    return prompt.map_batches(_template_keys, return_dtype=pl.String, is_elementwise=True)


def template_key_regex(prompt: pl.Expr) -> pl.Expr:
    """:func:`template_key` as regular expressions, for any text.

    Same result as masking, replacing every run of other characters by a space
    and taking the first four to eight words, but each pass is arranged to
    match as little as it can.
    """
    masked = (
        prompt.str.slice(0, TEMPLATE_CHARS)
        .str.replace_all(r"\p{Lu}\p{Ll}+", "N")
        .str.to_lowercase()
        .str.replace_all(r"[0-9][0-9.,:]*", "#")
    )
    # Every run of non-word characters becomes one space. Most runs already are
    # one space and are left alone: regex cost grows with the number of matches.
    word = r"[\p{Ll}\p{Lo}#]+"
    spaced = masked.str.replace_all(
        r"[^\p{Ll}\p{Lo}#]*[^\p{Ll}\p{Lo}# ][^\p{Ll}\p{Lo}#]*| {2,}", " "
    )
    # Four to eight words. (Matching without a capture group is several times faster.)
    head = spaced.str.extract(rf"^ ?(?:{word} ){{3,{TEMPLATE_WORDS - 1}}}{word}", 0)
    return head.str.strip_chars_start(" ")


@compiled
def _template_keys_ascii(
    offsets: np.ndarray,
    data: np.ndarray,
    valid: np.ndarray,
    known_ascii: np.ndarray,
    chars: int,
    words: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Template keys of the prompts whose first ``chars`` characters are ASCII.

    Returns the keys' offsets and bytes, whether each row has a key, and which
    rows are not ASCII in their opening (left for the regular expressions).
    Rows marked in ``known_ascii`` (empty when none are) are all ASCII: their
    opening is not checked again.
    """
    known = len(known_ascii) > 0
    n = len(offsets) - 1
    room = 0
    for r in range(n):
        room += min(offsets[r + 1] - offsets[r], chars)
    out = np.empty(room, dtype=np.uint8)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    has_key = np.zeros(n, dtype=np.bool_)
    other = np.zeros(n, dtype=np.bool_)
    pos = 0
    for r in range(n):
        out_offsets[r] = pos
        if not valid[r]:
            continue
        k, stop = offsets[r], min(offsets[r + 1], offsets[r] + chars)
        if not (known and known_ascii[r]):
            for q in range(k, stop):
                if data[q] >= 128:
                    other[r] = True
                    break
        if other[r]:
            continue
        row_start = pos
        n_words = 0
        in_word = False
        while k < stop:
            c = data[k]
            upper = 65 <= c <= 90
            if upper and k + 1 < stop and 97 <= data[k + 1] <= 122:
                # A capitalised word: "N", lowercased.
                k += 2
                while k < stop and 97 <= data[k] <= 122:
                    k += 1
                token = 110
            elif 48 <= c <= 57:
                # A number with its separators: "#".
                k += 1
                while k < stop and (
                    48 <= data[k] <= 57 or data[k] == 46 or data[k] == 44 or data[k] == 58
                ):
                    k += 1
                token = 35
            else:
                k += 1
                token = c + 32 if upper else c
            if 97 <= token <= 122 or token == 35:
                if not in_word:
                    if n_words == words:
                        break
                    if n_words:
                        out[pos] = 32
                        pos += 1
                    in_word = True
                    n_words += 1
                out[pos] = token
                pos += 1
            else:
                in_word = False
        if n_words >= 4:
            has_key[r] = True
        else:
            pos = row_start
    out_offsets[n] = pos
    return out_offsets, out[:pos], has_key, other


def _template_keys(prompts: pl.Series) -> pl.Series:
    """:func:`template_key` of a column of prompts."""
    return _keys_of(prompts, *string_buffers(prompts)).alias(prompts.name)


def _keys_of(
    prompts: pl.Series,
    offsets: np.ndarray,
    data: np.ndarray,
    valid: np.ndarray,
    known_ascii: np.ndarray | None = None,
) -> pl.Series:
    """Template keys of ``prompts`` from their bytes; ``known_ascii`` marks rows known to
    be all ASCII (see :func:`_template_keys_ascii`)."""
    out_offsets, out, has_key, other = _template_keys_ascii(
        offsets,
        data,
        valid,
        np.zeros(0, np.bool_) if known_ascii is None else known_ascii,
        TEMPLATE_CHARS,
        TEMPLATE_WORDS,
    )
    keys = pa.LargeStringArray.from_buffers(
        len(valid),
        pa.py_buffer(out_offsets),
        pa.py_buffer(out),
        pa.py_buffer(np.packbits(has_key, bitorder="little")),
    )
    result = pl.Series("template", keys, dtype=pl.String)
    if other.any():
        rows = pl.Series(np.flatnonzero(other))
        slow = pl.select(template_key_regex(pl.lit(prompts.gather(rows)))).to_series()
        result = result.scatter(rows, slow)
    return result


def prompt_features(prompt: pl.Expr) -> pl.Expr:
    """:func:`template_key` (field ``template``) and :func:`capability_flags` in one pass.

    The row plan needs both for every request; one pass hands the prompt
    bytes to the compiled code once.
    """
    dtype = pl.Struct(
        {"template": pl.String(), **{name: pl.Boolean() for name in CAPABILITY_PATTERNS}}
    )
    return prompt.map_batches(_prompt_features, return_dtype=dtype, is_elementwise=True)


def _prompt_features(prompts: pl.Series) -> pl.Series:
    buffers = string_buffers(prompts)
    # The capability scan reads every byte, so it learns which prompts are all
    # ASCII; the template keys need not check their openings again.
    flags, other = _flags_of(prompts, *buffers)
    keys = _keys_of(prompts, *buffers, buffers[2] & ~other)
    return pl.DataFrame([keys, *flags]).to_struct(prompts.name)


# ---------------------------------------------------------------------------
# Capability classes


def capability_flags(prompt: pl.Expr) -> pl.Expr:
    """Whether each prompt matches each capability pattern: a struct of booleans, one per class.

    The same as ``prompt.str.contains(pattern)`` for every pattern of
    :data:`CAPABILITY_PATTERNS` (null for a null prompt). Prompts that are all
    ASCII are scanned once for every pattern at the same time (a trie of the
    literals the patterns spell out); others go through the regular expressions.
    """
    dtype = pl.Struct({name: pl.Boolean() for name in CAPABILITY_PATTERNS})
    return prompt.map_batches(_capability_flags, return_dtype=dtype, is_elementwise=True)


@dataclass(frozen=True)
class _Literal:
    """One alternative of a pattern spelled out: ``head``, then maybe whitespace and ``tail``."""

    head: str
    boundary_before: bool
    boundary_after: bool
    tail: str | None


def _expand(pattern: str) -> list[_Literal]:
    r"""The alternatives of a capability pattern, each a literal.

    Handles the subset of regular-expression syntax the patterns use: ``|``,
    ``(?:...)``, ``[...]`` of plain characters, ``?`` after a character or a
    group, ``\b`` at either end of an alternative and one ``\s*`` followed by
    more text. Anything else raises, so a pattern edited beyond that subset
    fails loudly instead of being scanned differently.
    """
    if not pattern.startswith("(?i)"):
        raise ValueError(f"capability pattern must be case-insensitive: {pattern!r}")
    text = pattern[4:]
    pos = 0

    def alternation() -> list[list[str]]:
        nonlocal pos
        options = [sequence()]
        while pos < len(text) and text[pos] == "|":
            pos += 1
            options.append(sequence())
        return [o for option in options for o in option]

    def sequence() -> list[list[str]]:
        nonlocal pos
        parts: list[list[list[str]]] = []
        while pos < len(text) and text[pos] not in "|)":
            c = text[pos]
            if text.startswith("(?:", pos):
                pos += 3
                atom = alternation()
                if pos >= len(text) or text[pos] != ")":
                    raise ValueError(f"unbalanced group in {pattern!r}")
                pos += 1
            elif c == "[":
                stop = text.index("]", pos)
                chars = text[pos + 1 : stop]
                if "\\" in chars or chars.startswith("^") or "-" in chars[1:-1]:
                    raise ValueError(f"unsupported character class in {pattern!r}")
                atom = [[ch] for ch in chars]
                pos = stop + 1
            elif c == "\\":
                escaped = text[pos + 1]
                pos += 2
                if escaped == "b":
                    atom = [["\\b"]]
                elif escaped == "s" and text[pos : pos + 1] == "*":
                    pos += 1
                    atom = [["\\s*"]]
                elif not escaped.isalnum():
                    atom = [[escaped]]
                else:
                    raise ValueError(f"unsupported escape \\{escaped} in {pattern!r}")
            elif c in ".^$*+{}()":
                raise ValueError(f"unsupported syntax {c!r} in {pattern!r}")
            else:
                atom = [[c]]
                pos += 1
            if pos < len(text) and text[pos] == "?":
                pos += 1
                atom = [*atom, []]
            parts.append(atom)
        return [sum(combo, []) for combo in itertools.product(*parts)] if parts else [[]]

    options = alternation()
    if pos != len(text):
        raise ValueError(f"unbalanced group in {pattern!r}")
    return [_literal(tokens, pattern) for tokens in options]


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _literal(tokens: list[str], pattern: str) -> _Literal:
    before = bool(tokens) and tokens[0] == "\\b"
    after = len(tokens) > 1 and tokens[-1] == "\\b"
    body = tokens[int(before) : len(tokens) - int(after)]
    if "\\s*" in body:
        cut = body.index("\\s*")
        head, tail = "".join(body[:cut]), "".join(body[cut + 1 :])
    else:
        head, tail = "".join(body), None
    tail_ok = tail is None or (
        tail and tail.isascii() and not tail[0].isspace() and "\\" not in tail
    )
    ok = (
        head
        and head.isascii()
        and "\\b" not in head
        and tail_ok
        and (not before or _is_word(head[0]))
        and (not after or (tail is None and _is_word(head[-1])))
    )
    if not ok:
        raise ValueError(f"capability pattern outside the scanned subset: {pattern!r}")
    return _Literal(head.lower(), before, after, tail.lower() if tail is not None else None)


class _Trie(NamedTuple):
    """Every pattern's literals in a trie over byte classes: the scan's arguments, in order.

    A state is met through its *entry* (:func:`_entry`): its number, the
    classes of the literals at or below it, and whether a literal ends there,
    packed in one integer, so moving to the next state is one lookup.
    ``step[state * width + byte_class[byte]]`` is the next state's entry or
    -1, ``width`` being the number of byte classes plus one (class 0: bytes
    that no literal has). ``trigram`` numbers the three-class openings of
    literals (6 bits per class; 0 for none) and ``opening[number - 1]`` is the
    entry of the state they lead to. ``plain[state]`` holds the classes whose
    plain literals end there; ``out_ptr`` and ``out_ids`` list the literals with
    conditions (word boundaries, whitespace and a tail) that end there,
    described by the ``lit_*`` arrays.
    """

    byte_class: np.ndarray
    step: np.ndarray
    width: int
    trigram: np.ndarray
    opening: np.ndarray
    plain: np.ndarray
    out_ptr: np.ndarray
    out_ids: np.ndarray
    lit_bit: np.ndarray
    lit_before: np.ndarray
    lit_after: np.ndarray
    tail_ptr: np.ndarray
    tail: np.ndarray


_CLASS_BITS = 6
"""Bits of a byte class in a trigram key."""

_STATE_BITS = 20
"""Bits of a state's number in its entry (see :class:`_Trie`)."""

_REACH_BITS = 8
"""Bits of the classes a state can reach, above its number in its entry: one per
capability class. One bit above them says whether a literal ends there."""


def _entry(state: int, reach: int, ends: bool) -> int:
    """A trie state's entry (see :class:`_Trie`)."""
    return state | (reach << _STATE_BITS) | (int(ends) << (_STATE_BITS + _REACH_BITS))


@cache
def _trie() -> _Trie:
    literals = [
        (bit, lit)
        for bit, pattern in enumerate(CAPABILITY_PATTERNS.values())
        for lit in _expand(pattern)
    ]
    alphabet = sorted({ch for _, lit in literals for ch in lit.head})
    if len(alphabet) >= 1 << _CLASS_BITS or min(len(lit.head) for _, lit in literals) < 3:
        raise ValueError("capability literals need at least 3 characters from at most 63")
    if len(CAPABILITY_PATTERNS) > _REACH_BITS:
        raise ValueError(f"at most {_REACH_BITS} capability classes (one bit each)")
    byte_class = np.zeros(256, dtype=np.uint8)
    for c, ch in enumerate(alphabet, start=1):
        byte_class[ord(ch)] = c
        byte_class[ord(ch.upper())] = c
    goto: list[dict[int, int]] = [{}]
    ends: list[list[int]] = [[]]
    reach = [0]
    for n, (bit, lit) in enumerate(literals):
        state = 0
        reach[state] |= 1 << bit
        for ch in lit.head:
            c = int(byte_class[ord(ch)])
            if c not in goto[state]:
                goto.append({})
                ends.append([])
                reach.append(0)
                goto[state][c] = len(goto) - 1
            state = goto[state][c]
            reach[state] |= 1 << bit
        ends[state].append(n)
    if len(goto) > 1 << _STATE_BITS:
        raise ValueError(f"at most {1 << _STATE_BITS} trie states for the capability literals")
    plain = np.zeros(len(goto), dtype=np.uint8)
    special: list[list[int]] = [[] for _ in goto]
    for state, here in enumerate(ends):
        for n in here:
            bit, lit = literals[n]
            if lit.boundary_before or lit.boundary_after or lit.tail is not None:
                special[state].append(n)
            else:
                plain[state] |= 1 << bit
    entry = [
        _entry(state, reach[state], bool(plain[state] or special[state]))
        for state in range(len(goto))
    ]
    width = len(alphabet) + 1
    step = np.full(len(goto) * width, -1, dtype=np.int32)
    for state, edges in enumerate(goto):
        for c, nxt in edges.items():
            step[state * width + c] = entry[nxt]
    # Every literal has at least three characters, so none ends above the state its
    # opening leads to: the scan starts its walk there.
    openings: dict[int, int] = {}
    for _, lit in literals:
        key, state = 0, 0
        for ch in lit.head[:3]:
            c = int(byte_class[ord(ch)])
            key = (key << _CLASS_BITS) | c
            state = goto[state][c]
        openings[key] = state
    if len(openings) > 255:
        raise ValueError("at most 255 three-character openings of capability literals")
    trigram = np.zeros(1 << 3 * _CLASS_BITS, dtype=np.uint8)
    opening = np.zeros(len(openings), dtype=np.int32)
    for number, (key, state) in enumerate(sorted(openings.items()), start=1):
        trigram[key] = number
        opening[number - 1] = entry[state]
    tails = [lit.tail or "" for _, lit in literals]
    return _Trie(
        byte_class=byte_class,
        step=step,
        width=width,
        trigram=trigram,
        opening=opening,
        plain=plain,
        out_ptr=np.cumsum([0, *(len(s) for s in special)]).astype(np.int64),
        out_ids=np.array([n for s in special for n in s], dtype=np.int64),
        lit_bit=np.array([1 << bit for bit, _ in literals], dtype=np.uint8),
        lit_before=np.array([lit.boundary_before for _, lit in literals]),
        lit_after=np.array([lit.boundary_after for _, lit in literals]),
        tail_ptr=np.cumsum([0, *(len(t) for t in tails)]).astype(np.int64),
        tail=np.frombuffer("".join(tails).encode(), dtype=np.uint8).copy(),
    )


@compiled
def _scan_ascii(
    offsets: np.ndarray,
    data: np.ndarray,
    valid: np.ndarray,
    byte_class: np.ndarray,
    step: np.ndarray,
    width: int,
    trigram: np.ndarray,
    opening: np.ndarray,
    plain: np.ndarray,
    out_ptr: np.ndarray,
    out_ids: np.ndarray,
    lit_bit: np.ndarray,
    lit_before: np.ndarray,
    lit_after: np.ndarray,
    tail_ptr: np.ndarray,
    tail: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each ASCII prompt's capability bits; which rows are not ASCII (left for the regexes).

    Two passes over each prompt. The first looks a rolling key of the last
    three byte classes up in ``trigram`` and notes where a literal can start
    (a few positions in a hundred), in a loop kept short because it runs for
    every byte; the second walks the trie from each of those, from the state
    the opening leads to, and only while a class not found yet lies below.
    """
    n = len(offsets) - 1
    bits = np.zeros(n, dtype=np.uint8)
    other = np.zeros(n, dtype=np.bool_)
    mask = (1 << 3 * _CLASS_BITS) - 1
    state_mask = (1 << _STATE_BITS) - 1
    reach_mask = (1 << _REACH_BITS) - 1
    longest = 0
    for r in range(n):
        longest = max(longest, offsets[r + 1] - offsets[r])
    # Where literals can start in the current prompt (from its start: one text's
    # length fits 32 bits in polars), and the entries of the states their
    # openings lead to.
    starts = np.empty(longest, dtype=np.uint32)
    entries = np.empty(longest, dtype=opening.dtype)
    for r in range(n):
        start, stop = offsets[r], offsets[r + 1]
        if not valid[r] or stop - start < 3:
            for k in range(start, stop):
                other[r] |= data[k] >= 128
            continue
        key = (np.int64(byte_class[data[start]]) << _CLASS_BITS) | byte_class[data[start + 1]]
        high = data[start] | data[start + 1]
        hits = 0
        for first in range(start, stop - 2):
            byte = data[first + 2]
            high |= byte
            key = ((key << _CLASS_BITS) & mask) | byte_class[byte]
            opens = trigram[key]
            if opens != 0:
                starts[hits] = first - start
                entries[hits] = opening[opens - 1]
                hits += 1
        if high >= 128:
            other[r] = True
            continue
        found = 0
        for h in range(hits):
            first = start + starts[h]
            entry = np.int64(entries[h])
            k = first + 2
            while (entry >> _STATE_BITS) & reach_mask & ~found:
                state = entry & state_mask
                if entry >> (_STATE_BITS + _REACH_BITS):
                    found |= plain[state]
                    for q in range(out_ptr[state], out_ptr[state + 1]):
                        lit = out_ids[q]
                        if (found & lit_bit[lit]) == 0 and _conditions_hold(
                            data,
                            start,
                            stop,
                            first,
                            k,
                            lit_before[lit],
                            lit_after[lit],
                            tail,
                            tail_ptr[lit],
                            tail_ptr[lit + 1],
                        ):
                            found |= lit_bit[lit]
                k += 1
                if k == stop:
                    break
                entry = np.int64(step[state * width + byte_class[data[k]]])
                if entry < 0:
                    break
        bits[r] = found
    return bits, other


@compiled
def _conditions_hold(
    data: np.ndarray,
    start: int,
    stop: int,
    first: int,
    last: int,
    before: bool,
    after: bool,
    tail: np.ndarray,
    t_lo: int,
    t_hi: int,
) -> bool:
    """Whether a literal found at ``data[first:last + 1]`` meets its boundaries and tail."""
    if before and first > start and _word_byte(data[first - 1]):
        return False
    if after and last + 1 < stop and _word_byte(data[last + 1]):
        return False
    if t_hi > t_lo:
        at = last + 1
        while at < stop and (data[at] == 32 or 9 <= data[at] <= 13):
            at += 1
        if at + (t_hi - t_lo) > stop:
            return False
        for t in range(t_hi - t_lo):
            c = data[at + t]
            if 65 <= c <= 90:
                c += 32
            if c != tail[t_lo + t]:
                return False
    return True


@compiled
def _word_byte(c: int) -> bool:
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95


def _capability_flags(prompts: pl.Series) -> pl.Series:
    """:func:`capability_flags` of a column of prompts."""
    flags, _ = _flags_of(prompts, *string_buffers(prompts))
    return pl.DataFrame(flags).to_struct(prompts.name)


def _flags_of(
    prompts: pl.Series, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray
) -> tuple[list[pl.Series], np.ndarray]:
    """Capability flags of ``prompts`` from their bytes, and which rows are not all ASCII."""
    bits, other = _scan_ascii(offsets, data, valid, *_trie())
    missing = ~valid
    flags = [
        pl.Series(name, pa.array((bits & (1 << b)) != 0, mask=missing), dtype=pl.Boolean)
        for b, name in enumerate(CAPABILITY_PATTERNS)
    ]
    if other.any():
        rows = pl.Series(np.flatnonzero(other))
        slow = pl.select(
            pl.lit(prompts.gather(rows)).str.contains(pattern).alias(name)
            for name, pattern in CAPABILITY_PATTERNS.items()
        )
        flags = [f.scatter(rows, slow.get_column(f.name)) for f in flags]
    return flags, other
