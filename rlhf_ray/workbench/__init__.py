"""The annotation workbench's core: task queue with adaptive redundancy, blind presentation, sessions with caps,
versioned guidelines, disputes, SLAs and quality dashboards. Plain Python; `actors/workbench.py` serves it."""

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"

__all__ = ["STATIC_DIR"]
