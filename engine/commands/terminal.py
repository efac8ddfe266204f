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
    # library warnings (torch deprecations on every AudioLDM2 load, torchsde's interval notes) are
    # for developers: in the log from -v on, silent by default
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbosity >= 1 else logging.ERROR)
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
    """Route the chatter of diffusers/transformers/huggingface_hub to the log (errors only) without
    importing them: the environment variables are read when they load, so a missing model is
    reported before any heavy import. Pipelines' own progress bars are turned off by the backends."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("diffusers", "transformers", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
