"""`storyd eval`: score comic output folders with a pinned protocol (docs/eval.md).

The library half: ``evaluate`` returns an ``EvalReport``; the CLI only renders it.
"""

from storyd.eval.engine import evaluate, select_metrics
from storyd.eval.protocol import METRICS, PROTOCOL_VERSION
from storyd.eval.report import EvalReport
from storyd.eval.runs import Run, StoryRun, load_run

__all__ = ["METRICS", "PROTOCOL_VERSION", "EvalReport", "Run", "StoryRun", "evaluate", "load_run", "select_metrics"]
