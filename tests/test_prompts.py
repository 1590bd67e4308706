"""Capability classes: the compiled scan against the regular expressions that define it."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill_forensics.prompts import (
    CAPABILITY_PATTERNS,
    _expand,
    capability_flags,
    prompt_features,
    template_key,
)


def _by_regex(prompts: list[str | None]) -> pl.DataFrame:
    frame = pl.DataFrame({"p": prompts}, schema={"p": pl.String})
    return frame.select(
        pl.col("p").str.contains(pattern).alias(name)
        for name, pattern in CAPABILITY_PATTERNS.items()
    )


def _by_scan(prompts: list[str | None]) -> pl.DataFrame:
    frame = pl.DataFrame({"p": prompts}, schema={"p": pl.String})
    return frame.select(capability_flags(pl.col("p")).alias("f")).unnest("f")


# Pieces of the patterns' literals in both cases, the characters around word
# boundaries and whitespace, and a few non-ASCII letters (which leave the fast path).
_PIECES = [
    *'abdehklopst _-:["<`\n\t\x0b\x0c\r.,(é',
    "step",
    "Step-by-STEP",
    "by",
    "show ",
    "your ",
    "full ",
    "reasoning",
    "think ",
    "out loud",
    "grade ",
    "the ",
    "this ",
    "score ",
    "on a scale",
    "rate ",
    "answer",
    "which ",
    " is better",
    "```",
    "def ",
    "class ",
    "bash",
    "_bash",
    "unit test",
    "write ",
    "a ",
    "c++",
    "go",
    "tool",
    "tools",
    "_call",
    " calls",
    '"name"',
    '"NAME"',
    "  ",
    "<tool",
    "json schema",
    "ſtep",
    "\u212aind",
]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@given(st.lists(_TEXT | st.none(), min_size=1, max_size=20))
@settings(max_examples=400, deadline=None)
def test_capability_scan_matches_the_regular_expressions(prompts):
    assert _by_scan(prompts).equals(_by_regex(prompts))


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Please think step-by-step.", {"cot"}),
        ("Grade this essay with the rubric", {"grading"}),
        ("def f(x): return x", {"coding"}),
        ("undef x", set()),  # no word boundary before "def "
        ("run it in bash", {"coding"}),
        ("run it in bashrc", set()),
        ("see bashs", set()),  # a word character right before the end
        ("bash", {"coding"}),
        ('{"name" \t : "search"}', {"tool"}),
        ('{"name" x: 1}', set()),
        ('{"name"\x0b\x0c\r:', {"tool"}),  # every ASCII whitespace
        ("tools:\n  [search]", {"tool"}),
        ("Show your full reasoning, then write a Python tool_call", {"cot", "coding", "tool"}),
        # Non-ASCII text takes the regular expressions: Unicode case folding
        # ("ſ" is an "s") and word characters ("é" is one).
        ("Ünïcode first, then think carefully", {"cot"}),
        ("ſtep by ſtep", {"cot"}),
        ("édef f(x)", set()),
        ("bashé", set()),
        ("", set()),
    ],
)
def test_capability_flags_examples(prompt, expected):
    row = _by_scan([prompt]).row(0, named=True)
    assert {name for name, hit in row.items() if hit} == expected


def test_null_prompts_have_null_flags():
    assert _by_scan([None, "step by step"]).row(0) == (None, None, None, None)


def test_prompt_features_are_the_key_and_the_flags():
    prompts = ["Grade the answer: 3 of 10 points for Alice", "hi", None, "Écris étape par étape"]
    frame = pl.DataFrame({"p": prompts})
    both = frame.select(prompt_features(pl.col("p")).alias("f")).unnest("f")
    assert both.get_column("template").to_list() == (
        frame.select(template_key(pl.col("p"))).to_series().to_list()
    )
    assert both.drop("template").equals(_by_scan(prompts))


@pytest.mark.parametrize(
    "pattern",
    [
        "step by step",  # not case-insensitive
        "(?i)steps+",
        "(?i)a.c",
        "(?i)[a-z]bc",
        "(?i)\\d+ items",
        "(?i)(?:ab",
        "(?i)\\b-x",
    ],
)
def test_patterns_outside_the_scanned_subset_are_refused(pattern):
    with pytest.raises(ValueError):
        _expand(pattern)


def test_every_literal_alternative_is_spelled_out():
    literals = _expand(CAPABILITY_PATTERNS["grading"])
    heads = {lit.head for lit in literals}
    assert len(literals) == 19
    assert {"rubric", "score on a scale", "which response is better"} <= heads
    tool = {(lit.head, lit.tail) for lit in _expand(CAPABILITY_PATTERNS["tool"])}
    assert ('"name"', ":") in tool and ("tools:", "[") in tool
