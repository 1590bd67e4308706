"""Prompt generators: small vocabularies combined into many distinct prompts, vectorised.

A :class:`Template` is text with ``{slot}`` holes; each slot is filled from a word list,
an integer range or another generator, and every row is built with one polars
``concat_str`` over gathered vocabularies. :class:`OneOf` picks a generator per row.
Benchmark suites and course assignments are fixed lists of exact prompts, like the
public ones they stand for, so they repeat word for word across accounts and runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import polars as pl

from distill_forensics.simulate.values import split_words

MAX_PROMPT_CHARS = 300

#: Anything that renders ``n`` prompt strings from a random generator.
PromptGen = Callable[[np.random.Generator, int], pl.Series]


@dataclass(frozen=True)
class Ints:
    """An integer slot drawn uniformly from ``lo`` to ``hi`` inclusive."""

    lo: int
    hi: int

    def __call__(self, rng: np.random.Generator, n: int) -> pl.Series:
        return pl.Series(rng.integers(self.lo, self.hi + 1, n)).cast(pl.String)


@dataclass(frozen=True)
class Words:
    """A word-list slot, uniform or weighted."""

    words: tuple[str, ...]
    weights: tuple[float, ...] | None = None

    def __call__(self, rng: np.random.Generator, n: int) -> pl.Series:
        vocab = _series(self.words)
        if self.weights is None:
            return vocab.gather(rng.integers(0, len(vocab), n))
        w = np.asarray(self.weights, dtype=float)
        return vocab.gather(rng.choice(len(vocab), n, p=w / w.sum()))


@cache
def _series(words: tuple[str, ...]) -> pl.Series:
    return pl.Series(list(words), dtype=pl.String)


Slot = Sequence[str] | PromptGen

_HOLE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Template:
    """Text with ``{slot}`` holes filled per row from ``slots`` (shared defaults apply)."""

    text: str
    slots: Mapping[str, Slot] = field(default_factory=dict)

    def __call__(self, rng: np.random.Generator, n: int) -> pl.Series:
        # "{{" and "}}" stand for literal braces, as in str.format.
        escaped = self.text.replace("{{", "\x00").replace("}}", "\x01")
        pieces = _HOLE.split(escaped)
        cols: dict[str, pl.Series] = {}
        exprs: list[pl.Expr] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if piece:
                    exprs.append(pl.lit(piece.replace("\x00", "{").replace("\x01", "}")))
                continue
            # A slot named twice ("{name} ... {name}") takes the same value both times.
            if piece not in cols:
                slot = self.slots.get(piece) or SHARED_SLOTS.get(piece)
                if slot is None:
                    raise KeyError(f"template slot {piece!r} has no vocabulary")
                cols[piece] = _fill(slot, rng, n)
            exprs.append(pl.col(piece))
        if not cols:
            text = escaped.replace("\x00", "{").replace("\x01", "}")
            return pl.Series("prompt", [text] * n, dtype=pl.String)
        return pl.DataFrame(cols).select(pl.concat_str(exprs)).to_series().alias("prompt")


def _fill(slot: Slot, rng: np.random.Generator, n: int) -> pl.Series:
    if callable(slot):
        return slot(rng, n)
    return Words(tuple(slot))(rng, n)


def _empty() -> pl.Series:
    return pl.Series("prompt", [], dtype=pl.String)


@dataclass(frozen=True)
class OneOf:
    """Pick one of several generators per row (weighted), keeping row order random."""

    options: tuple[PromptGen, ...]
    weights: tuple[float, ...] | None = None

    def __call__(self, rng: np.random.Generator, n: int) -> pl.Series:
        k = len(self.options)
        if self.weights is None:
            choice = rng.integers(0, k, n)
        else:
            w = np.asarray(self.weights, dtype=float)
            choice = rng.choice(k, n, p=w / w.sum())
        return render_assigned(rng, choice, self.options)


def one_of(*texts: str | PromptGen, weights: Sequence[float] | None = None, **slots: Slot) -> OneOf:
    """Shorthand: a OneOf over template texts (sharing ``slots``) and generators."""
    opts = tuple(Template(t, slots) if isinstance(t, str) else t for t in texts)
    return OneOf(opts, tuple(weights) if weights is not None else None)


def render_assigned(
    rng: np.random.Generator, choice: np.ndarray, generators: Sequence[PromptGen]
) -> pl.Series:
    """Row ``i`` gets a value from ``generators[choice[i]]``; output keeps row order."""
    n = len(choice)
    if n == 0:
        return _empty()
    order = np.argsort(choice, kind="stable")
    counts = np.bincount(choice, minlength=len(generators))
    pieces = [generators[k](rng, int(c)).alias("prompt") for k, c in enumerate(counts) if c]
    grouped = pl.concat(pieces, rechunk=False)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return grouped.gather(inverse)


def finish(prompts: pl.Series, rng: np.random.Generator, null_share: float = 0.03) -> pl.Series:
    """Truncate to the logged prefix length and blank out the share the log lost."""
    cut = prompts.str.slice(0, MAX_PROMPT_CHARS)
    missing = pl.Series(rng.random(len(prompts)) < null_share)
    return pl.select(pl.when(missing).then(None).otherwise(cut)).to_series().alias("prompt")


# --------------------------------------------------------------------------- shared vocab

NAMES = split_words(
    "Alice Bob Carlos Dana Elena Farid Grace Hiro Ines Jamal Kira Liam Maya Nikhil Olga "
    "Pedro Quinn Rosa Sam Tariq Uma Victor Wen Ximena Yusuf Zoe Aiden Bea Chen Deepa"
)
ITEMS = split_words(
    "apples marbles books stickers cookies pencils coins cards tickets eggs shirts plants "
    "bottles boxes stamps cupcakes"
)
LANGS = split_words(
    "Python JavaScript TypeScript Go Rust Java C++ C# Ruby Kotlin Swift PHP Scala SQL Bash"
)
LANG_WEIGHTS = (
    0.3,
    0.14,
    0.1,
    0.06,
    0.05,
    0.08,
    0.05,
    0.05,
    0.02,
    0.02,
    0.02,
    0.03,
    0.01,
    0.05,
    0.02,
)
HUMAN_LANGS = split_words(
    "French Spanish German Japanese Portuguese Italian Korean Mandarin Hindi Arabic Dutch "
    "Polish Turkish Vietnamese"
)
CITIES = (
    "Lisbon",
    "Tokyo",
    "Mexico City",
    "Berlin",
    "Kyoto",
    "Barcelona",
    "Prague",
    "Istanbul",
    "Hanoi",
    "Cape Town",
    "Buenos Aires",
    "Seoul",
    "Rome",
    "Montreal",
    "Edinburgh",
    "Bali",
    "Marrakech",
    "Copenhagen",
    "Bangkok",
    "Vienna",
    "Oaxaca",
)
TOPICS = (
    "climate change",
    "the French Revolution",
    "black holes",
    "remote work",
    "meditation",
    "sourdough baking",
    "personal finance",
    "electric cars",
    "the stock market",
    "sleep",
    "urban gardening",
    "the Roman Empire",
    "quantum computing",
    "social media",
    "coffee",
    "marathon training",
    "photosynthesis",
    "inflation",
    "jazz history",
    "chess openings",
    "volcanoes",
    "minimalism",
    "the immune system",
    "renewable energy",
    "ancient Egypt",
    "machine learning",
    "board games",
    "time management",
    "bird migration",
    "cryptography",
    "the Cold War",
    "nutrition",
    "public speaking",
    "dog training",
    "home brewing",
    "3D printing",
    "the ocean floor",
    "vaccines",
    "the printing press",
    "stoicism",
    "composting",
    "supply chains",
    "plate tectonics",
    "film noir",
    "the Silk Road",
    "housing prices",
    "language learning",
    "bees",
    "the Renaissance",
    "solar panels",
)
CONCEPTS = (
    "recursion",
    "compound interest",
    "entropy",
    "opportunity cost",
    "natural selection",
    "the blockchain",
    "Bayes' theorem",
    "supply and demand",
    "the placebo effect",
    "neural networks",
    "general relativity",
    "the Monty Hall problem",
    "DNS",
    "inflation",
    "the CAP theorem",
    "p-values",
    "object-oriented programming",
    "game theory",
    "the greenhouse effect",
    "public-key encryption",
    "mitochondria",
    "derivatives",
    "the Fourier transform",
    "herd immunity",
    "gradient descent",
    "tariffs",
    "big O notation",
)
TONES = (
    "friendly",
    "formal",
    "persuasive",
    "funny",
    "professional",
    "warm",
    "concise",
    "polite but firm",
    "enthusiastic",
    "casual",
)
DOCS = (
    "blog post",
    "poem",
    "cover letter",
    "product description",
    "speech",
    "LinkedIn post",
    "newsletter intro",
    "tweet thread",
    "toast",
    "haiku",
    "short essay",
    "press release",
    "thank-you note",
    "bio",
    "FAQ",
)
LEVELS = (
    "five",
    "a high school student",
    "a beginner",
    "my grandmother",
    "an engineer",
    "a 10 year old",
    "someone with no background",
)
EVENTS = (
    "a birthday party",
    "a team offsite",
    "a first date",
    "a rainy weekend",
    "a science fair",
    "a wedding",
    "a baby shower",
    "a retirement party",
    "a family reunion",
    "a hackathon",
)
# Free text (emails, news, notes) is assembled from sentence parts so it rarely repeats.
_SUBJECTS = (
    "The meeting",
    "Our team",
    "My landlord",
    "The new policy",
    "The city council",
    "Our revenue",
    "The study",
    "My manager",
    "The package",
    "The software update",
    "Our biggest customer",
    "The school board",
    "My neighbour",
    "The 8:15 train",
    "The app",
    "Our supplier",
    "The hospital",
    "The startup",
    "The museum",
    "My sister",
    "The contractor",
    "The insurance company",
    "Our book club",
    "The airline",
    "The new intern",
)
_VERBS = (
    "was moved to",
    "has been delayed until",
    "will be discussed on",
    "grew sharply in",
    "was cancelled on",
    "got approved in",
    "is expected by",
    "was reviewed on",
    "arrived damaged on",
    "crashed twice on",
    "has been unreachable since",
    "was announced on",
    "doubled its prices in",
    "asked for feedback on",
    "changed the schedule for",
)
_WHEN = (
    "Monday",
    "Thursday",
    "next week",
    "the third quarter",
    "March",
    "last night",
    "the weekend",
    "early June",
    "the holidays",
    "Friday afternoon",
    "the end of the month",
    "short notice",
    "the first day of school",
    "the 14th",
)
_TAILS = (
    "",
    "",
    "",
    " because several people are travelling",
    " despite strong objections",
    " after a long negotiation",
    " without any explanation",
    " according to the latest report",
    " which surprised everyone",
    " and nobody told us",
    " due to budget cuts",
    " so we need a new plan",
    " which is honestly a relief",
    " for the second time this year",
    " and the costs went up",
    " affecting most of the team",
    " until further notice",
)
_PREFIXES = ("", "", "", "", "FYI: ", "Update: ", "Note: ", "Heads up: ", "Re: ")
# One flat template (no nesting) keeps rendering cheap while giving ~10^6 combinations.
SENTENCE = Template(
    "{pre}{subj} {verb} {when}{tail}",
    {"pre": _PREFIXES, "subj": _SUBJECTS, "verb": _VERBS, "when": _WHEN, "tail": _TAILS},
)
SNIPPET = Template(
    "{a}.{more}",
    {
        "a": SENTENCE,
        "more": OneOf((Template(""), Template(" {b}.", {"b": SENTENCE})), (0.45, 0.55)),
    },
)
HOWTOS = (
    "get rid of fruit flies",
    "negotiate a raise",
    "fix a leaky faucet",
    "learn to code",
    "start investing with little money",
    "improve my credit score",
    "make cold brew",
    "back up my iPhone",
    "write a good resume",
    "stop procrastinating",
    "train for a 10k",
    "change a bike tire",
    "set up a budget spreadsheet",
    "get better at chess",
    "repot a monstera",
    "clean a cast iron pan",
    "prepare for a job interview",
)
DISHES = (
    "lasagna",
    "pad thai",
    "banana bread",
    "chili",
    "ramen",
    "pancakes",
    "curry",
    "risotto",
    "tacos",
    "brownies",
    "shakshuka",
    "falafel",
)
INGREDIENTS = ("eggs", "dairy", "gluten", "onions", "sugar", "nuts", "meat", "oil")
JOBS = (
    "data analyst",
    "nurse",
    "product manager",
    "software engineer",
    "teacher",
    "marketing coordinator",
    "graphic designer",
    "accountant",
    "barista",
    "UX researcher",
)
INDUSTRIES = split_words(
    "fintech healthcare gaming retail logistics education non-profit energy media"
)
PRODUCTS = (
    "iPhone 16",
    "Pixel 9",
    "Kindle",
    "AirPods",
    "a Dyson vacuum",
    "Notion",
    "Obsidian",
    "a Peloton",
    "Spotify",
    "a Tesla Model 3",
    "a Vitamix",
    "MacBook Air",
)
PHENOMENA = (
    "the sky look blue",
    "ice float",
    "my cat knead blankets",
    "bread go stale",
    "the moon look bigger near the horizon",
    "coffee make me sleepy",
    "my phone battery drain faster in the cold",
    "onions make you cry",
    "planes leave contrails",
    "yawning spread",
    "my sourdough not rise",
    "my tomato plant have yellow leaves",
    "the tide go out twice a day",
    "my wifi get slower at night",
    "hot water sometimes freeze faster",
    "my dog eat grass",
    "cheese get mold",
    "music give me chills",
    "my knees hurt when it rains",
    "stars twinkle",
)
RELATIONS = (
    "mom",
    "dad",
    "sister",
    "brother",
    "best friend",
    "boss",
    "grandma",
    "partner",
    "son",
    "daughter",
    "roommate",
    "coworker",
    "neighbour",
    "teacher",
)
DOC_FORMATS = (
    "a table",
    "bullet points",
    "a numbered list",
    "markdown",
    "JSON",
    "a short email",
    "two paragraphs",
    "a checklist",
    "a tweet",
)
_DETAIL = one_of(
    " I'm a {job} in {city}.",
    " My budget is about ${price}.",
    " I have {days} days.",
    " It's for my {relation} who is {age}.",
    " We are {n} people.",
    " I'm a total beginner at {topic}.",
    " I live in {city} if that matters.",
    " Format it as {format}.",
    " Mention {topic2} if relevant.",
    " (asking for my {relation})",
    " I'm {age} years old.",
    " Target audience: {level}.",
    " Context: {snippet}",
    " My deadline is in {days} days.",
    " Aim for about {n1}0 words.",
    " I already tried {howto} and it didn't help.",
    " Use examples from {industry}.",
    " Make it sound like {name} wrote it.",
    " This is attempt number {n} lol.",
    " Background: {snippet}",
    " Also, {snippet}",
    relation=RELATIONS,
    format=DOC_FORMATS,
    age=Ints(12, 85),
)
DETAIL = OneOf((Template(""), _DETAIL), (0.3, 0.7))
DETAIL2 = OneOf((Template(""), _DETAIL), (0.7, 0.3))
CLOSERS = (
    "",
    "",
    "",
    "",
    " Thanks!",
    " Keep it short.",
    " Please be concise.",
    " Use bullet points.",
    " In under 200 words.",
    " ty",
    " Make it funny.",
    " (for a school project)",
    " Thank you so much",
    " Any sources?",
    " asap pls",
)
OPENERS = (
    "",
    "",
    "",
    "",
    "",
    "Hi! ",
    "Hey, ",
    "Quick question: ",
    "Can you help me? ",
    "Please ",
    "I need help. ",
    "Hello, ",
    "ok so ",
    "Question - ",
    "I'm stuck. ",
    "Hi there, ",
    "Hey ChatGPT, ",
    "Dear assistant, ",
)

SHARED_SLOTS: dict[str, Slot] = {
    "name": NAMES,
    "name2": NAMES,
    "item": ITEMS,
    "lang": Words(LANGS, LANG_WEIGHTS),
    "lang2": Words(LANGS, LANG_WEIGHTS),
    "hlang": HUMAN_LANGS,
    "hlang2": HUMAN_LANGS,
    "city": CITIES,
    "topic": TOPICS,
    "topic2": TOPICS,
    "concept": CONCEPTS,
    "tone": TONES,
    "doc": DOCS,
    "level": LEVELS,
    "event": EVENTS,
    "snippet": SNIPPET,
    "howto": HOWTOS,
    "dish": DISHES,
    "ingredient": INGREDIENTS,
    "job": JOBS,
    "industry": INDUSTRIES,
    "product": PRODUCTS,
    "product2": PRODUCTS,
    "phenomenon": PHENOMENA,
    "n": Ints(3, 12),
    "days": Ints(2, 14),
    "n1": Ints(2, 90),
    "n2": Ints(2, 60),
    "n3": Ints(1, 30),
    "price": Ints(2, 250),
    "pct": Ints(5, 60),
    "year": Ints(1850, 2024),
    "ticket": Ints(10_000, 999_999),
}

# --------------------------------------------------------------------------- code fills

ERRORS = (
    "TypeError: 'NoneType' object is not subscriptable",
    "KeyError: 'id'",
    "IndexError: list index out of range",
    "ModuleNotFoundError: No module named 'torch'",
    "Uncaught TypeError: Cannot read properties of undefined (reading 'map')",
    "error[E0502]: cannot borrow `v` as mutable because it is also borrowed as immutable",
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "java.lang.NullPointerException",
    "segmentation fault (core dumped)",
    "SyntaxError: unexpected EOF while parsing",
    "CORS policy: No 'Access-Control-Allow-Origin'",
    "ValueError: could not convert string to float: ''",
    "RecursionError: maximum recursion depth",
    "fatal: refusing to merge unrelated histories",
    "OOMKilled",
    "ECONNREFUSED 127.0.0.1:5432",
)
CODE_TASKS = (
    "reverses a linked list",
    "parses a CSV file and sums a column",
    "debounces a function",
    "checks whether a string is a palindrome",
    "merges two sorted arrays",
    "computes the nth Fibonacci number iteratively",
    "validates an email address",
    "finds the longest common prefix of a list of strings",
    "flattens a nested list",
    "implements an LRU cache",
    "rate-limits calls with a token bucket",
    "retries an HTTP request with exponential backoff",
    "groups records by a key",
    "computes a moving average",
    "detects a cycle in a directed graph",
    "serialises a binary tree to a string",
    "finds all anagrams in a word list",
    "paginates results from a REST API",
    "converts Roman numerals to integers",
    "deduplicates rows by the latest timestamp",
    "implements binary search",
    "tokenises an arithmetic expression",
    "schedules jobs with a priority queue",
)
CODE_TASK = one_of(
    "{t}",
    "{t}, handling {edge}",
    "{t} without using {forbidden}",
    "{t} in O({cx}) time",
    "{t}; inputs can have up to {n1}000 elements",
    "{t} and returns {ret}",
    "{t} (it must also handle {edge})",
    t=CODE_TASKS,
    edge=(
        "empty input",
        "duplicate keys",
        "unicode strings",
        "negative numbers",
        "None values",
        "very large files",
        "concurrent calls",
        "timezones",
        "malformed rows",
        "network timeouts",
        "trailing whitespace",
        "nested lists",
    ),
    forbidden=(
        "recursion",
        "external libraries",
        "global state",
        "regular expressions",
        "the built-in sort",
        "classes",
    ),
    cx=("n", "n log n", "1", "log n", "n^2"),
    ret=(
        "a dict",
        "a sorted list",
        "a generator",
        "a boolean",
        "the count",
        "an error message on failure",
        "a tuple",
    ),
    weights=(0.3, 0.15, 0.1, 0.1, 0.1, 0.15, 0.1),
)
_VARS = ("xs", "items", "rows", "data", "values", "nums", "records", "users", "lines", "batch")
_FNS = split_words(
    "process handler main run_job parse_rows fetch_all compute load transform score "
    "merge_items sync"
)
CODE_SNIPPETS = one_of(
    "def {fn}({v}):\n    return [x * {n} for x in {v} if x > {n3}]",
    "for i in range(len({v})):\n    if {v}[i] == {v}[i + 1]: count += {n}",
    "const res = await fetch(`/api/{v}?page=${{p}}`);\nconst data = res.json();\n"
    "return data.{v}.map(i => i.id);",
    "SELECT {col}, COUNT(*) FROM {table} GROUP BY {col} HAVING COUNT(*) > {n};",
    "func {fn}({v} []int) int {{\n  t := 0\n  for _, x := range {v} {{ t += x * {n} }}\n"
    "  return t\n}}",
    "let mut {v} = vec![{n}, {n3}, {n1}];\nlet first = &{v}[0];\n{v}.push({n2});",
    "df = pd.read_csv('{v}.csv')\ndf['total'] = df['price'] * df['qty'] * {n}",
    "public int {fn}(int a, int b) {{ return a * {n} + b; }}",
    "while True:\n    line = f.readline()\n    if not line: break\n    {v}.append(line[{n}:])",
    "useEffect(() => {{ set{Fn}({v}.length + {n}) }}, [{v}])",
    "with open('{v}.json') as f:\n    {v} = json.load(f)\nprint({v}[{n}]['id'])",
    "async def {fn}(session, {v}):\n    return await asyncio.gather(*[session.get(u) for u in "
    "{v}[:{n1}]])",
    v=_VARS,
    fn=_FNS,
    Fn=tuple(f.title().replace("_", "") for f in _FNS),
    col=("country", "status", "user_id", "product", "day"),
    table=("orders", "events", "users", "payments"),
)
FRAMEWORKS = (
    "React",
    "Django",
    "FastAPI",
    "Spring Boot",
    "Next.js",
    "Flask",
    "pandas",
    "PyTorch",
    "Express",
    "Rails",
    "Vue",
    "Kubernetes",
    "Terraform",
    "polars",
)
CODE_HOWTOS = (
    "add authentication",
    "handle file uploads",
    "write a migration",
    "set up logging",
    "cache responses",
    "paginate a query",
    "stream a response",
    "mock a database in tests",
    "deploy to production",
    "read environment variables",
)
TOOLS_BUILD = ("webpack", "cargo", "gradle", "npm", "docker", "pip", "maven", "make")
SQL_TASKS = one_of(
    "finds the top {n} customers by revenue in {month}",
    "returns users who signed up after {month} but never placed an order",
    "computes a {n}-day rolling average of daily sales",
    "finds duplicate emails in the {table} table",
    "pivots sales by region and quarter for {year}",
    "counts orders per {col} where the total is above {price}",
    "deletes {table} rows older than {n1} days",
    "joins {table} with payments and shows unpaid invoices over ${price}",
    month=("January", "February", "March", "April", "May", "June", "last month", "last quarter"),
    table=("users", "orders", "events", "invoices", "sessions", "customers"),
    col=("country", "store", "product", "day", "sales rep"),
)
CONCEPT_PAIRS = (
    ("a list", "a tuple"),
    ("let", "const"),
    ("an interface", "an abstract class"),
    ("async", "threads"),
    ("a process", "a thread"),
    ("== ", "is"),
)

# --------------------------------------------------------------------------- math fills


def _word_problems() -> OneOf:
    return one_of(
        "{name} has {n1} {item}. {name2} gives {name} {n2} more, and then {name} gives away "
        "{n3}. How many {item} does {name} have now?",
        "A store sells {item} at ${price} each. If {name} buys {n} of them with a {pct}% "
        "discount, how much does {name} pay?",
        "A train travels {n1} km in {n} hours. At the same speed, how far does it travel in "
        "{days} hours?",
        "{name} saves ${price} a week. How many weeks until {name} can afford a bike that "
        "costs ${n1}0?",
        "There are {n1} students in a class and {pct}% of them walk to school. How many "
        "students do not walk?",
        "A rectangle has a perimeter of {n1} cm and its length is {n} cm more than its width. "
        "What is its area?",
        "{name} reads {n} pages on Monday and twice as many each following day. How many pages "
        "has {name} read after {days} days?",
        "A tank holds {n1}0 litres and leaks {n3} litres per hour. After {n} hours, what "
        "fraction of the tank is left?",
    )


WORD_PROBLEM = _word_problems()

LOGIC = one_of(
    "If all {item} are red and some red things belong to {name}, must some {item} belong to "
    "{name}?",
    "{name} is taller than {name2}, and {name2} is taller than {name3}. Who is shortest?",
    "{name} has {n} boxes labelled {item}, {item2} and mixed, and all labels are wrong. "
    "Drawing one item from one box, how do you fix the labels?",
    "A bat and a ball cost ${price}.10 in total. The bat costs ${price} more than the ball. "
    "How much is the ball?",
    "What is the next number in the sequence {n}, {n1}, {n2}, ...? Explain the rule.",
    "{name} always lies on {weekday}s and tells the truth otherwise. Today {name} says "
    "'yesterday I lied'. What day is it?",
    "In a race {name} finished ahead of {name2} but behind {name3}, and {name4} was last of "
    "{n} runners. Who could have come second?",
    "If it takes {n} machines {n} minutes to make {n} {item}, how long do {n1} machines need "
    "for {n1} {item}?",
    name3=NAMES,
    name4=NAMES,
    item2=ITEMS,
    weekday=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
)
PROB = one_of(
    "What is the probability of getting at least {n} heads in {days} coin flips?",
    "If you roll {n3} dice, what is the probability the sum is at least {n1}?",
    "A bag has {n1} red and {n2} blue balls. You draw {n3} without replacement. What is "
    "the chance they are all red?",
    "What is the probability that at least two of {n1} people share a birthday?",
    "A test is {pct}% accurate and the condition affects 1 in {n1}00 people. If {name} tests "
    "positive, how likely is it that {name} has it?",
    "{name} draws {n} cards from a standard deck. What is the chance of at least one ace?",
)
SCIENCE = one_of(
    "Why does {phenomenon}?",
    "How does {concept} work, and what is a common misconception about it?",
    "What would happen to {topic} if {concept} stopped applying?",
    "Explain the role of {concept} in {topic}.",
    "Estimate how many {item} fit in a room of {n} by {n} metres. Explain your assumptions.",
    "A ball is thrown up at {n1} m/s. How high does it go and when does it land?",
    "How much energy does it take to heat {n} litres of water by {n1} degrees?",
    "Why does {phenomenon}, and how would you test it at home?",
)
PROBLEM = OneOf((WORD_PROBLEM, LOGIC, PROB, SCIENCE), (0.5, 0.2, 0.15, 0.15))

# --------------------------------------------------------------------------- benign kinds

_CHAT_BODY = one_of(
    "write a {tone} {doc} about {topic}",
    "explain {concept} like I'm {level}",
    "what are the pros and cons of {product} vs {product2}?",
    "give me {n} ideas for {event}",
    "summarize this: {snippet}",
    "rewrite this to sound more {tone}: {snippet}",
    "how do I {howto}?",
    "plan a {days}-day trip to {city} on a budget",
    "what's a good recipe for {dish} without {ingredient}?",
    "how do you say 'where is the train station' in {hlang}?",
    "help me write a cover letter for a {job} position at a {industry} company",
    "what does {concept} mean in simple terms?",
    "create a workout plan for {n} weeks, {n3} days a week",
    "draft a {tone} message to my landlord about the heating",
    "suggest {n} names for a {industry} startup",
    "why does {phenomenon}?",
    "write a short story about {name} who finds a map in {city}",
    "give me feedback on this paragraph: {snippet}",
    "tell me {n} surprising facts about {topic}",
    "what happened in {year}?",
    "compare {topic} and {topic2} in a table",
    "I have {n1} minutes, teach me the basics of {topic}",
    "what should I read to understand {topic}?",
    "make a shopping list for {dish} for {n} people",
    "is {product} worth it in 2026?",
    "translate to {hlang}: {snippet}",
    "write a {doc} for my friend {name}'s {event}",
    "debate both sides of {topic}",
    "what's the difference between {concept} and {topic}?",
    "help me prepare questions for a {job} interview",
)
CHAT = one_of(
    "{opener}{body}{detail}{detail2}{closer}",
    "{body}{detail}",
    opener=OPENERS,
    body=_CHAT_BODY,
    detail=DETAIL,
    detail2=DETAIL2,
    closer=CLOSERS,
    weights=(0.8, 0.2),
)

_CODE_BODY = one_of(
    "Why am I getting `{error}` in my {lang} code?\n{code}",
    "Write a {lang} function that {task}.",
    "How do I {code_howto} in {framework}?",
    "Refactor this to be more readable:\n{code}",
    "Write a SQL query that {sql_task}.",
    "Convert this snippet to {lang2}:\n{code}",
    "Write unit tests for a {lang} function that {task}.",
    "My {build} build fails with '{error}'. How do I fix it?",
    "What's wrong with this code?\n{code}",
    "Explain this code line by line:\n{code}",
    "What is the time complexity of an algorithm that {task}?",
    "In {framework}, what's the idiomatic way to {code_howto}?",
    error=ERRORS,
    task=CODE_TASK,
    code=CODE_SNIPPETS,
    framework=FRAMEWORKS,
    code_howto=CODE_HOWTOS,
    build=TOOLS_BUILD,
    sql_task=SQL_TASKS,
)
_CODE_DETAIL = one_of(
    "",
    "",
    " I'm on {lang} {n}.{n3}.",
    " It worked yesterday.",
    " Using {framework} {n}.{n3}.",
    " This runs on {n1}k rows.",
    " Please explain why.",
    " No external libraries please.",
    " Keep the function name `{fn}`.",
    " The input is about {n1} MB.",
    " My teammate {name} wrote the original.",
    " Error appears after {n} requests.",
    framework=FRAMEWORKS,
    fn=("process", "handler", "main", "run_job", "parse_rows", "fetch_all", "compute", "load"),
)
CODE = one_of("{opener}{body}{detail}", body=_CODE_BODY, opener=OPENERS, detail=_CODE_DETAIL)

REASON = one_of(
    "{problem}",
    "{problem} Explain step by step.",
    "Can you walk me through this? {problem}",
    "{problem} Please show your reasoning.",
    "Solve for x: {n}x + {n1} = {n2}{n3}. Show your work.",
    "Think step by step: {problem}",
    weights=(0.3, 0.25, 0.15, 0.1, 0.1, 0.1),
    problem=PROBLEM,
)

# Company agentic coding: in-house agents wrap tasks in a system preamble.
REPOS = split_words(
    "payments-service web-frontend data-pipeline mobile-app infra auth-gateway search-api "
    "billing analytics-etl core-platform ml-training notifications"
)
FILES = split_words(
    "src/handlers/user.py app/models/order.rb pkg/cache/lru.go src/api/routes.ts "
    "services/billing/invoice.py lib/utils/dates.js cmd/server/main.go "
    "src/components/Table.tsx internal/db/migrations.sql tests/test_api.py"
)
AGENT_TOOLS = (
    "read_file, edit_file, run_tests, grep",
    "bash, str_replace, view",
    "search_code, open_file, apply_patch, run_command",
)
AGENTIC = one_of(
    "You are a coding agent working in the {repo} repository. Tools: {tools}. Task: fix the "
    "failing test in {file} ({error}).",
    "You are an autonomous software engineer. Repository: {repo}. Implement a function that "
    "{task} in {file} and make sure the tests pass.",
    "Tool result from run_tests:\n{error}\nContinue working on the task in {file}.",
    "Review this diff for bugs before merge into {repo}:\n{code}",
    "Add {code_howto} to {repo}. Start by reading {file}. Use the tools: {tools}.",
    repo=REPOS,
    file=FILES,
    tools=AGENT_TOOLS,
    error=ERRORS,
    task=CODE_TASK,
    code=CODE_SNIPPETS,
    code_howto=CODE_HOWTOS,
)

ISSUES = (
    "cannot log in after password reset",
    "double charge on last invoice",
    "export to CSV times out",
    "mobile app crashes on launch",
    "wrong tax on order",
    "webhook not firing",
    "slow dashboard",
    "missing delivery",
    "refund request",
    "API returns 500 on upload",
    "2FA code never arrives",
    "account locked",
)
CUSTOMERS = (
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Wayne Retail",
    "Hooli",
    "Vandelay Imports",
    "Soylent Foods",
    "Tyrell Labs",
)
TICKET_LINES = (
    "Customer writes that the problem started yesterday and affects all users.",
    "They already tried clearing the cache and reinstalling.",
    "This is the third time they contact us about it this month.",
    "Customer is polite but says they will cancel if not fixed this week.",
    "Screenshot attached shows an error code and a blank page.",
)


def support_tool(product: str, variant: int) -> Template:
    """A company's ticket-summarisation prompt; ``variant`` picks the house wording."""
    texts = (
        "Summarize the following support ticket in 3 bullet points and assign a priority "
        "(P1-P4).\nProduct: " + product + "\nTicket #{ticket}\nCustomer: {customer}\n"
        "Subject: {issue}\n{line}",
        "[" + product + " support] Classify this ticket into billing/technical/account and "
        "draft a short reply.\nSubject: {issue}\nFrom: {customer}\n{line}",
        "You help the " + product + " support team. Extract the product area, sentiment and "
        "urgency from ticket {ticket}: {issue}. {line}",
        "Write a polite first response to a " + product + " customer reporting: {issue}. "
        "Ticket {ticket}. Context: {line}",
    )
    return Template(
        texts[variant % len(texts)],
        {
            "customer": CUSTOMERS,
            "issue": ISSUES,
            "line": one_of("{l}", "{l} {snippet}", "{snippet}", l=TICKET_LINES),
        },
    )


# Heavy applications: one account pushing a product feature's prompt template.
REVIEWS = one_of(
    "{opening} The {aspect} is {verdict}. {closing}",
    "{opening} {closing}",
    "The {aspect} is {verdict} but the {aspect2} is {verdict2}.",
    "Bought it for my {relation}. {opening} {closing}",
    opening=(
        "Arrived on time.",
        "Arrived late and the box was damaged.",
        "Exactly as described.",
        "Not what I expected.",
        "Second one I bought.",
        "Gift for a friend.",
        "Customer service never answered my emails.",
        "Used it for {n} weeks now.",
        "Five stars, fast shipping!",
        "Meh.",
    ),
    aspect=(
        "battery",
        "screen",
        "price",
        "size",
        "sound",
        "build quality",
        "app",
        "smell",
        "colour",
        "delivery",
        "manual",
        "fit",
    ),
    aspect2=("battery", "screen", "price", "size", "sound", "build quality", "app", "fit"),
    verdict=(
        "great",
        "terrible",
        "okay",
        "better than expected",
        "a bit flimsy",
        "way too small",
        "gorgeous",
        "disappointing",
        "exactly right",
    ),
    verdict2=("great", "terrible", "okay", "disappointing", "fine"),
    closing=(
        "Would buy again.",
        "Returning it.",
        "Recommended.",
        "Not worth ${price}.",
        "Stopped working after {n} days.",
        "Does the job.",
        "Love it!",
        "Two stars.",
        "Would not recommend to {relation}s.",
    ),
    relation=RELATIONS,
)
INVOICE_LINES = (
    "Invoice INV-{n1}{n2} dated 2026-02-{n3}, total EUR {price}.{n1}",
    "Bill to {customer}, PO {ticket}, amount due ${price}.00",
    "Receipt {ticket}: {n} items, VAT {pct}%, paid by card",
)


def app_template(kind: int, app_name: str) -> Template:
    """Template of a high-volume product feature (translation, labelling, extraction)."""
    texts = (
        "Translate the following text from English to {hlang}. Only output the translation."
        "\n\n{snippet}",
        "Classify the sentiment of this review as positive, negative or neutral. Reply with "
        "one word.\nReview: {review}",
        "Extract vendor, date, total and currency as JSON from: " + "{invoice}",
        "Rewrite this product title for SEO (max 60 chars): {product} {item} pack of {n}",
        "[" + app_name + '] Label the intent of the user message: "{howto}". Options: '
        "question, complaint, purchase, other.",
        "Summarise this news paragraph in one sentence for the " + app_name + " digest: {snippet}",
    )
    return Template(
        texts[kind % len(texts)],
        {"review": REVIEWS, "invoice": one_of(*INVOICE_LINES, customer=CUSTOMERS)},
    )


# --------------------------------------------------------------------------- coursework

COURSES = ("CS101", "CS240", "MATH221", "STAT250", "PHYS150", "ECON200", "CHEM110", "BIO120")


@cache
def course_questions(campus: int) -> tuple[tuple[str, ...], ...]:
    """Fixed assignment questions per course of one campus: every student of a course sees
    the same text."""
    rng = np.random.default_rng([20_260_901, campus])
    per_course = []
    for course in COURSES:
        if course.startswith("CS"):
            gen: PromptGen = one_of(
                course + " Assignment {n3}: Write a {lang} function that {task}. Explain "
                "its time complexity.",
                course + " Lab {n3}: What does this code print and why?\n{code}",
                task=CODE_TASKS,
                code=CODE_SNIPPETS,
            )
        elif course.startswith(("MATH", "STAT", "PHYS")):
            gen = one_of(
                course + " Problem Set {n3}, Q{n}: {problem}",
                course + " HW{n3}: {problem} Justify each step.",
                problem=PROBLEM,
            )
        else:
            gen = one_of(
                course + " Essay prompt {n3}: Discuss the role of {concept} in {topic} "
                "(800 words).",
                course + " Quiz {n3}: Explain {concept} and give two real-world examples.",
            )
        per_course.append(tuple(gen(rng, 10).to_list()))
    return tuple(per_course)


def assignment(campus: int, course: int) -> PromptGen:
    """Student prompts about one course's assignments: pasted as is or wrapped."""
    questions = course_questions(campus)[course]
    return one_of(
        "{q}",
        "{q} Explain step by step.",
        "Can you help me with this homework question? {q}",
        "{q} I don't understand how to start.",
        "check my answer: {q} I got {n1}.",
        weights=(0.35, 0.3, 0.15, 0.1, 0.1),
        q=questions,
    )


# --------------------------------------------------------------------------- benchmarks

BENCHMARKS = ("gsm-mini", "mmlu-lite", "humaneval-x")


@cache
def benchmark_suites() -> tuple[pl.Series, ...]:
    """Fixed public benchmark prompt sets, identical for every user and every run."""
    rng = np.random.default_rng(8_675_309)
    gsm = Template(
        "Question: {q}\nAnswer with a number. Let's think step by step.", {"q": WORD_PROBLEM}
    )(rng, 250)
    mmlu = Template(
        "The following is a multiple choice question about {subject}.\n{q}\n"
        "A. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:",
        {
            "subject": (
                "high school physics",
                "college biology",
                "econometrics",
                "world history",
                "computer security",
                "formal logic",
                "professional law",
                "nutrition",
                "astronomy",
                "moral scenarios",
            ),
            "q": SCIENCE,
            "a": CONCEPTS,
            "b": CONCEPTS,
            "c": TOPICS,
            "d": TOPICS,
        },
    )(rng, 300)
    human = Template(
        'def solution_{n1}(xs):\n    """Return a function result that {task}.\n    >>> '
        'solution_{n1}([{n}, {n3}])\n    """\n',
        {"task": CODE_TASKS},
    )(rng, 164)
    return tuple(s.unique(maintain_order=True) for s in (gsm, mmlu, human))


# --------------------------------------------------------------------------- attack kinds

RUBRICS = (
    "correctness (0-4), completeness (0-3), clarity (0-3)",
    "factual accuracy, reasoning quality, helpfulness, harmlessness",
    "1 = wrong, 5 = partially right, 10 = fully correct with justification",
    "relevance, depth of reasoning, code quality, test coverage",
)
ANSWERS = (
    "The answer is {n1} because the totals add up.",
    "x = {n}",
    "It depends on {concept}.",
    "{name} has {n2} {item} left.",
    "The function runs in O(n log n).",
    "Option C",
    "I think it's {n3}%.",
)
FUNCTION_SETS = (
    "get_weather(city), book_flight(origin, dest, date), convert_currency(amount, from, to)",
    "search_products(query, max_price), add_to_cart(id, qty), checkout()",
    "create_event(title, start, end), list_events(day), send_email(to, subject, body)",
    "sql_query(statement), plot(x, y, kind), export_csv(table)",
)
USER_REQUESTS = (
    "book me a flight from {city} to Tokyo next friday",
    "what's the weather in {city}?",
    "find {item} under ${price} and buy {n}",
    "schedule a call with {name} tomorrow at {n}pm",
    "plot revenue by month for {year}",
    "email {name} the summary of {topic}",
)


def _cot_wordings() -> tuple[str, ...]:
    return (
        "Solve the following problem. Think step by step and show your full reasoning before "
        "giving the final answer.\n\nProblem: {problem}",
        "{problem}\n\nLet's think step by step. Show every intermediate step of your "
        "reasoning in detail, then state the final answer on its own line.",
        "Reason carefully through this task and write out your complete chain of thought, "
        "including any dead ends: {problem}",
        "Q: {problem}\nA: Let's work this out in a step by step way to be sure we have the "
        "right answer. Show all reasoning.",
        "Explain your reasoning in full detail, step by step, as a teacher would. Task #{ticket}"
        ": {problem}",
        "Provide a detailed, numbered step-by-step solution with your full reasoning.\n{problem}",
    )


def _rubric_wordings() -> tuple[str, ...]:
    return (
        "Grade this answer against the rubric ({rubric}). Question: {problem} Answer: {answer}"
        " Score 1-10 and justify each criterion.",
        "You are an expert grader. Rubric: {rubric}.\nQuestion: {problem}\nCandidate answer: "
        "{answer}\nGive a score from 1-10 with detailed reasoning.",
        "Evaluate response #{ticket} using the rubric [{rubric}]. Response: {answer} "
        "(question: {problem}). Output JSON with score and rationale.",
        "Compare the answer to the rubric and explain, step by step, why it deserves its score "
        "(1-10).\nRubric: {rubric}\nAnswer: {answer}\nQuestion: {problem}",
    )


def _agent_wordings() -> tuple[str, ...]:
    return (
        "You are a coding agent. You can call tools: {tools}. Task: write a {lang} function "
        "that {task}. Think out loud, then emit tool calls as JSON.",
        "You are a coding agent working on task {ticket}: {task} ({lang}). Plan first, then "
        "make tool calls ({tools}), then output the final patch.",
        "Act as an autonomous software engineer. Implement code that {task} in {lang}. Show "
        "your full reasoning and every tool call.\n{code}",
        "Agent trajectory request #{ticket}. Goal: {task}. Language: {lang}. Available tools: "
        "{tools}. Produce a complete step-by-step trajectory with tool calls and results.",
    )


def _tool_wordings() -> tuple[str, ...]:
    return (
        "You can call the following functions: {functions}. User request: {request}. Return "
        "the function call as JSON, then explain your choice.",
        "Functions available: {functions}.\nUser: {request}\nRespond with the exact tool call "
        "sequence and reasoning for each call.",
        "Given the tools [{functions}], decide which to call for: '{request}'. Think step by "
        "step and output JSON.",
    )


_ATTACK_SLOTS: dict[str, Slot] = {
    "problem": PROBLEM,
    "rubric": RUBRICS,
    "answer": one_of(*ANSWERS),
    "tools": AGENT_TOOLS,
    "task": CODE_TASK,
    "code": CODE_SNIPPETS,
    "functions": FUNCTION_SETS,
    "request": one_of(*USER_REQUESTS),
}
ATTACK_FAMILIES: dict[str, Callable[[], tuple[str, ...]]] = {
    "cot": _cot_wordings,
    "rubric": _rubric_wordings,
    "agentic": _agent_wordings,
    "tool": _tool_wordings,
}


def attack_generator(family: str, rng: np.random.Generator, n_wordings: int = 2) -> OneOf:
    """An operator's templates for one capability family: a few fixed wordings with fills."""
    wordings = ATTACK_FAMILIES[family]()
    chosen = rng.choice(len(wordings), size=min(n_wordings, len(wordings)), replace=False)
    return OneOf(tuple(Template(wordings[i], _ATTACK_SLOTS) for i in sorted(chosen)))


# --------------------------------------------------------------------------- kinds and tokens


@dataclass(frozen=True)
class TokenProfile:
    """Lognormal context and completion sizes (medians in tokens) for one prompt kind."""

    context: float
    context_sigma: float
    output: float
    output_sigma: float


TOKENS: dict[str, TokenProfile] = {
    "chat": TokenProfile(120, 1.2, 350, 0.8),
    "code": TokenProfile(600, 1.2, 500, 0.8),
    "reason": TokenProfile(80, 1.0, 650, 0.7),
    "assignment": TokenProfile(150, 0.8, 600, 0.7),
    "agentic": TokenProfile(6000, 0.9, 900, 0.8),
    "support": TokenProfile(700, 0.6, 180, 0.4),
    "app": TokenProfile(60, 0.6, 80, 0.6),
    "benchmark": TokenProfile(20, 0.3, 450, 0.6),
    "atk_cot": TokenProfile(40, 0.5, 1400, 0.5),
    "atk_rubric": TokenProfile(300, 0.5, 900, 0.4),
    "atk_agentic": TokenProfile(2500, 0.6, 1800, 0.5),
    "atk_tool": TokenProfile(500, 0.5, 700, 0.5),
}
#: Completion length multiplier per model (index as in config.MODELS).
MODEL_OUTPUT_FACTOR = np.array([1.0, 0.7, 2.1, 1.25])
