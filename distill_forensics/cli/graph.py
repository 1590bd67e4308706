"""``distill-forensics graph``: the account graph of a run as GraphML or GEXF."""

from __future__ import annotations

import click

from distill_forensics.cli.common import (
    Status,
    check_outputs,
    handle_errors,
    input_options_or_evidence,
    previous_option,
    quiet_option,
    resolve_inputs,
    threshold_option,
    warn_evidence,
)
from distill_forensics.cli.sources import check_sources, evidence_options, run_inputs
from distill_forensics.graph import MAX_EDGES, build_graph, graph_format, write_graph


@click.command()
@input_options_or_evidence
@evidence_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Graph file to write: .graphml or .gexf.",
)
@click.option(
    "--cluster",
    "cluster_id",
    metavar="ID",
    help="Only this cluster's members and the links among them (ids as `cluster` prints).",
)
@click.option(
    "--bipartite",
    is_flag=True,
    help="Add one node per shared attribute value (IP, card, template...) joined to its users.",
)
@click.option(
    "--max-edges",
    type=click.IntRange(min=1),
    default=MAX_EDGES,
    show_default=True,
    help="Refuse a larger graph (about 2 GB of memory per million edges) instead of building it.",
)
@threshold_option
@previous_option
@quiet_option
@handle_errors
def graph(
    logs: tuple[str, ...],
    evidence: str | None,
    window: str | None,
    accounts: str | None,
    column: tuple[str, ...],
    config: str | None,
    time_from: str | None,
    time_to: str | None,
    output: str,
    cluster_id: str | None,
    bipartite: bool,
    max_edges: int,
    threshold: float,
    previous: str | None,
    quiet: bool,
) -> None:
    """Write the linked accounts as a graph file for Gephi, Cytoscape or networkx.

    Nodes are clustered accounts (cluster, rank, score, suspected, org); edges are
    their links, with the kinds of evidence and the values the two accounts share.

    \b
    Examples:
        distill-forensics graph sample_logs/logs.parquet \\
            --accounts sample_logs/accounts.parquet -o net.graphml
        distill-forensics graph sample_logs/logs.parquet \\
            --accounts sample_logs/accounts.parquet --cluster C-c2ec3c88f4 --bipartite -o c1.gexf
        distill-forensics graph --evidence evidence/ --window 30d -o net.graphml
    """
    sources = check_sources(
        logs, evidence=evidence, window=window, accounts=accounts, column=column, config=config
    )
    kwargs = resolve_inputs(column, config, time_from, time_to)
    graph_format(output)  # a wrong file name fails before the run, not after it
    check_outputs({"-o": output}, sources, tables=False)
    status = Status(quiet)
    result = run_inputs(sources, kwargs, threshold=threshold, previous=previous, status=status)
    g = build_graph(result, cluster_id=cluster_id, bipartite=bipartite, max_edges=max_edges)
    write_graph(g, output)
    status.message(f"{output}: {g.number_of_nodes():,} nodes, {g.number_of_edges():,} edges")
    warn_evidence(status, result.evidence)
