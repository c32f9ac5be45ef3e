"""A run's curves from its TensorBoard events, and the tokens a curve needs to reach a target loss.

pretrain_gpt.py writes Megatron-DeepSpeed's tags: at every iteration ``steps-vs-tokens/y=tokens,x=steps``
(consumed tokens, step = iteration) and the data-efficiency fields ``seqlen/<field>`` (curriculum seqlen,
difficulty voc, random ltd reserved length, layer tokens); at every --log-interval ``iteration-time`` (the mean
step time since the previous log line, ``--log-timers-to-tensorboard``); at every validation
``lm loss validation`` (step = iteration).  Tags are matched on their name after the ``group/`` prefix, so the
older flat names read too.  A resumed run appends a new event file and repeats the iterations after its last
checkpoint: later files win.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

TOKENS_TAG = "y=tokens,x=steps"
VALID_TAG = "lm loss validation"
TIME_TAG = "iteration-time"
SCHEDULE_TAGS = {"seqlen/curriculum seqlen": "seqlen", "seqlen/difficulty voc": "voc",
                 "seqlen/random ltd reserved length": "reserved", "seqlen/layer tokens": "layer_tokens"}


@dataclass
class RunCurves:
    """Per-iteration series of one run (dicts keyed by iteration)."""

    tokens: dict[int, int] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    valid_loss: dict[int, float] = field(default_factory=dict)
    schedule: dict[str, dict[int, float]] = field(default_factory=dict)

    @property
    def last_iteration(self) -> int:
        """The last iteration seen (0 when empty)."""
        return max(self.tokens, default=0)

    def cumulative_seconds(self, iteration: int) -> float:
        """Training step time summed up to ``iteration`` (excludes start-up, evaluation and checkpoints)."""
        return sum(v for k, v in self.seconds.items() if k <= iteration)

    def layer_tokens(self, iteration: int, num_layers: int) -> int:
        """Tokens processed summed over layers after ``iteration`` (random-LTD's counter, else tokens x L)."""
        counter = self.schedule.get("layer_tokens")
        if counter:
            known = [k for k in counter if k <= iteration]
            if known:
                return int(counter[max(known)])
        return int(self.tokens.get(iteration, 0)) * num_layers

    def validation(self, num_layers: int) -> list[dict[str, float]]:
        """Validation points: iteration, tokens, seconds, layer tokens, loss (sorted by iteration)."""
        out = []
        seconds = 0.0
        times = sorted(self.seconds.items())
        t = 0
        for it in sorted(self.valid_loss):
            while t < len(times) and times[t][0] <= it:
                seconds += times[t][1]
                t += 1
            out.append({"iteration": it, "tokens": int(self.tokens.get(it, 0)), "seconds": seconds,
                        "layer_tokens": self.layer_tokens(it, num_layers), "loss": self.valid_loss[it]})
        return out


def _value(v) -> float:  # noqa: ANN001 - a tensorboard Summary.Value
    if v.HasField("simple_value"):
        return float(v.simple_value)
    return float(v.tensor.float_val[0]) if v.tensor.float_val else float(v.tensor.double_val[0])


def _name(tag: str) -> str:
    """The series name: the tag without its ``group/`` prefix (``seqlen/`` tags are kept whole)."""
    return tag if tag.startswith("seqlen/") else tag.split("/", 1)[-1]


def read_curves(tensorboard_dir: str) -> RunCurves:
    """All event files of a run directory, in the order they were written (later files override)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    curves = RunCurves()
    files = sorted(glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*")), key=os.path.getmtime)
    for path in files:
        timed = None  # last iteration whose step time is known in this file
        mean = None
        current = None  # the iteration of the events being read
        for event in EventFileLoader(path).Load():
            step = int(event.step)
            for v in event.summary.value:
                name = _name(v.tag)
                if name in (TOKENS_TAG, "lm loss"):  # (the flat tags of older versions: lm loss, then vs tokens)
                    if name == TOKENS_TAG:
                        curves.tokens[step] = int(_value(v))
                    current = step
                    if timed is None:
                        timed = step - 1
                elif name == "lm loss vs tokens" and current is not None:
                    curves.tokens[current] = step
                elif name == VALID_TAG:
                    curves.valid_loss[step] = _value(v)
                elif name == TIME_TAG:
                    mean = _value(v)
                    for it in range((timed if timed is not None else step - 1) + 1, step + 1):
                        curves.seconds[it] = mean
                    timed = step
                elif v.tag in SCHEDULE_TAGS:
                    curves.schedule.setdefault(SCHEDULE_TAGS[v.tag], {})[step] = _value(v)
        # steps after the last log line: their mean time is not written; use the last interval's
        for it in [i for i in curves.tokens if mean is not None and timed is not None and i > timed]:
            curves.seconds[it] = mean
    return curves


def tokens_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """First x at which the curve (x, loss) reaches ``target``, linearly interpolated; None if it never does.

    ``points`` are sorted by x. The curve reaches the target between two evaluations where the loss goes from
    above to at-or-below it; the crossing is placed on the straight line between them.  A first point already
    at or below the target gives its own x.
    """
    prev = None
    for x, loss in points:
        if loss <= target:
            if prev is None or prev[1] == loss:
                return float(x)
            x0, y0 = prev
            return float(x0 + (y0 - target) / (y0 - loss) * (x - x0))
        prev = (x, loss)
    return None
