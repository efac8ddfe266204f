"""Steer and listen: hear the steering sliders and the head masks while changing them.

:class:`SteerListenController` owns what the window used to keep in a dict with string keys:

* the **A/B in the making** (:class:`PendingAB`): the reference run (unsteered, or with every head)
  is generated first when the history has none, then the changed run; the player then plays B
  against A (:class:`ABPair`, :meth:`SteerListenController.show_ab`);
* **preview then refine**: while an α slider moves, a background render with fewer steps (same
  seed, capture off) plays; on release the full, captured run refines it;
* the **α prefetch**: while the user listens and the engine is idle, full renders of the α grid
  around the moved slider's α (same seed, captured as the listened run is) fill a bounded
  :class:`ClipCache`; a slider moved onto a rendered α plays it at once, without a generation, and
  releasing it there adopts the kept result (:class:`RunCache`) as the run: maps and A/B at once.

A newer request cancels an older one: background renders give way inside the bridge
(``EngineBridge.submit(background=True)``), and a steered B still running is cancelled. New audio
reaches the player without stopping it (``PlayerDock.play_clip``): at the loop boundary when
looping, else in place; a cache hit always in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from PySide6.QtCore import QObject, Signal, Slot

from engine.backends.base import RunResult
from engine.types import EngineError, GenerationRequest
from gui.mel_view import MelView
from gui.steer_listen_state import (
    ABKind,
    ABPair,
    Clip,
    ClipCache,
    PendingAB,
    Render,
    RunCache,
    RunSpec,
    alphas_of,
    audio_key,
    is_steer,
    masks_some_head,
    prefetch_grid,
    preview_steps,
)
from gui.workspace import RunData

Recipe = Callable[[], tuple[str, str, GenerationRequest | None]]
Generate = Callable[[str, str, GenerationRequest], int | None]

class SteerListenController(QObject):
    """Steer-and-listen and the masked A/B for the window: the engine bridge, the workspace's
    history, the player and the steering dock, with the window's ``recipe`` and ``generate``."""

    message = Signal(str)
    clipPlayed = Signal(object)  # Clip sent to the player (preview, prefetch hit)
    abShown = Signal(object)  # ABPair

    def __init__(self, bridge, workspace, player, steering, recipe: Recipe, generate: Generate,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.workspace, self.player, self.steering = bridge, workspace, player, steering
        self.recipe, self.generate = recipe, generate
        self.cache = ClipCache()
        self.runs = RunCache()  # whole captured prefetch results: a release there adopts one
        self.pending: PendingAB | None = None
        self.render: Render | None = None
        self.last_pair: ABPair | None = None
        self.listening: RunSpec | None = None  # B of the last A/B: the prefetch grid is around it
        self.last_clip: Clip | None = None
        self._again = False  # a release came while the engine was busy: refine once it is free
        self._preview_waits = False  # a move cancelled the steered B: preview once it stopped
        bridge.runFinished.connect(self._on_run_finished)
        bridge.runFailed.connect(self._on_run_stopped)
        bridge.runCancelled.connect(self._on_run_stopped)
        bridge.backgroundFinished.connect(self._on_render_finished)
        bridge.backgroundFailed.connect(self._on_render_failed)
        bridge.backgroundCancelled.connect(self._on_render_cancelled)
        steering.steerRequested.connect(self.refine)
        steering.alphaMoved.connect(self.preview)
        player.playingChanged.connect(self._on_playing)

    # ---- recipes --------------------------------------------------------------------------
    def _panel_spec(self) -> RunSpec | None:
        model, device, request = self.recipe()
        return None if request is None else RunSpec(model, device, request)

    def _with_alpha(self, spec: RunSpec, row: int, alpha: float) -> RunSpec:
        """``spec`` with row ``row``'s α set to ``alpha`` (the other rows as they are)."""
        others = tuple(iv for iv in spec.request.interventions if not is_steer(iv))
        return spec.changed(interventions=(*self.steering.steers({row: alpha}), *others))

    def _reference_run(self, spec: RunSpec):
        """The latest finished run whose audio is ``spec``'s (A of an A/B), or None."""
        key = audio_key(spec)
        for run in reversed(self.workspace.history):
            if run.result is not None and run.status == "done" and \
                    audio_key(RunSpec(run.model, run.device, run.request)) == key:
                return run
        return None

    def _b_running(self) -> bool:
        """A steered B is being made (a newer slider request makes it outdated)."""
        p = self.pending
        return p is not None and p.kind == "steer" and p.b_id is not None and self.bridge.current_run_id == p.b_id

    # ---- A/B: steering (slider released) and head masks (Generate) -------------------------------
    @Slot()
    def refine(self) -> int | None:
        """The full, captured run of the panel's recipe (same seed) as B against its unsteered run A,
        generated first when the history has none. A newer release cancels a steered B still
        running; other work (A included) is waited for. Returns the id of the run started."""
        adopted = self._adopt_prefetched()
        if adopted is not None:
            return adopted
        p = self.pending
        if self._b_running():
            self._again = True
            self.bridge.cancel()
            return None
        if self.bridge.busy:
            spec = self._panel_spec() if p is not None and p.b_id is None else None
            if spec is not None and p.kind == "steer" and audio_key(self._unsteered(spec)) == audio_key(p.a):
                p.b = spec  # A is being made: B follows it with the newest α
            else:
                self._again = True
            return None
        self._again = False
        spec = self._panel_spec()
        if spec is None:
            return None
        return self._start_ab("steer", self._unsteered(spec), spec)

    def _adopt_prefetched(self) -> int | None:
        """The panel's recipe was prefetched whole and its A is in the history: that result becomes
        run B (a new run id, the same audio and frames a generation would give), shown against A
        at once. A steered B still running is cancelled (outdated); anything else busy: None."""
        if not len(self.runs) or (self.bridge.busy and not self._b_running()):
            return None
        spec = self._panel_spec()
        if spec is None:
            return None
        base = self._reference_run(self._unsteered(spec))
        if base is None or base.run_id == self.bridge.current_run_id:
            return None
        result = self.runs.take(spec)
        if result is None:
            return None
        if self._b_running():
            self.pending = None  # its cancellation must not start anything
            self.bridge.cancel()
        self.bridge.cancel_background()
        self._again = self._preview_waits = False
        run_id = self.bridge.claim_run_id()
        run = RunData.from_result(replace(result, run_id=run_id), spec.model, spec.device, spec.request)
        self.workspace.kept = frozenset((base.run_id,))
        self.workspace.add_run(run)
        self._remember(spec, run.result)
        self.listening = spec
        alphas = ", ".join(f"{a:g}" for a in alphas_of(spec.request)) or "0"
        self.message.emit(f"run #{run_id}: α {alphas} taken from the prefetch (no generation)")
        self.show_ab(ABPair("steer", base.run_id, run_id))
        self._next_after_run()
        return run_id

    @Slot(str, str, object)
    def generate_requested(self, model: str, device: str, request: GenerationRequest) -> int | None:
        """Generate from the Run panel. With head masks that switch heads off, the masked run is
        B against the unmasked one (same seed) as A, generated first when the history has none."""
        spec = RunSpec(model, device, request)
        if not masks_some_head(request) or self.bridge.busy:
            return self.generate(model, device, request)
        return self._start_ab("mask", spec.changed(head_mask=None), spec)

    @staticmethod
    def _unsteered(spec: RunSpec) -> RunSpec:
        return spec.changed(interventions=tuple(iv for iv in spec.request.interventions if not is_steer(iv)))

    def _start_ab(self, kind: ABKind, a: RunSpec, b: RunSpec) -> int | None:
        base = self._reference_run(a)
        self.pending = PendingAB(kind, a, b, a_id=None if base is None else base.run_id)
        self.workspace.kept = frozenset(i for i in (self.pending.a_id,) if i is not None)  # A outlives B's arrival
        if base is None:
            self.pending.a_id = self.generate(a.model, a.device, a.request)
            started = self.pending.a_id
        else:
            self.pending.b_id = self.generate(b.model, b.device, b.request)
            started = self.pending.b_id
        if started is None:
            self.pending = None
        return started

    def show_ab(self, pair: ABPair) -> None:
        """Player: A and B of ``pair``, switched to B and playing (B comes in without a stop)."""
        self.player.show_pair(pair.a_id, pair.b_id, at_boundary=self.player.loop.isChecked())
        self.last_pair = pair
        self.workspace.kept = frozenset((pair.a_id, pair.b_id))
        what = ("unsteered", "steered") if pair.kind == "steer" else ("every head", "heads masked")
        self.message.emit(f"A/B: run #{pair.a_id} ({what[0]}) vs #{pair.b_id} ({what[1]}); playing B")
        self.abShown.emit(pair)

    def _remember(self, spec: RunSpec, result: RunResult) -> None:
        self.cache.put(audio_key(spec), Clip.of(result, spec.request.steps, alphas_of(spec.request), "run"))

    @Slot(object)
    def _on_run_finished(self, result: RunResult) -> None:
        p = self.pending
        if p is not None and p.b_id is None and result.run_id == p.a_id:
            self._remember(p.a, result)
            p.b_id = self.generate(p.b.model, p.b.device, p.b.request)
            if p.b_id is None:
                self.pending = None
            return
        if p is not None and result.run_id == p.b_id:
            self.pending = None
            self._remember(p.b, result)
            self.listening = p.b
            self.show_ab(ABPair(p.kind, p.a_id, p.b_id))
        else:
            self.listening = None  # another run plays now: nothing to prefetch around
        self._next_after_run()

    @Slot(int)
    def _on_run_stopped(self, run_id: int, *_) -> None:
        p = self.pending
        if p is not None and run_id in (p.a_id, p.b_id):
            self.pending = None
        self._next_after_run()

    def _next_after_run(self) -> None:
        if self.bridge.busy:
            return
        if self._again:
            self.refine()
        elif self._preview_waits:
            self._preview_waits = False
            self.preview()
        else:
            self.prefetch()

    # ---- previews ----------------------------------------------------------------------------
    @Slot()
    def preview(self) -> int | None:
        """An α slider moved: play the cached render of the new α at once, or render a preview
        (fewer steps, same seed) in the background. A newer move cancels an older preview and a
        steered B still running. Returns the preview's job id when one started."""
        if not self.steering.preview.isChecked():
            return None
        spec = self._panel_spec()
        if spec is None:
            return None
        quick = spec.changed(steps=preview_steps(spec.request), capture=False, per_head=False, preview=True)
        full, clip = self.cache.get(audio_key(spec)), self.cache.get(audio_key(quick))
        if full is not None or clip is not None:
            if self.render is not None and self.render.kind == "preview":
                self.bridge.cancel_background()  # an older α's preview would play after this one
            at_boundary = full is None and self.player.loop.isChecked()  # a full render: at once
            self._play(full or clip, at_boundary=at_boundary)
            return None
        if self._b_running():
            self._preview_waits = True
            self.bridge.cancel()
            return None
        if self.bridge.busy:
            self._status("the engine is busy: no preview (release to queue the full run)")
            return None
        return self._submit("preview", quick)

    def _submit(self, kind: Literal["preview", "prefetch"], spec: RunSpec) -> int | None:
        request = spec.request

        def render(backend, progress):
            return backend.generate(request)

        alphas = alphas_of(request)
        name = f"{kind} α {', '.join(f'{a:g}' for a in alphas) or '0'}"
        try:
            job_id = self.bridge.submit(name, spec.model, spec.device, render, background=True)
        except EngineError as exc:
            self._status(str(exc))
            return None
        self.render = Render(job_id, kind, audio_key(spec), request.steps, alphas, spec)
        self._status(f"{name}: rendering {request.steps} steps…")
        return job_id

    def _play(self, clip: Clip, at_boundary: bool) -> None:
        self.player.play_clip(clip.audio, clip.sample_rate, at_boundary, MelView(clip.mel, clip.mel_spec))
        self.last_clip = clip
        alphas = ", ".join(f"{a:g}" for a in clip.alphas) or "0"
        source = {"preview": f"fast preview, {clip.steps} steps; release the slider for the full run",
                  "prefetch": f"prefetched, {clip.steps} steps, at once", "run": "from a finished run"}[clip.kind]
        self._status(f"playing α {alphas}: {source}" + (" (from the loop boundary)" if at_boundary else ""))
        self.clipPlayed.emit(clip)

    @Slot(int, object)
    def _on_render_finished(self, job_id: int, result: RunResult) -> None:
        r = self.render
        if r is None or job_id != r.job_id:
            return
        self.render = None
        clip = Clip.of(result, r.steps, r.alphas, r.kind)
        self.cache.put(r.key, clip)
        if r.kind == "preview":
            self._play(clip, at_boundary=self.player.loop.isChecked())
        else:
            if r.spec is not None and r.spec.request.capture:
                self.runs.put(r.spec, result)
            self.prefetch()

    @Slot(int, str)
    def _on_render_failed(self, job_id: int, message: str) -> None:
        if self.render is not None and job_id == self.render.job_id:
            self.render = None
            self._status(message)

    @Slot(int)
    def _on_render_cancelled(self, job_id: int) -> None:
        if self.render is not None and job_id == self.render.job_id:
            self.render = None

    # ---- prefetch ----------------------------------------------------------------------------
    @Slot()
    def prefetch(self) -> int | None:
        """While the user listens to the last A/B's B and the engine is idle: render the next α of
        the grid around the moved slider's α that the cache lacks (full steps, same seed, captured
        as B is, so that releasing the slider there adopts the result). B's recipe is used as it
        is (the Run panel is not read again, nor its messages touched)."""
        st, spec = self.steering, self.listening
        if spec is None or not st.prefetch.isChecked() or not st.rows or st.dragging() or self.pending is not None:
            return None
        if not self.bridge.idle or not self.player.output.is_playing():
            return None
        row = st.active_row
        centre = st.rows[row].alpha
        for alpha in prefetch_grid(centre):
            try:
                candidate = self._with_alpha(spec, row, alpha)
            except EngineError:
                return None  # the row cannot steer the chosen layers: nothing to prefetch
            if audio_key(candidate) not in self.cache:
                return self._submit("prefetch", candidate)
        done = ", ".join(f"{a:g}" for a in sorted(prefetch_grid(centre)))
        self._status(f"α {done} prefetched around {centre:g}: move the slider there to hear them at once")
        return None

    @Slot(bool)
    def _on_playing(self, playing: bool) -> None:
        if playing:  # listening (again): the idle engine may prefetch
            self.prefetch()

    def cached_alphas(self, row: int | None = None) -> list[float]:
        """The α values of row ``row`` (default: the moved one) whose full render is cached for the
        recipe listened to (the last A/B's B)."""
        spec, st = self.listening, self.steering
        if spec is None or not st.rows:
            return []
        row = st.active_row if row is None else row
        out = []
        for alpha in sorted({st.rows[row].alpha, *prefetch_grid(st.rows[row].alpha)}):
            try:
                if audio_key(self._with_alpha(spec, row, alpha)) in self.cache:
                    out.append(alpha)
            except EngineError:
                return []
        return out

    def _status(self, text: str) -> None:
        self.steering.listen_status.setText(text)
