"""GraphML and GEXF text of a graph, generated as it is written.

networkx's writers build the whole document as an element tree before the
first byte is written: for the account graph of a large run (0.7 million
links) that costs half a minute and gigabytes, and the texts must first be
made XML-safe in a copy of the graph. These generators walk the graph once
and give the same bytes networkx's ElementTree writers give for that copy
(tests compare the two). They cover what graphs of this package hold: an
undirected simple graph whose node ids and attribute names are text and whose
attribute values (the graph's too) are ``str``, ``int``, ``float`` or ``bool``.
For any other graph they return None and the caller uses networkx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import chain
from typing import Any

import networkx as nx
from networkx.readwrite.gexf import GEXF
from networkx.readwrite.graphml import GraphML

# Characters XML 1.0 cannot carry (user agents are attacker-controlled text)
# become U+FFFD; then ElementTree's escaping of text and of attribute values.
_INVALID_CODES = (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF)
_INVALID = dict.fromkeys(_INVALID_CODES, "\ufffd")
_TEXT = str.maketrans({**_INVALID, "&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans(
    {
        **_INVALID,
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\r": "&#13;",
        "\n": "&#10;",
        "\t": "&#09;",
    }
)

_TYPES = (str, int, float, bool)


def _any_of(table: dict[int, str]) -> re.Pattern[str]:
    """A pattern of the characters a translation ``table`` changes."""
    return re.compile("[" + re.escape("".join(map(chr, table))) + "]")


_INVALID_CHAR = _any_of(_INVALID)
_TEXT_SPECIAL = _any_of(_TEXT)
_ATTR_SPECIAL = _any_of(_ATTR)
_DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"
_BATCH = 20_000
"""Elements joined into one piece of text at a time."""

# GEXF: keys networkx's writer makes XML attributes of the element (written
# here too), and keys it gives another meaning, not written here (ids, parents,
# times, layout, and ``key``, which it renames).
_GEXF_OWN = {"node": ("label",), "edge": ("label", "weight", "type")}
_GEXF_SPECIAL = dict.fromkeys(
    ("node", "edge"),
    frozenset({"id", "key", "pid", "start", "end", "parents", "spells", "slices", "viz"}),
)


def _xml_types(kind: type) -> dict[type, str]:
    """networkx's XML type names of the plain Python types (``long``, ``double``, ...)."""
    spec = kind()
    spec.construct_types()
    return {t: spec.xml_type[t] for t in _TYPES}


_GRAPHML_TYPE = _xml_types(GraphML)
_GEXF_TYPE = _xml_types(GEXF)


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry replaced by U+FFFD."""
    return text.translate(_INVALID)


def _attr(value: str) -> str:
    return value.translate(_ATTR) if _ATTR_SPECIAL.search(value) else value


def _text(value: str) -> str:
    return value.translate(_TEXT) if _TEXT_SPECIAL.search(value) else value


def _plain_name(name: Any) -> bool:
    return type(name) is str and _INVALID_CHAR.search(name) is None


def _attribute_sets(graph: nx.Graph) -> Iterator[tuple[str, dict[Any, Any]]]:
    """``(scope, attributes)`` of the graph, each node and each edge, in the order
    networkx's writers meet them."""
    yield "graph", graph.graph
    for _n, data in graph.nodes(data=True):
        yield "node", data
    for _u, _v, data in graph.edges(data=True):
        yield "edge", data


def _plain_ids(graph: nx.Graph) -> bool:
    """An undirected simple graph whose node ids are text, none turned into another by
    the XML-safe replacement (networkx's writers would get the copy's merged node)."""
    if type(graph) is not nx.Graph or not all(type(n) is str for n in graph):
        return False
    unsafe = [n for n in graph if _INVALID_CHAR.search(n)]
    if not unsafe:
        return True
    safe = {xml_safe(n) for n in unsafe}
    return len(safe) == len(unsafe) and not any(n in graph for n in safe)


def _element(head: str, tag: str, children: list[str], level: int) -> str:
    """An element with ``children`` (already indented for their level), as ElementTree
    writes it after networkx's indenting: ``<head />`` when it has none."""
    if not children:
        return f"<{head} />"
    inner = "\n" + "  " * (level + 1)
    return f"<{head}>{inner}{inner.join(children)}\n{'  ' * level}</{tag}>"


def _streamed(head: str, tag: str, children: Iterator[str], level: int) -> Iterator[str]:
    """:func:`_element` in pieces, for children made as they are written: joined a
    batch of ``_BATCH`` at a time."""
    first = next(children, None)
    if first is None:
        yield f"<{head} />"
        return
    inner = "\n" + "  " * (level + 1)
    yield f"<{head}>"
    batch = [first]
    for child in children:
        if len(batch) == _BATCH:
            yield inner + inner.join(batch)
            batch = []
        batch.append(child)
    yield inner + inner.join(batch)
    yield f"\n{'  ' * level}</{tag}>"


def graphml_text(graph: nx.Graph) -> Iterator[str] | None:
    """The GraphML document of ``graph`` in pieces, as ``nx.write_graphml_xml`` writes the
    graph with its texts made XML-safe; None when the graph is not plain (see the module)."""
    if not _plain_ids(graph) or {"id", "node_default", "edge_default"} & set(graph.graph):
        return None
    # Keys are numbered as networkx meets them: the graph's attributes, then each
    # node's, then each edge's; one per name, type and scope.
    keys: dict[tuple[str, type, str], str] = {}
    for scope, data in _attribute_sets(graph):
        for name, value in data.items():
            key = (name, type(value), scope)
            if key not in keys:
                if not _plain_name(name) or key[1] not in _TYPES:
                    return None
                keys[key] = f"d{len(keys)}"
    return _graphml_pieces(graph, keys)


def _graphml_pieces(graph: nx.Graph, keys: dict[tuple[str, type, str], str]) -> Iterator[str]:
    def data(scope: str, values: dict[str, Any]) -> list[str]:
        out = []
        for name, value in values.items():
            # (numbers and booleans need no escaping)
            text = _text(value) if type(value) is str else str(value)
            key = keys[(name, type(value), scope)]
            out.append(f'<data key="{key}">{text}</data>' if text else f'<data key="{key}" />')
        return out

    def node(n: str, values: dict[str, Any]) -> str:
        return _element(f'node id="{_attr(n)}"', "node", data("node", values), 2)

    def edge(u: str, v: str, values: dict[str, Any]) -> str:
        head = f'edge source="{_attr(u)}" target="{_attr(v)}"'
        return _element(head, "edge", data("edge", values), 2)

    root = (
        f'<graphml xmlns="{_attr(GraphML.NS_GRAPHML)}" xmlns:xsi="{_attr(GraphML.NS_XSI)}" '
        f'xsi:schemaLocation="{_attr(GraphML.SCHEMALOCATION)}">'
    )
    key_lines = [
        f'<key id="{key}" for="{scope}" attr.name="{_attr(name)}" '
        f'attr.type="{_GRAPHML_TYPE[kind]}" />'
        for (name, kind, scope), key in reversed(keys.items())
    ]
    yield _DECLARATION + root + "\n  " + "".join(line + "\n  " for line in key_lines)
    # Nodes, edges, then the graph's own data, as networkx appends them.
    children = chain(
        (node(n, d) for n, d in graph.nodes(data=True)),
        (edge(u, v, d) for u, v, d in graph.edges(data=True)),
        data("graph", graph.graph),
    )
    yield from _streamed('graph edgedefault="undirected"', "graph", children, 1)
    yield "\n</graphml>\n"


def gexf_text(graph: nx.Graph) -> Iterator[str] | None:
    """The GEXF 1.2 document of ``graph`` in pieces, as ``nx.generate_gexf`` gives the
    graph with its texts made XML-safe, without the "last modified" date and with
    characters past ASCII as character references; None when the graph is not plain
    or uses the keys GEXF gives a meaning (ids, times, layout)."""
    title = graph.graph.get("name", "")
    if (
        not _plain_ids(graph)
        or type(title) is not str
        or graph.graph.get("mode") == "dynamic"
        or {"node_default", "edge_default"} & set(graph.graph)
    ):
        return None
    # Attributes are numbered as networkx meets them, nodes' before edges', one
    # per name and class: the first value's type is the attribute's.
    attrs: dict[str, dict[str, tuple[str, type]]] = {"node": {}, "edge": {}}
    checked: set[tuple[str, type, str]] = set()
    count = 0
    for scope, data in _attribute_sets(graph):
        for name, value in data.items():
            key = (name, type(value), scope)
            if key in checked:
                continue
            if not _plain_name(name) or key[1] not in _TYPES:
                return None
            checked.add(key)
            if scope == "graph" or name in _GEXF_OWN[scope]:
                continue
            if name in _GEXF_SPECIAL[scope]:
                return None
            if name not in attrs[scope]:
                attrs[scope][name] = (str(count), key[1])
                count += 1
    return _gexf_pieces(graph, attrs)


def _gexf_value(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    text = str(value)
    if type(value) is float:
        return {"inf": "INF", "nan": "NaN", "-inf": "-INF"}.get(text, text)
    return text


def _gexf_pieces(graph: nx.Graph, attrs: dict[str, dict[str, tuple[str, type]]]) -> Iterator[str]:
    spec = GEXF()
    spec.set_version("1.2draft")  # (generate_gexf's: its namespace, schema and version)

    def ascii_attr(text: str) -> str:
        return _attr(text).encode("ascii", "xmlcharrefreplace").decode("ascii")

    def attvalues(cls: str, values: dict[str, Any], skip: tuple[str, ...]) -> list[str]:
        ids = attrs[cls]
        out = [
            f'<attvalue for="{ids[name][0]}" value="{ascii_attr(_gexf_value(value))}" />'
            for name, value in values.items()
            if name not in skip
        ]
        return [_element("attvalues", "attvalues", out, 4)] if out else []

    def node(n: str, values: dict[str, Any]) -> str:
        label = values.get("label", n)
        head = f'node id="{ascii_attr(n)}" label="{ascii_attr(str(label))}"'
        return _element(head, "node", attvalues("node", values, _GEXF_OWN["node"]), 3)

    edge_own = _GEXF_OWN["edge"]

    def edge(number: int, u: str, v: str, values: dict[str, Any]) -> str:
        head = f'edge source="{ascii_attr(u)}" target="{ascii_attr(v)}" id="{number}"'
        for name in edge_own:
            if name in values:
                head += f' {name}="{ascii_attr(str(values[name]))}"'
        return _element(head, "edge", attvalues("edge", values, edge_own), 3)

    name = ascii_attr(str(graph.graph.get("name", "")))
    creator = f"NetworkX {nx.__version__}".translate(_TEXT)
    yield (
        _DECLARATION
        + f'<gexf xmlns="{ascii_attr(spec.NS_GEXF)}" xmlns:xsi="{ascii_attr(spec.NS_XSI)}" '
        f'xsi:schemaLocation="{ascii_attr(spec.SCHEMALOCATION)}" '
        f'version="{ascii_attr(spec.VERSION)}">\n'
        f"  <meta>\n    <creator>{creator}</creator>\n  </meta>\n"
        f'  <graph defaultedgetype="undirected" mode="static" name="{name}">\n'
    )
    for cls in ("edge", "node"):  # (each inserted first when it is made: edges' on top)
        if attrs[cls]:
            lines = [
                f'<attribute id="{key}" title="{ascii_attr(title)}" type="{_GEXF_TYPE[kind]}" />'
                for title, (key, kind) in attrs[cls].items()
            ]
            head = f'attributes mode="static" class="{cls}"'
            yield "    " + _element(head, "attributes", lines, 2) + "\n"
    for tag, items in (
        ("nodes", (node(n, d) for n, d in graph.nodes(data=True))),
        ("edges", (edge(k, u, v, d) for k, (u, v, d) in enumerate(graph.edges(data=True)))),
    ):
        yield "    "
        yield from _streamed(tag, tag, items, 2)
        yield "\n"
    yield "  </graph>\n</gexf>\n"
