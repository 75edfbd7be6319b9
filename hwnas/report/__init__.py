"""``hwnas report``: figures (PNG) and a Markdown summary of a run folder (one search or a sweep).

``write_report(run_dir)`` writes into ``run_dir/report/``: ``report.md`` and the figures listed in
``hwnas.report.plots`` (those the run's data allows; the report says why any is missing).
"""

from __future__ import annotations

from pathlib import Path

from .._extras import installed, missing_note
from ..errors import HwnasError
from ..run import REPORT
from .figset import FIGURE_NAMES, Figures, none_drawn
from .load import Run, load_run
from .markdown import render, write_text


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and the PNG figures of ``run_dir`` into ``out_dir`` (default ``run_dir/report``).

    Args:
        run_dir: the ``--out`` folder of ``hwnas search`` (a single search or a sweep).
        out_dir: where to write; created if needed. Figures this run no longer has are removed from it.

    Returns:
        The path of ``report.md``.

    Raises:
        HwnasError: ``run_dir`` is not a run folder, or one of its files is unreadable.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / REPORT
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} is a file; pass a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(run, out)
    _remove_stale(out, run, set(figs.paths))
    path = out / "report.md"
    write_text(path, render(run, figs))
    return path


def _figures(run: Run, out: Path) -> Figures:
    """The run's figures, or none (each skipped, saying why) when matplotlib is not installed."""
    if not installed("matplotlib"):
        return none_drawn(missing_note("matplotlib", "drawing the figures"))
    from .plots import write_figures  # imports matplotlib

    return write_figures(run, out)


def _remove_stale(out: Path, run: Run, written: set[str]) -> None:
    """Remove figures an earlier report wrote into ``out`` that this one did not (data gone or changed)."""
    names = set(FIGURE_NAMES) | {f"probs-{s.key}" for s in run.shards}
    for name in names - written:
        (out / f"{name}.png").unlink(missing_ok=True)


__all__ = ["Run", "load_run", "write_report"]
