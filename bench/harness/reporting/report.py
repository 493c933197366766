"""`bench report`: a run's rows as the paper's tables (CSV, Markdown and LaTeX) and
figures, in the order of the table specs (`specs.REPORT`), then what computed the
metrics, the runs' leaderboard and the run's provenance. A metric a run could not
compute (its weights were missing) prints as "n/a", with the reason under the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.contract.errors import BenchError
from bench.contract.io import atomic_write_text
from bench.contract.results import RunRecord
from bench.harness.reporting.render import to_markdown
from bench.harness.reporting.runs import Run, first_of_each_cell, read_cells, read_costs
from bench.harness.reporting.specs import REPORT, Context
from bench.harness.reporting.tables import NA


def write_report(run_dirs: Path | list[Path], output: Path | None = None, leaderboard: bool = True) -> str:
    """The report of one run, or of several runs together (e.g. a matrix run in parts
    that share one configuration): their rows are joined, a cell found in several runs
    is taken from the first; the first run's record describes the whole. The runs'
    leaderboard goes to `output`/leaderboard unless `leaderboard` is False."""
    run_dirs = [Path(d) for d in (run_dirs if isinstance(run_dirs, list) else [run_dirs])]
    frames = [read_cells(d) for d in run_dirs]
    found = [RunRecord.read(d) for d in run_dirs]
    ctx = Context(cells=first_of_each_cell(pd.concat(frames, ignore_index=True)), costs=joined_costs(run_dirs),
                  run_dirs=run_dirs, records=[r for r in found if r is not None], output=Path(output or run_dirs[0]))
    sections = [spec.render(ctx) for spec in REPORT]
    if ctx.records:
        sections.append(metric_notes(ctx))
        if leaderboard and len(ctx.records) == len(run_dirs):
            sections.append(leaderboard_note([Run(*run) for run in zip(run_dirs, frames, found)], ctx.output))
        sections.append(provenance_line(ctx.records))
    text = "\n".join(s for s in sections if s)
    atomic_write_text(ctx.output / "report.md", text)
    return text


def joined_costs(run_dirs: list[Path]) -> pd.DataFrame:
    costs = pd.concat([read_costs(d) for d in run_dirs], ignore_index=True)
    return costs[~costs[["generator", "bypass", "metric"]].duplicated(keep="first")]


def metric_notes(ctx: Context) -> str | None:
    """What computed the image-quality metrics (implementation, weights' hash), the time
    each metric took, and why any is n/a."""
    identities, seconds = {}, {}
    for record in ctx.records:
        for name, identity in record.metrics.items():
            identities.setdefault(name, identity)
        for name, t in record.metric_seconds.items():
            seconds[name] = seconds.get(name, 0.0) + t
    rows = [{"metric": name, "kind": identity.get("kind"), "seconds": seconds.get(name),
             "weights sha256": (identity.get("weights_sha256") or "-")[:16],
             "implementation": identity.get("implementation")} for name, identity in identities.items()]
    rows += [{"metric": name, "kind": None, "seconds": None, "weights sha256": NA, "implementation": f"{NA}: {why}"}
             for name, why in ctx.skipped.items()]
    if not rows:
        return None
    return to_markdown(pd.DataFrame(rows).set_index("metric"), "Metrics (seconds: computing each, all runs)")


def leaderboard_note(runs: list[Run], output: Path) -> str | None:
    """The runs' leaderboard (from the rows and records the report read), written beside
    the report."""
    from bench.harness.reporting.leaderboard import summary_line, write_leaderboards

    try:
        boards = write_leaderboards(runs, output / "leaderboard")
    except BenchError as err:
        return f"no leaderboard: {err}\n"
    lines = [f"Leaderboard: {summary_line(where, board)}\n" for where, board in boards if board.entries]
    return "\n".join(lines) or None


def provenance_line(records: list[RunRecord]) -> str:
    first = records[0]
    peak = first.peak_memory.get("host_rss_mb")
    git = first.git
    return (f"profile {first.profile}, seed {first.seed}, {first.evaluation['n']} evaluation images "
            f"({first.evaluation['name']}), git {str(git['commit'])[:10]}{tree_state(git)}, "
            f"wall time {wall_times(records)}" + (f", peak memory {peak:.0f} MB" if peak else "") + "\n")


def tree_state(git: dict) -> str:
    """How the checkout differed from its commit: nothing, only results/ files, or more."""
    if not git.get("dirty"):
        return ""
    changed = git.get("changed")
    if changed and all(path.startswith("results/") for path in changed):
        return f" (only results/ changed: {len(changed)} files)"
    return " (dirty)"


def wall_times(records: list[RunRecord]) -> str:
    """Wall time of the run, or of each part of a merged report ("1200 s + 300 s")."""
    return " + ".join(f"{r.wall_seconds:.0f} s" for r in records if r.wall_seconds is not None)
