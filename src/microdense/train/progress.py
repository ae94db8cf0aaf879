"""How far a run has come: its steps against the step limit, its training seconds against the time budget.

Every schedule (learning rate, warm-up, step milestones, a model's `set_progress`) reads this one number, so a run
that its time budget stops still completes its schedule, and its last step runs at the schedule's final value.
"""
import time
from typing import Any, Callable, Dict, Optional


class RunProgress:
    """Progress in [0, 1] of each optimizer step: the later of step / (total_steps - 1) and seconds / budget.

    Training seconds are counted by `start` / `tick` / `pause` around the training batches only, so validation,
    checkpointing and start-up are outside the budget. When the next step would end past the budget (at the
    recent seconds per step), or a step ran past the budget unforeseen, the next step is made the last one and runs at
    progress 1.

    Args:
        total_steps: optimizer steps the epoch and step limits allow; None: no such limit.
        budget_s: training seconds allowed; None: no budget. (Neither: the run never ends by itself; progress 0.)
        clock: seconds now (tests give a fake one).
    """

    def __init__(self, total_steps: Optional[int], budget_s: Optional[float],
                 clock: Callable[[], float] = time.perf_counter):
        self.total_steps, self.budget_s, self.clock = total_steps, budget_s, clock
        self.elapsed = 0.0  # training seconds so far, kept across resumes
        self.step_s: Optional[float] = None  # recent seconds per step (exponential average)
        self.final_step: Optional[int] = None  # the step the budget has made the last one
        self._mark: Optional[float] = None

    def start(self) -> None:
        """Training batches begin (again): count time from now."""
        self._mark = self.clock()

    def pause(self) -> None:
        """Leave the time since the last mark out (validation, checkpointing)."""
        self._mark = None

    def tick(self) -> None:
        """A step has ended: add its seconds (since the last mark) to the training time."""
        now = self.clock()
        if self._mark is not None:
            seconds = now - self._mark
            self.elapsed += seconds
            self.step_s = seconds if self.step_s is None else 0.8 * self.step_s + 0.2 * seconds
        self._mark = now

    def done_after(self, step: int) -> bool:
        """Whether training ends once step `step` (0-based) has run; plans the budget's last step."""
        if self.total_steps is not None and step + 1 >= self.total_steps:
            return True
        if self.budget_s is None:
            return False
        if self.final_step is not None:
            return step >= self.final_step
        # NOTE: also when a step overran the budget unforeseen (elapsed already past it): one more step, at
        # progress 1, so the run still ends at the schedule's final value.
        if self.elapsed + (self.step_s or 0.0) >= self.budget_s:
            self.final_step = step + 1
        return False

    def at(self, step: int) -> float:
        """Progress of step `step`, about to run: 0 at the first step, 1 at the last."""
        if self.final_step is not None and step >= self.final_step:
            return 1.0
        fraction = 0.0
        if self.total_steps is not None:
            fraction = step / (self.total_steps - 1) if self.total_steps > 1 else 1.0
        if self.budget_s is not None:
            fraction = max(fraction, self.elapsed / self.budget_s)
        return min(1.0, fraction)

    def state_dict(self) -> Dict[str, Any]:
        return {"elapsed": self.elapsed, "step_s": self.step_s, "final_step": self.final_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.elapsed, self.step_s, self.final_step = state["elapsed"], state["step_s"], state["final_step"]
