"""The training engine: the one loop every detseg trainer runs.

A trainer (RetinaNet, the digit segmenter, ...) is a page that says *what* to train:
its model, its optimizer and learning-rate schedule, its batches, its loss and its
evaluation. This file says *how*, once for all of them (the idea of torchvision's
``references/detection/engine.py`` and of d2l's ``Trainer.fit``)::

    engine = Engine(out="runs/retinanet", kind="retinanet", model=model,
                    optimizer=optimizer, schedule=schedule, batches=loader,
                    loss=lambda batch: model.loss(*batch),      # {"loss": Tensor, ...}
                    evaluate=lambda: evaluate(model, val_set),  # {"map": 0.41, ...}
                    metric="map", mode="max", minutes=15, eval_at=(0.5, 0.75, 1.0))
    summary = engine.fit()        # or engine.fit(load_checkpoint(path, "retinanet"))
    engine.write_results({"test": ...})                         # metrics.json

One step is: the next batch, ``loss(batch)``, ``zero_grad``, ``backward``, gradient
clipping (optional), ``optimizer.step()``, ``schedule.step()``. Around the steps:

**The budget.** ``steps`` fixes the number of steps (a seed and a step count repeat a
run exactly); ``minutes`` caps the wall clock (evaluations included). With ``minutes``
alone the schedule is *stretched to the budget*: the total is unknown until the
warm-up ends (the warm-up's rates do not depend on it); the warm-up steps are timed,
the first ``CALIBRATION_SKIP`` aside (first calls allocate), and the total is set so
that training ends within the budget (``fit_total_steps``). If the machine slows down
later (other jobs on a shared machine) the total is shortened again before each
evaluation and every tenth of the budget, and lengthened when the steps got faster
(``refit_total_steps``). Training stops early when the final evaluation would no
longer end in time.

**The run directory.** ``last.npz`` (at each evaluation, every ``checkpoint_minutes``,
at the end and on Ctrl-C) and ``best.npz`` (the evaluation with the best ``metric``)
are written atomically by ``nn.save``. Each holds everything the run depends on:
model, optimizer, schedule, the batch source's position, the random generators'
states, the step, the elapsed time, the history (losses per step, evaluations) and the
trainer's configuration. ``fit(checkpoint)`` continues from one *exactly*: a run
interrupted and resumed ends with the same weights as one that never stopped (when
the clock does not decide its length). ``metrics.json`` and ``history.json`` are
written at the end (``write_results``).

**Ctrl-C.** A SIGINT during a step is held until the step ends (half a step is no
state to save); during an evaluation it stops at once. Either way ``last.npz`` is
saved and ``TrainingInterrupted`` raised; on the command line (``command_errors``)
that prints the command that continues the run and exits with status 130. A second
Ctrl-C stops at once, without saving a half-done step.

**The command line.** ``add_training_arguments`` gives every trainer the same flags
(``--data --out --minutes --steps --seed --resume --quick --quiet --threads``) and
``parse_training_arguments`` checks them (a bad value or a missing/foreign ``last.npz``
for ``--resume`` is a usage error: a message and exit status 2).
"""
import argparse
import contextlib
import json
import math
import numbers
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from nn.io import CheckpointError, json_safe, load, save, write_json
from nn.optim.clip_grad import clip_grad_norm_
from nn.random import default_generator
from nn._threads import set_num_threads

__all__ = ["Engine", "load_checkpoint", "ResumeError", "TrainingInterrupted", "fit_total_steps",
           "refit_total_steps", "add_training_arguments", "parse_training_arguments",
           "command_errors", "resume_command", "set_threads", "positive_int", "non_negative_int",
           "positive_float", "saved_config", "start_run", "LAST", "BEST"]

LAST, BEST = "last.npz", "best.npz"  # the checkpoints in a run directory
CALIBRATION_SKIP = 3  # first steps not timed when fitting the total to the budget
TIME_MARGIN = 0.9  # fraction of the time left that a fitted schedule plans for
EVALUATION_RESERVE = 1.5  # the final evaluation may take this much longer than the last one
REFIT_FRACTION = 0.1  # a fitted total is also refitted when this much of the budget passed
FORMAT = 1  # version of the engine's entry in a checkpoint


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed: missing, foreign, corrupt or tampered with."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C ended training; ``last.npz`` holds step ``step`` (``saved``: written now).

    Attributes:
        step (int or None): the step ``path`` holds (None: no checkpoint exists).
        path (str): the run's ``last.npz``.
        saved (bool): False when the interruption came in the middle of a step (a second
            Ctrl-C): then ``path`` is the checkpoint saved before.
    """

    def __init__(self, step, path, saved):
        super().__init__(f"training interrupted; {path} holds step {step}")
        self.step, self.path, self.saved = step, path, saved


# ============================================================================ the budget
def fit_total_steps(done, elapsed, timed_steps, timed_seconds, budget):
    """The total number of steps that fits a time budget.

    Args:
        done (int): steps taken so far.
        elapsed (float): seconds used so far.
        timed_steps (int), timed_seconds (float): the speed estimate (the last steps).
        budget (float): seconds of the whole run.
    Returns:
        int: ``done + TIME_MARGIN · (budget - elapsed) / seconds per step``, at least ``done + 1``.
    """
    per_step = timed_seconds / max(timed_steps, 1)
    remaining = budget - elapsed
    return max(done + 1, done + int(TIME_MARGIN * remaining / per_step))


def refit_total_steps(total, step, elapsed, budget, seconds_per_step):
    """The total refitted to the time left.

    Unchanged while the ``total - step`` steps left would end between ``TIME_MARGIN`` of
    the time left and all of it; otherwise shortened (the machine got slower) or
    lengthened (faster) to plan ``TIME_MARGIN`` of the time left.

    Returns:
        int: the new total, at least ``step + 1``.
    """
    left = max(budget - elapsed, 0)
    needed = (total - step) * seconds_per_step
    if TIME_MARGIN * left <= needed <= left:
        return total
    return max(step + 1, step + int(TIME_MARGIN * left / seconds_per_step))


# ================================================================================ Ctrl-C
class _InterruptGuard:
    """SIGINT handling around the steps: held inside ``step()``, immediate elsewhere.

    ``consistent`` is False while a step is running and after one was abandoned in its
    middle (a second Ctrl-C): only a consistent state is saved.
    """

    def __init__(self):
        self.pending = False
        self.in_step = False
        self.consistent = True
        self.previous = None

    def install(self):
        # Signal handlers belong to the main thread; a process started with SIGINT
        # ignored (a background job) keeps ignoring it.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, signum, frame):
        if self.in_step and not self.pending:
            self.pending = True  # stop when the step is done
            return
        raise KeyboardInterrupt  # between steps, or a second Ctrl-C

    @contextlib.contextmanager
    def step(self):
        """A block that changes the training state: a Ctrl-C waits for its end."""
        self.in_step, self.consistent = True, False
        try:
            yield
        finally:
            self.in_step = False
        self.consistent = True
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


# ================================================================================ engine
class Engine:
    """Train a model: the loop, the budget, checkpoints, resume, evaluation, Ctrl-C.

    Args:
        out (str): run directory (created).
        kind (str): the trainer's name, saved in checkpoints; ``--resume`` refuses another kind.
        model (Module): trained in ``train()`` mode.
        optimizer (Optimizer): stepped once per step.
        loss (callable): ``loss(batch) -> dict`` of scalar Tensors; ``"loss"`` is the one
            minimized, every entry is recorded per step.
        batches (iterable): the training batches, with ``state_dict()`` /
            ``load_state_dict()`` for its position (e.g. ``nn.data.DataLoader``); an
            iteration that ends (an epoch) is followed by the next one.
        evaluate (callable): ``evaluate() -> dict`` of metrics (numbers, lists, dicts).
        metric (str): the entry of ``evaluate()`` that chooses ``best.npz``.
        mode (str): ``"max"`` (higher is better) or ``"min"``.
        schedule (LRScheduler, optional): stepped after each optimizer step; a run fitted
            to the time budget needs ``stretch(total)`` (``nn.optim.WarmupCosine``).
        steps (int, optional): number of steps.
        minutes (float, optional): wall-clock budget; at least one of the two is needed.
        eval_every (int, optional): evaluate every that many steps.
        eval_at (tuple of float): also evaluate when these fractions of the total are done.
            The end of the run is always evaluated.
        checkpoint_minutes (float, optional): also save ``last.npz`` at least this often.
        clip_grad (float, optional): clip the gradients' joint norm to this.
        generators (dict, optional): ``{name: np.random.Generator}`` drawn from outside
            ``batches`` (e.g. augmentation); their states are saved and restored, as is
            ``nn``'s default generator.
        config (dict, optional): the trainer's configuration, saved in every checkpoint.
        info (dict, optional): more to save beside it (e.g. the model's configuration).
        quiet (bool): no progress bar.
    """

    def __init__(self, out, kind, model, optimizer, loss, batches, evaluate, metric, mode="max",
                 schedule=None, steps=None, minutes=None, eval_every=None, eval_at=(),
                 checkpoint_minutes=None, clip_grad=None, generators=None, config=None,
                 info=None, quiet=False):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty str, got {kind!r}")
        for name, function in (("loss", loss), ("evaluate", evaluate)):
            if not callable(function):
                raise TypeError(f"{name} must be callable, got {type(function).__name__}")
        for name in ("state_dict", "load_state_dict"):
            if not callable(getattr(batches, name, None)):
                raise TypeError(f"batches must have {name}() (its position is saved), got "
                                f"{type(batches).__name__}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if steps is None and minutes is None:
            raise ValueError("give steps, minutes or both")
        _check_count("steps", steps, low=1)
        _check_count("eval_every", eval_every, low=1)
        for name, value in (("minutes", minutes), ("checkpoint_minutes", checkpoint_minutes),
                            ("clip_grad", clip_grad)):
            _check_positive(name, value)
        eval_at = tuple(float(f) for f in eval_at)
        if any(not 0 < f <= 1 for f in eval_at) or list(eval_at) != sorted(eval_at):
            raise ValueError(f"eval_at must be increasing fractions in (0, 1], got {eval_at}")
        if steps is None and schedule is not None and not hasattr(schedule, "stretch"):
            raise TypeError("a run fitted to the time budget (steps=None) needs a schedule "
                            "with stretch(total), e.g. nn.optim.WarmupCosine")
        generators = dict(generators or {})
        for name, rng in generators.items():
            if not isinstance(rng, np.random.Generator) or name == "nn":
                raise TypeError(f"generators[{name!r}] must be a np.random.Generator "
                                f"(and 'nn' is reserved)")
        self.out, self.kind = os.fspath(out), kind
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.loss, self.batches, self.evaluate = loss, batches, evaluate
        self.metric, self.mode = metric, mode
        self.minutes, self.eval_every, self.eval_at = minutes, eval_every, eval_at
        self.checkpoint_minutes, self.clip_grad = checkpoint_minutes, clip_grad
        self.generators = generators
        self.config, self.info, self.quiet = config or {}, info or {}, quiet
        self.last_path = os.path.join(self.out, LAST)
        self.best_path = os.path.join(self.out, BEST)

        # The run's state: everything in it is saved in a checkpoint.
        self.state = {
            "kind": kind, "format": FORMAT,
            "step": 0,                # optimizer steps taken
            "total_steps": steps,     # None until fitted to the budget
            "fitted": steps is None,  # the total follows the clock
            "elapsed": 0.0,           # wall-clock seconds of training, all sessions
            "cpu_seconds": 0.0,       # CPU seconds of this process in them (all threads)
            "refits": 0,              # times the total was refitted
            "evaluated_at": -1,       # step of the latest evaluation
            "fractions_done": 0,      # entries of eval_at evaluated
            "eval_seconds": 0.0,      # duration of the latest evaluation
            "best_step": -1, "best_value": None,
            "stopped_by": None,       # "steps" or "time" once finished
        }
        self.history = {"lr": [], "losses": {}, "evaluations": []}
        self._guard = _InterruptGuard()
        self._iterator = None
        self._bar = None
        self._clock = None  # (wall start, elapsed before, CPU start, CPU seconds before)
        self._saved_step = None  # the step last.npz holds

    # ------------------------------------------------------------------------- the loop
    def fit(self, checkpoint=None):
        """Train until the budget is used; evaluate; keep ``last.npz`` and ``best.npz``.

        Args:
            checkpoint (dict, optional): a run's ``last.npz`` (``load_checkpoint``) to
                continue from.
        Returns:
            dict: ``summary()``.
        Raises:
            TrainingInterrupted: Ctrl-C (after saving ``last.npz``).
            ResumeError: ``checkpoint`` does not fit this engine (nothing trained).
        """
        os.makedirs(self.out, exist_ok=True)
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.state["total_steps"] is not None and hasattr(self.schedule, "stretch"):
            self.schedule.stretch(self.state["total_steps"])  # the decay ends with the run
        self._start_session()
        self._guard.install()
        try:
            while True:
                self._fit_to_budget()
                stop = self._stop_reason()
                if self._evaluation_due(stop):
                    self._evaluate()
                if stop is not None:
                    break
                self._train_step()
                self._checkpoint_if_due()
            with self._guard.step():
                self.state["stopped_by"] = stop
                self._save(self.last_path)
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self._guard.uninstall()
            self._bar.close()
            if callable(getattr(self.batches, "close", None)):
                self.batches.close()  # e.g. a prefetch thread
        return self.summary()

    def _start_session(self):
        now = time.perf_counter()
        self._clock = (now, self.state["elapsed"], time.process_time(), self.state["cpu_seconds"])
        self._timer = (now, self.state["step"])  # speed measured from here
        self._last_save = self._last_refit = now
        self.model.train()
        self._bar = tqdm(total=self.state["total_steps"], initial=self.state["step"],
                         desc=self.kind, unit="step", disable=self.quiet, dynamic_ncols=True)

    def _elapsed(self):
        if self._clock is None:  # no session started
            return self.state["elapsed"]
        started, before, _, _ = self._clock
        return before + time.perf_counter() - started

    def _cpu_seconds(self):
        if self._clock is None:
            return self.state["cpu_seconds"]
        _, _, started, before = self._clock
        return before + time.process_time() - started

    def _stop_reason(self):
        """``"steps"`` (the total is done), ``"time"`` (the final evaluation would end
        after the budget) or None (train on)."""
        total = self.state["total_steps"]
        if total is not None and self.state["step"] >= total:
            return "steps"
        if self.minutes is not None and (self._elapsed() + EVALUATION_RESERVE
                                         * self.state["eval_seconds"] > 60 * self.minutes):
            return "time"
        return None

    def _next_batch(self):
        if self._iterator is None:
            self._iterator = iter(self.batches)
        try:
            return next(self._iterator)
        except StopIteration:  # an epoch ended: the next one starts
            self._iterator = iter(self.batches)
        try:
            return next(self._iterator)
        except StopIteration:
            raise ValueError("batches yielded no batch (an empty dataset?)") from None

    def _train_step(self):
        """One optimization step, recorded; a Ctrl-C waits for its end."""
        with self._guard.step():
            losses = self.loss(self._next_batch())
            if not isinstance(losses, dict) or "loss" not in losses:
                raise TypeError(f"loss(batch) must return a dict with a 'loss' entry, got "
                                f"{type(losses).__name__}")
            values = {name: float(value.item() if hasattr(value, "item") else value)
                      for name, value in losses.items()}
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(
                    f"the loss is {values['loss']} at step {self.state['step'] + 1}; "
                    f"{self.last_path} holds step {self._saved_step}")
            self.optimizer.zero_grad()
            losses["loss"].backward()
            if self.clip_grad is not None:
                clip_grad_norm_(self.model.parameters(), self.clip_grad)
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            self.optimizer.step()
            if self.schedule is not None:
                self.schedule.step()
            self.state["step"] += 1
            self._record(values, lr)
        self._bar.update(1)
        best = self.state["best_value"]
        self._bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{lr:.1e}", refresh=False,
                              **({} if best is None else {self.metric: f"{best:.4f}"}))

    def _record(self, values, lr):
        """Append one step's losses (a name missing at a step is NaN there) and rate."""
        step, losses = self.state["step"], self.history["losses"]
        for name in values.keys() - losses.keys():
            losses[name] = [math.nan] * (step - 1)
        for name, record in losses.items():
            record.append(values.get(name, math.nan))
        self.history["lr"].append(lr)

    def _checkpoint_if_due(self):
        if self.checkpoint_minutes is not None \
                and time.perf_counter() - self._last_save > 60 * self.checkpoint_minutes:
            with self._guard.step():
                self._save(self.last_path)

    # ------------------------------------------------------------------ time budget
    def _fit_to_budget(self):
        """A run fitted to the budget: set the total when the warm-up ends; refit it
        before each evaluation and whenever ``REFIT_FRACTION`` of the budget has passed."""
        state = self.state
        if not state["fitted"]:
            return
        started, timed_from = self._timer
        if state["total_steps"] is None:
            warmup = getattr(self.schedule, "warmup_steps", 0)
            calibrate = max(warmup, CALIBRATION_SKIP + 1)  # the warm-up's rates need no total
            if state["step"] == CALIBRATION_SKIP:  # first calls allocate: not timed
                self._timer = (time.perf_counter(), state["step"])
            elif state["step"] >= calibrate and state["step"] > timed_from:
                now = time.perf_counter()
                total = fit_total_steps(state["step"], self._elapsed(),
                                        state["step"] - timed_from, now - started,
                                        60 * self.minutes)
                with self._guard.step():
                    self._set_total(total)
                tqdm.write(f"steps {timed_from + 1}..{state['step']} took {now - started:.1f} s: "
                           f"training for {total} steps (--steps {total} repeats the schedule)")
            return
        # The speed: the steps since the last evaluation (which resets the timer). At the
        # total the run ends: no refit there.
        now = time.perf_counter()
        if timed_from < state["step"] < state["total_steps"] and (
                self._evaluation_due(None)
                or now - self._last_refit > REFIT_FRACTION * 60 * self.minutes):
            self._refit(state["step"], (now - started) / (state["step"] - timed_from))
            self._last_refit = now

    def _refit(self, step, seconds_per_step):
        """Refit the total to the time left at the speed measured (``refit_total_steps``)."""
        state = self.state
        # The evaluations to come share the budget: one every eval_every steps, those of
        # eval_at still ahead, and the final one (held in reserve).
        evaluation = state["eval_seconds"]
        if self.eval_every:
            seconds_per_step += evaluation / self.eval_every
        pending = sum(1 for f in self.eval_at[state["fractions_done"]:]
                      if f < 1 and f * state["total_steps"] > step)
        budget = 60 * self.minutes - evaluation * (1 + pending)
        total = refit_total_steps(state["total_steps"], step, self._elapsed(), budget,
                                  seconds_per_step)
        if total != state["total_steps"]:
            change = "shortened" if total < state["total_steps"] else "lengthened"
            with self._guard.step():
                self._set_total(total)
                state["refits"] += 1
            tqdm.write(f"step {step}: {seconds_per_step:.2f} s per step, {change} to "
                       f"{total} steps")

    def _set_total(self, total):
        self.state["total_steps"] = total
        if self.schedule is not None:
            self.schedule.stretch(total)
        self._bar.total = total
        self._bar.refresh()

    # ------------------------------------------------------------------- evaluation
    def _evaluation_due(self, stop):
        state = self.state
        step, total = state["step"], state["total_steps"]
        if state["evaluated_at"] == step:
            return False
        if stop is not None:
            return True  # the end of the run
        if step == 0:
            return False
        if self.eval_every and step % self.eval_every == 0:
            return True
        done = state["fractions_done"]
        return total is not None and done < len(self.eval_at) and step >= self.eval_at[done] * total

    def _evaluate(self):
        """Evaluate; record; save ``best.npz`` when the metric improved, and ``last.npz``."""
        started = time.perf_counter()
        metrics = self.evaluate()  # a Ctrl-C here stops at once: the state is between steps
        self.model.train()
        if not isinstance(metrics, dict) or self.metric not in metrics:
            raise ValueError(f"evaluate() must return a dict with {self.metric!r}, got "
                             f"{sorted(metrics) if isinstance(metrics, dict) else metrics!r}")
        value = float(metrics[self.metric])
        state = self.state
        with self._guard.step():
            record = {"step": state["step"], "elapsed": self._elapsed(),
                      **json_safe(metrics, keep_non_finite=True)}
            self.history["evaluations"].append(record)
            state["evaluated_at"] = state["step"]
            total = state["total_steps"]
            while total is not None and state["fractions_done"] < len(self.eval_at) \
                    and state["step"] >= self.eval_at[state["fractions_done"]] * total:
                state["fractions_done"] += 1
            improved = self._improves(value)
            if improved:
                state["best_step"], state["best_value"] = state["step"], value
            state["eval_seconds"] = time.perf_counter() - started
            if improved:
                self._save(self.best_path)
            self._save(self.last_path)
        self._timer = (time.perf_counter(), state["step"])  # speed measured between evaluations
        scalars = ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                            if k not in ("step", "elapsed") and isinstance(v, float))
        recent = self.history["losses"].get("loss", [])[-(self.eval_every or 50):]
        loss = f"loss {np.mean(recent):.4f}, " if recent else ""
        tqdm.write(f"step {state['step']} ({record['elapsed'] / 60:.1f} min): {loss}{scalars}"
                   + (" (best)" if improved else ""))

    def _improves(self, value):
        best = self.state["best_value"]
        if self.state["best_step"] < 0 or best is None or math.isnan(best):
            return True
        return value > best if self.mode == "max" else value < best

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self):
        """The run as a dict for ``nn.save`` (see the module docstring)."""
        self.state["elapsed"] = self._elapsed()
        self.state["cpu_seconds"] = self._cpu_seconds()
        states = {name: rng.bit_generator.state for name, rng in self.generators.items()}
        states["nn"] = default_generator().bit_generator.state
        return {
            "engine": dict(self.state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "batches": self.batches.state_dict(),
            "generators": states,
            "history": {"lr": np.asarray(self.history["lr"], np.float64),
                        "losses": {name: np.asarray(values, np.float64)
                                   for name, values in self.history["losses"].items()}},
            "evaluations": json.dumps(self.history["evaluations"]),  # any keys, NaN kept
            "config": self.config,
            "info": self.info,
        }

    def _save(self, path):
        save(self.checkpoint(), path)  # atomic: temporary file + rename
        if path == self.last_path:
            self._saved_step = self.state["step"]
            self._last_save = time.perf_counter()

    def _restore(self, checkpoint):
        """Continue from ``checkpoint``; every part is checked, a misfit is a ResumeError."""
        state = _check_engine_state(checkpoint, self.kind, self.last_path)
        parts = [("model", self.model), ("optimizer", self.optimizer), ("batches", self.batches)]
        if self.schedule is not None:
            parts.append(("schedule", self.schedule))
        for name, part in parts:
            try:
                part.load_state_dict(checkpoint[name])
            except (KeyError, ValueError, TypeError) as error:
                raise ResumeError(f"{self.last_path}: its {name} state does not fit this "
                                  f"run: {error}") from None
        saved = checkpoint["generators"]
        if set(saved) != set(self.generators) | {"nn"}:
            raise ResumeError(f"{self.last_path} has the generators {sorted(saved)}, this run "
                              f"{sorted(set(self.generators) | {'nn'})}")
        try:
            for name, rng in self.generators.items():
                rng.bit_generator.state = saved[name]
            default_generator().bit_generator.state = saved["nn"]
        except (KeyError, ValueError, TypeError) as error:
            raise ResumeError(f"{self.last_path}: a generator state is invalid: {error}") from None
        self.state.update(state)
        self.history = {"lr": [float(v) for v in checkpoint["history"]["lr"]],
                        "losses": {name: [float(v) for v in values] for name, values
                                   in checkpoint["history"]["losses"].items()},
                        "evaluations": json.loads(checkpoint["evaluations"])}
        self._iterator = None  # a new iteration starts at the restored position
        self._saved_step = state["step"]

    # ---------------------------------------------------------------------- results
    def summary(self):
        """The run in numbers: the engine's part of ``metrics.json``."""
        state = self.state
        return {
            "kind": self.kind,
            "steps": state["step"],
            "total_steps": state["total_steps"],
            "stopped_by": state["stopped_by"],
            "train_seconds": round(state["elapsed"], 3),
            "cpu_seconds": round(state["cpu_seconds"], 3),
            "schedule_refits": state["refits"],
            "best_step": state["best_step"],
            "best": {self.metric: state["best_value"]},
            "evaluations": self.history["evaluations"],
            "load_average": _load_average(),
            "cpu_count": os.cpu_count(),
            "config": self.config,
        }

    def write_results(self, results=None):
        """Write ``metrics.json`` (``summary()`` and ``results``, e.g. test metrics of the
        best checkpoint) and ``history.json`` (losses and rate per step, evaluations),
        atomically. NaN is written as null.

        Returns:
            dict: what ``metrics.json`` holds.
        """
        metrics = {**self.summary(), **(results or {})}
        write_json(os.path.join(self.out, "metrics.json"), metrics, indent=2)
        history = {"step": list(range(1, self.state["step"] + 1)), "lr": self.history["lr"],
                   "losses": self.history["losses"], "evaluations": self.history["evaluations"]}
        write_json(os.path.join(self.out, "history.json"), history, indent=None)
        return metrics

    def _interrupted(self):
        """Save ``last.npz`` if the state is whole; the exception that reports it."""
        if self._guard.consistent:
            try:
                self._save(self.last_path)
                return TrainingInterrupted(self.state["step"], self.last_path, saved=True)
            except KeyboardInterrupt:  # a second Ctrl-C while saving: the old file stays
                pass
        return TrainingInterrupted(self._saved_step, self.last_path, saved=False)


# ============================================================================ checkpoints
def load_checkpoint(path, kind):
    """Read a run's checkpoint and check that a ``kind`` trainer can continue it.

    Returns:
        dict: the checkpoint (``nn.load``); ``["config"]`` is the trainer's configuration.
    Raises:
        ResumeError: no such file, not a checkpoint, another trainer's, or an engine
            state out of range (a negative step or elapsed time, ...).
    """
    try:
        checkpoint = load(path)
    except FileNotFoundError:
        raise ResumeError(f"--resume: there is no checkpoint {path} to continue") from None
    except CheckpointError as error:
        raise ResumeError(f"--resume: {error}") from None
    _check_engine_state(checkpoint, kind, path)
    return checkpoint


def saved_config(config_class, saved, what):
    """The ``config_class`` dataclass saved as the dict ``saved`` in a checkpoint, validated.

    Lists come back as tuples in ``eval_at``, ``classes`` and the values of ``model``
    (where the class has those fields).

    Args:
        what (str): the run, for the message (``"a RetinaNet run's"``).
    Raises:
        ResumeError: ``saved`` is not such a configuration.
    """
    try:
        values = dict(saved)
        for name in ("eval_at", "classes"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        if isinstance(values.get("model"), dict):
            values["model"] = {k: tuple(v) if isinstance(v, list) else v
                               for k, v in values["model"].items()}
        return config_class(**values).validate()
    except (KeyError, TypeError, ValueError) as error:
        raise ResumeError(f"the checkpoint's configuration is not {what}: {error}") from None


def start_run(config, resume, kind, what, quick, keep=("progress",)):
    """The configuration and checkpoint a run starts from.

    Args:
        config: the run's configuration dataclass (``validate()``, ``out``, ``quick``).
        resume (bool): continue ``config.out/last.npz`` with its saved configuration; only
            the fields ``keep`` come from ``config``.
        kind (str): the trainer's name in its checkpoints.
        what (str): the run, for messages (``saved_config``).
        quick (callable): config -> the configuration of a ``--quick`` run.
    Returns:
        tuple: the configuration, and the checkpoint dict (None for a new run).
    Raises:
        ResumeError: ``resume`` without a ``last.npz`` of a ``kind`` run.
    """
    config.validate()
    if resume:
        checkpoint = load_checkpoint(os.path.join(config.out, LAST), kind)
        saved = saved_config(type(config), checkpoint["config"], what)
        return replace(saved, **{name: getattr(config, name) for name in keep}), checkpoint
    return (quick(config) if config.quick else config), None


def _check_engine_state(checkpoint, kind, path):
    """The engine entry of ``checkpoint``, checked (ResumeError naming what is wrong)."""
    state = checkpoint.get("engine") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "kind" not in state:
        raise ResumeError(f"{path} is not a checkpoint of a training run (no engine state)")
    if state["kind"] != kind:
        raise ResumeError(f"{path} is a checkpoint of a {state['kind']!r} run, not of {kind!r}")
    missing = {"step", "total_steps", "fitted", "elapsed", "cpu_seconds", "refits",
               "evaluated_at", "fractions_done", "eval_seconds", "best_step", "best_value",
               "stopped_by"} - set(state)
    missing |= {"model", "optimizer", "schedule", "batches", "generators", "history",
                "evaluations", "config"} - set(checkpoint)
    if missing:
        raise ResumeError(f"{path} lacks {sorted(missing)}")

    def check(name, ok, expected):
        if not ok:
            raise ResumeError(f"{path}: {name} must be {expected}, got {state[name]!r} "
                              f"(a damaged or edited checkpoint)")

    def count(value, low=0):
        return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= low

    def seconds(value):
        return isinstance(value, float) and math.isfinite(value) and value >= 0

    check("step", count(state["step"]), "an int >= 0")
    check("total_steps", state["total_steps"] is None or count(state["total_steps"], 1),
          "None or an int >= 1")
    check("fitted", isinstance(state["fitted"], bool), "True or False")
    for name in ("elapsed", "cpu_seconds", "eval_seconds"):
        check(name, seconds(state[name]), "a finite number of seconds >= 0")
    check("refits", count(state["refits"]), "an int >= 0")
    for name in ("evaluated_at", "best_step"):
        check(name, count(state[name], -1) and state[name] <= state["step"],
              f"an int in [-1, step {state['step']}]")
    check("fractions_done", count(state["fractions_done"]), "an int >= 0")
    lengths = {len(v) for v in checkpoint["history"]["losses"].values()}
    lengths.add(len(checkpoint["history"]["lr"]))
    if lengths != {state["step"]}:
        raise ResumeError(f"{path}: the history holds {sorted(lengths)} steps, the run "
                          f"{state['step']} (a damaged or edited checkpoint)")
    return {k: state[k] for k in state if k not in ("kind", "format")}


# ========================================================================= command line
def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}")
    return value


def positive_int(text):
    """argparse type: an int >= 1 (``--steps``, ``--threads``, ``--batch-size``)."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an int >= 0 (``--seed``)."""
    return _int_at_least(text, 0)


def positive_float(text):
    """argparse type: a finite number > 0 (``--minutes``, ``--lr``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_training_arguments(parser, minutes, threads=None):
    """Add the flags every trainer shares to ``parser``.

    Args:
        parser (argparse.ArgumentParser): the trainer's parser; its ``prog`` should be
            the command that runs it (``"python -m detection.train_retinanet"``): the
            resume command printed after Ctrl-C starts with it.
        minutes (float): the trainer's default budget (used when neither ``--minutes``
            nor ``--steps`` is given).
        threads (int, optional): the trainer's default ``--threads`` (None: the library's).
    """
    parser.add_argument("--data", required=True,
                        help="dataset root (generated there first if it does not exist)")
    parser.add_argument("--out", required=True,
                        help="run directory: last.npz, best.npz, metrics.json, figures")
    parser.add_argument("--minutes", type=positive_float, default=None,
                        help=f"wall-clock budget of training, evaluations included (default "
                             f"{minutes:g}; none when only --steps is given)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="optimization steps (default: as many as fit in --minutes); "
                             "with --seed it fixes the run")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT/last.npz with its saved configuration (only "
                             "--quiet and --threads apply)")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run: checks the machinery, not accuracy")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=positive_int, default=threads,
                        help="threads of the library's kernels (default "
                             f"{'DETSEG_NUM_THREADS or 2' if threads is None else threads})")
    parser.set_defaults(default_minutes=float(minutes))


def parse_training_arguments(parser, argv, kind, read_run=None):
    """Parse and check the command line; set the thread count.

    ``--minutes`` defaults to the trainer's budget unless ``--steps`` is given alone.
    A usage error (bad value, ``--out`` an existing file, ``--resume`` without a
    ``last.npz`` of a ``kind`` run) prints a message and exits with status 2.

    Args:
        read_run (callable, optional): ``read_run(out)`` raises ``ResumeError`` when the
            run directory ``out`` holds no run to continue, for a trainer that records its
            run elsewhere than in ``last.npz`` (None: ``out/last.npz`` must be a
            checkpoint of a ``kind`` run).
    Returns:
        argparse.Namespace
    """
    args = parser.parse_args(argv)
    if args.minutes is None and args.steps is None:
        args.minutes = args.default_minutes
    if os.path.isfile(args.out):
        parser.error(f"--out {args.out} is a file; it must be a run directory")
    if args.resume:
        try:
            if read_run is None:
                load_checkpoint(os.path.join(args.out, LAST), kind)
            else:
                read_run(args.out)
        except ResumeError as error:
            parser.error(str(error))
    set_threads(args.threads)
    return args


def set_threads(threads):
    """Run the library's kernels on ``threads`` threads (None: keep the default).

    BLAS is pinned to one thread inside the kernels at run time (``nn._threads``), so
    no new process is needed; ``DETSEG_NUM_THREADS`` is set for the processes this one
    starts (data workers).
    """
    if threads is None:
        return
    set_num_threads(threads)
    os.environ["DETSEG_NUM_THREADS"] = str(threads)


def resume_command(parser, argv=None):
    """The command line that continues this run: the same arguments plus ``--resume``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in argv:
        argv.append("--resume")
    return f"{parser.prog} {shlex.join(argv)}"


@contextlib.contextmanager
def command_errors(parser, argv=None, out=None):
    """Turn the ends of a training command into exit statuses and messages.

    - ``ResumeError``: a usage error, status 2.
    - Ctrl-C: the command that continues the run (``--resume``), status 130. Outside
      the training loop (reading data, the final evaluation) nothing new is saved; if
      the run directory ``out`` holds a ``last.npz`` the same command continues it.
    """
    try:
        yield
    except ResumeError as error:
        parser.error(str(error))
    except KeyboardInterrupt as stop:
        if isinstance(stop, TrainingInterrupted) and stop.step is not None:
            saved = "saved" if stop.saved else "kept (the step in progress was abandoned)"
            print(f"\ninterrupted: {stop.path} {saved} at step {stop.step}. Continue with:\n"
                  f"  {resume_command(parser, argv)}", file=sys.stderr, flush=True)
        elif out is not None and os.path.isfile(os.path.join(out, LAST)):
            print(f"\ninterrupted outside a training step: nothing new saved. Continue "
                  f"{os.path.join(out, LAST)} with:\n  {resume_command(parser, argv)}",
                  file=sys.stderr, flush=True)
        else:
            print("\ninterrupted before the first checkpoint: nothing to resume",
                  file=sys.stderr, flush=True)
        raise SystemExit(130) from None


# ================================================================================ helpers
def _check_count(name, value, low):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                              or value < low):
        raise ValueError(f"{name} must be None or an int >= {low}, got {value!r}")


def _check_positive(name, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                              or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be None or a finite number > 0, got {value!r}")


def _load_average():
    """The 1, 5 and 15 minute load averages (None where the OS has none): a shared
    machine slows a run down."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
