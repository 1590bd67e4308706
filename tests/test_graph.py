"""The account graph: GraphML and GEXF round trips, --cluster, --bipartite, errors."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from distill_forensics.cli.graph import graph
from distill_forensics.errors import EXIT_INPUT, InputError
from distill_forensics.graph import (
    SHARED_PER_KIND,
    VALUE_KINDS,
    _gexf_bytes,
    _xml_safe,
    build_graph,
    write_graph,
)
from distill_forensics.pipeline import ClusterResult, run_cluster
from distill_forensics.score import MEANINGFUL_LINK
from distill_forensics.xmlgraph import gexf_text, graphml_text

ROOT = Path(__file__).resolve().parent.parent
LOGS = str(ROOT / "sample_logs" / "logs.parquet")
ACCOUNTS = str(ROOT / "sample_logs" / "accounts.parquet")

ACCOUNT_ATTRS = {
    "type": str,
    "label": str,
    "cluster_id": str,
    "rank": int,
    "score": float,
    "suspected": bool,
    "n_requests": int,
    "org_id": str,
}
BIPARTITE_ATTRS = {**ACCOUNT_ATTRS, "kind": str, "n_accounts": int}
EDGE_ATTRS = {"relation": str, "weight": float, "kinds": str, "same_org": bool, "shared": str}
READERS = {".graphml": nx.read_graphml, ".gexf": nx.read_gexf}


@pytest.fixture(scope="module")
def result() -> ClusterResult:
    return run_cluster(LOGS, ACCOUNTS)


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch, result: ClusterResult) -> ClusterResult:
    """The command reuses the module's run instead of running the pipeline again."""
    monkeypatch.setattr(
        sys.modules["distill_forensics.cli.sources"], "run_cluster", lambda *a, **k: result
    )
    return result


def _invoke(*args: str):
    return CliRunner().invoke(graph, [LOGS, "--accounts", ACCOUNTS, *args])


def _top_cluster(result: ClusterResult) -> str:
    return str(result.suspected.get_column("cluster_id")[0])


def _assert_attrs(g: nx.Graph, node_attrs: dict[str, type]) -> None:
    for node, data in g.nodes(data=True):
        for name, kind in node_attrs.items():
            assert type(data.get(name)) is kind, (node, name, data.get(name))
    for u, v, data in g.edges(data=True):
        for name, kind in EDGE_ATTRS.items():
            assert type(data.get(name)) is kind, (u, v, name, data.get(name))


def test_graphml_from_the_command_loads_back_with_every_attribute(tmp_path, result):
    out = tmp_path / "net.graphml"
    run = _invoke("-o", str(out), "--quiet")
    assert run.exit_code == 0, run.output
    assert run.output == ""
    g = nx.read_graphml(out)
    _assert_attrs(g, ACCOUNT_ATTRS)
    assert set(g.nodes) == set(result.members.get_column("account_id"))
    assert g.number_of_edges() > 0
    assert {d["relation"] for _, _, d in g.edges(data=True)} == {"link"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.graphml"]


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_bipartite_cluster_round_trips_in_both_formats(tmp_path, cached, suffix):
    out = tmp_path / f"c{suffix}"
    run = _invoke("-o", str(out), "--cluster", _top_cluster(cached), "--bipartite")
    assert run.exit_code == 0, run.output
    g = READERS[suffix](out)
    _assert_attrs(g, BIPARTITE_ATTRS)
    assert {d["type"] for _, d in g.nodes(data=True)} == {"account", "value"}
    assert {d["relation"] for _, _, d in g.edges(data=True)} == {"link", "uses"}


def test_cluster_restricts_to_its_members_and_their_links(cached):
    cid = _top_cluster(cached)
    g = build_graph(cached, cluster_id=cid)
    members = set(
        cached.members.filter(pl.col("cluster_id") == cid).get_column("account_id").to_list()
    )
    assert set(g.nodes) == members
    assert {d["cluster_id"] for _, d in g.nodes(data=True)} == {cid}
    inside = cached.links.edges.filter(pl.col("a").is_in(members) & pl.col("b").is_in(members))
    assert g.number_of_edges() == inside.height
    assert all(u in members and v in members for u, v in g.edges)


def test_edges_carry_their_kinds_and_only_values_both_accounts_used(cached):
    g = build_graph(cached, cluster_id=_top_cluster(cached))
    usage = cached.evidence.usage
    edges = cached.links.edges
    for u, v, data in list(g.edges(data=True))[:40]:
        a, b = sorted((u, v))
        row = edges.filter((pl.col("a") == a) & (pl.col("b") == b)).row(0, named=True)
        want = [c[2:] for c in sorted(edges.columns) if c.startswith("w_")]
        assert data["kinds"] == ",".join(k for k in want if row[f"w_{k}"] >= MEANINGFUL_LINK)
        assert data["shared"], (u, v)
        per_kind: dict[str, int] = {}
        for item in data["shared"].split("; "):
            kind, value = item.split("=", 1)
            per_kind[kind] = per_kind.get(kind, 0) + 1
            users = usage.filter((pl.col("kind") == kind) & (pl.col("value") == value))
            assert {u, v} <= set(users.get_column("account_id").to_list()), item
        assert max(per_kind.values()) <= SHARED_PER_KIND


def test_shared_values_are_the_rarest_of_each_kind_both_used(cached):
    g = build_graph(cached)
    usage = cached.evidence.usage.filter(pl.col("kind").is_in(VALUE_KINDS)).select(
        "account_id", "kind", "value"
    )
    rarity = cached.links.value_stats.select("kind", "value", "n_accounts")
    checked = capped = 0
    for u, v, data in sorted(g.edges(data=True))[::25]:
        mine = usage.filter(pl.col("account_id") == u).drop("account_id")
        theirs = usage.filter(pl.col("account_id") == v).drop("account_id")
        both = (
            mine.join(theirs, on=["kind", "value"])
            .join(rarity, on=["kind", "value"], how="left")
            .sort("kind", "n_accounts", "value", nulls_last=True)
        )
        listed = both.group_by("kind", maintain_order=True).head(SHARED_PER_KIND)
        want = "; ".join(f"{k}={x}" for k, x in listed.select("kind", "value").iter_rows())
        assert data["shared"] == want, (u, v)
        checked += 1
        capped += listed.height < both.height
    assert checked > 20 and capped  # (some pairs share more than are listed)


def test_bipartite_value_nodes_join_the_accounts_that_used_them(cached):
    cid = _top_cluster(cached)
    g = build_graph(cached, cluster_id=cid, bipartite=True)
    values = [n for n, d in g.nodes(data=True) if d["type"] == "value"]
    assert values
    for node in values:
        data = g.nodes[node]
        assert node.startswith(data["kind"] + ":")
        neighbours = list(g.neighbors(node))
        assert data["n_accounts"] == len(neighbours) >= 2
        assert all(g.nodes[n]["type"] == "account" for n in neighbours)
    plain = build_graph(cached, cluster_id=cid)
    assert set(plain.nodes) == {n for n, d in g.nodes(data=True) if d["type"] == "account"}


def test_unknown_cluster_exits_2_with_one_line(tmp_path, cached):
    out = tmp_path / "net.graphml"
    run = _invoke("-o", str(out), "--cluster", "C-0000000000")
    assert run.exit_code == EXIT_INPUT
    assert run.output.count("\n") == 1
    assert run.output.startswith("error: --cluster C-0000000000: no such cluster")
    assert "distill-forensics cluster" in run.output
    assert not out.exists()


def test_a_graph_over_max_edges_is_refused_before_it_is_built(tmp_path, cached):
    cid = _top_cluster(cached)
    size = build_graph(cached, cluster_id=cid, bipartite=True).number_of_edges()
    out = tmp_path / "c.gexf"
    run = _invoke("-o", str(out), "--cluster", cid, "--bipartite", "--max-edges", str(size - 1))
    assert run.exit_code == EXIT_INPUT and run.output.count("\n") == 1
    assert run.output.startswith(
        f"error: the graph of cluster {cid} has {size:,} edges with --bipartite, "
        f"more than --max-edges {size - 1:,}"
    )
    assert not out.exists()
    run = _invoke("-o", str(out), "--cluster", cid, "--bipartite", "--max-edges", str(size))
    assert run.exit_code == 0 and out.exists()


def test_threshold_decides_which_nodes_are_suspected(tmp_path, result):
    below = result.clusters.filter(pl.col("score").is_between(10, 50, closed="left"))
    cid = str(below["cluster_id"][0])

    def suspected(*extra: str) -> set[bool]:
        out = tmp_path / "c.graphml"
        run = _invoke("-o", str(out), "--cluster", cid, "-q", *extra)
        assert run.exit_code == 0, run.output
        return {data["suspected"] for _, data in nx.read_graphml(out).nodes(data=True)}

    assert suspected() == {False}
    assert suspected("--threshold", "10") == {True}


def test_unknown_file_type_fails_before_the_run(tmp_path, monkeypatch):
    def never(*_a, **_k):
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(sys.modules["distill_forensics.cli.sources"], "run_cluster", never)
    run = _invoke("-o", str(tmp_path / "net.dot"))
    assert run.exit_code == EXIT_INPUT
    assert run.output == (
        f"error: {tmp_path / 'net.dot'}: unknown graph file type '.dot'; "
        "name it with .graphml or .gexf\n"
    )


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_same_graph_same_bytes(tmp_path, cached, suffix):
    g = build_graph(cached, cluster_id=_top_cluster(cached), bipartite=True)
    write_graph(g, tmp_path / f"one{suffix}")
    write_graph(
        build_graph(cached, cluster_id=_top_cluster(cached), bipartite=True),
        tmp_path / f"two{suffix}",
    )
    assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"two{suffix}").read_bytes()


def test_text_xml_cannot_carry_is_replaced(tmp_path):
    g = nx.Graph()
    g.add_node("a\x00b", label="ua\x1b[31m", rank=1)
    g.add_edge("a\x00b", "c", shared="ua=x\x07y", weight=1.0)
    for suffix, read in READERS.items():
        write_graph(g, tmp_path / f"g{suffix}")
        back = read(tmp_path / f"g{suffix}")
        assert back.nodes["a\ufffdb"]["label"] == "ua\ufffd[31m"
        assert back.edges["a\ufffdb", "c"]["shared"] == "ua=x\ufffdy"


def test_missing_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_graph(nx.Graph(), tmp_path / "no" / "net.graphml")


def test_help_has_examples():
    assert graph.help and "Example" in graph.help


# Text that exercises every escape and the XML-safe replacement, beside plain text.
_NASTY = ["a", "Z", "&", "<", ">", '"', "'", "\n", "\r", "\t", " ", "é", "漢", "\x00", "\x07"]
_NASTY += ["\x0b", "\x1b", "\ufffe", "\x85", "\u2028", "🙂", "=", ";", "\ufffd"]
# Names networkx's writers treat apart (GEXF's ids, labels, times and layout, GraphML's
# graph id), seldom, beside ordinary ones.
_NAMES = ["type", "label", "rank", "w", "x y", "shared", "weight", "kinds", "a&b"]
_SPECIAL = ["id", "key", "networkx_key", "pid", "start", "end", "mode", "\x01"]


def _random_graph(rng: random.Random) -> nx.Graph:
    def text(n: int = 6) -> str:
        return "".join(rng.choice(_NASTY) for _ in range(rng.randint(0, n)))

    def value() -> object:
        return rng.choice(
            [
                text(),
                rng.randint(-5, 10**12),
                rng.random() * 10 ** rng.randint(-3, 9),
                rng.random() < 0.5,
                float(rng.choice(["inf", "nan", "-inf"])),
            ]
        )

    names = _NAMES + (_SPECIAL if rng.random() < 0.1 else [])

    def attrs() -> dict[str, object]:
        return {k: value() for k in rng.sample(names, rng.randint(0, 5))}

    g = nx.Graph()
    if rng.random() < 0.8:
        g.graph["name"] = text()
    if rng.random() < 0.05:
        g.graph[rng.choice(["id", "mode"])] = rng.choice(["dynamic", "static"])
    if rng.random() < 0.05:
        g.graph["other"] = value()
    # Short ids collide, some only once made XML-safe ("a\x00" and "a\ufffd").
    ids = sorted({text(2) + (str(i) if rng.random() < 0.8 else "") for i in range(12)})
    for node in rng.sample(ids, rng.randint(0, len(ids))):
        g.add_node(node, **attrs())
    nodes = list(g)
    for _ in range(rng.randint(0, 20) if nodes else 0):
        g.add_edge(rng.choice(nodes), rng.choice(nodes), **attrs())
    return g


def _networkx_bytes(g: nx.Graph, suffix: str) -> bytes:
    """What networkx's own writers give for the graph with its text made XML-safe."""
    safe = _xml_safe(g)
    if suffix == ".gexf":
        return _gexf_bytes(safe)
    out = io.BytesIO()
    nx.write_graphml_xml(safe, out)
    return out.getvalue()


_FAST = {".graphml": graphml_text, ".gexf": gexf_text}


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_files_are_networkx_writers_bytes_for_random_graphs(tmp_path, suffix):
    rng = random.Random(7)
    fast = 0
    for n in range(400):
        g = _random_graph(rng)
        fast += _FAST[suffix](g) is not None
        write_graph(g, tmp_path / f"g{suffix}")
        assert (tmp_path / f"g{suffix}").read_bytes() == _networkx_bytes(g, suffix), n
    assert 300 <= fast < 400  # (most are written here, some by networkx)


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_files_are_networkx_writers_bytes_for_the_run(tmp_path, result, suffix):
    g = build_graph(result, bipartite=True)
    assert _FAST[suffix](g) is not None
    write_graph(g, tmp_path / f"g{suffix}")
    assert (tmp_path / f"g{suffix}").read_bytes() == _networkx_bytes(g, suffix)


def _graph(*edges: tuple, cls: type = nx.Graph, **graph_attrs: object) -> nx.Graph:
    g = cls(**graph_attrs)
    g.add_edges_from(edges)
    return g


_OTHER_GRAPHS = {
    "directed": _graph(("a", "b"), cls=nx.DiGraph),
    "multigraph": _graph(("a", "b"), ("a", "b"), cls=nx.MultiGraph),
    "number ids": _graph((1, 2)),
    "ids merged once XML-safe": _graph(("a\x00", "b"), ("a\x01", "c")),
    "id merged with another": _graph(("a\x00", "a\ufffd")),
    "numpy value": _graph(("a", "b", {"w": np.float64(0.5)})),
    "name XML cannot carry": _graph(("a", "b", {"\x01": 1})),
    "graph id": _graph(("a", "b"), id="g1"),  # (GraphML's alone: GEXF has none)
}


@pytest.mark.parametrize(
    ("suffix", "case"),
    [(".graphml", case) for case in _OTHER_GRAPHS]
    + [(".gexf", case) for case in _OTHER_GRAPHS if case != "graph id"],
)
def test_other_graphs_go_through_networkx(tmp_path, suffix, case):
    g = _OTHER_GRAPHS[case]
    assert _FAST[suffix](g) is None
    write_graph(g, tmp_path / f"g{suffix}")
    assert (tmp_path / f"g{suffix}").read_bytes() == _networkx_bytes(g, suffix)


def test_directed_graphs_stay_directed(tmp_path):
    write_graph(_graph(("a", "b"), cls=nx.DiGraph), tmp_path / "g.graphml")
    assert nx.read_graphml(tmp_path / "g.graphml").is_directed()


@pytest.mark.parametrize(
    "data", [{"key": "x"}, {"id": "x"}, {"start": 1}], ids=["key", "id", "start"]
)
def test_gexf_keys_with_a_meaning_go_through_networkx(tmp_path, data):
    g = nx.Graph()
    g.add_node("a", **data)
    assert gexf_text(g) is None
    write_graph(g, tmp_path / "g.gexf")
    assert (tmp_path / "g.gexf").read_bytes() == _networkx_bytes(g, ".gexf")


def test_gexf_defaults_go_through_networkx():
    g = _graph(("a", "b", {"w": 1}), node_default="s")
    assert gexf_text(g) is None


def test_max_edges_is_checked_before_the_shared_values(monkeypatch, result):
    def never(*_a, **_k):
        raise AssertionError("shared values were looked up")

    monkeypatch.setattr(sys.modules["distill_forensics.graph"], "_shared_values", never)
    with pytest.raises(InputError, match="more than --max-edges"):
        build_graph(result, bipartite=True, max_edges=0)
