"""What the headless commands show in a terminal: a progress bar, the log, quiet libraries."""

from __future__ import annotations

import logging
import os
import sys

LOG = logging.getLogger("aiba")


def configure_logging(verbosity: int = 0) -> None:
    """The ``aiba`` logger on stderr: warnings by default, info with ``-v``, debug with ``-vv``,
    errors only with ``-q``. Third-party warnings (``warnings.warn``) go to the log too."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    os.environ["AIBA_PROGRESS"] = "0" if verbosity < 0 else "1"


class TerminalProgress:
    """A tqdm progress bar on stderr, usable as ``callable(done, total)``; silent with ``-q``."""

    def __init__(self, desc: str, unit: str = "step") -> None:
        self.desc = desc
        self.unit = unit
        self.enabled = os.environ.get("AIBA_PROGRESS", "1") != "0"
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr, leave=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quiet_libraries() -> None:
    """Route the loading bars and chatter of diffusers/transformers to the log (errors only)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are dependencies
        pass
