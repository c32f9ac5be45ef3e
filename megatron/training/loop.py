"""train_step (DeepSpeed forward/backward/step over micro-batches), evaluate, and the training loop."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch

from megatron.config import RunConfig
from megatron.training.data_efficiency_hooks import DataEfficiency
from megatron.training.rng import fork_rng
from megatron.training.spec import Batch, ForwardStep
from megatron.training.state import TrainState
from megatron.training.training_log import StepRecord, TrainingLogger, now

logger = logging.getLogger("megatron.training")


class DataExhausted(RuntimeError):
    """The training data iterator ran out before the budget was reached."""


@dataclass
class StepOutput:
    """Result of one optimizer step."""

    losses: dict[str, float]
    """Reported metrics averaged over micro-batches and data-parallel ranks."""
    grad_norm: float | None
    """Global gradient norm before clipping (None when unknown or when the update was skipped)."""
    skipped: bool
    """Update skipped (fp16 overflow): the engine's ``was_step_applied()`` is False after the last micro-batch."""
    last_batch: Batch
    """The last (post-processed) micro-batch, for the data-efficiency step accounting."""


@dataclass
class TrainResult:
    """Per-iteration history of a run, returned by ``pretrain``."""

    state: TrainState
    """Final counters."""
    losses: list[dict[str, float]] = field(default_factory=list)
    """Reported metrics of every iteration run in this process (index 0 = first iteration run)."""
    iterations: list[int] = field(default_factory=list)
    """Iteration number of each entry of ``losses``."""
    lrs: list[float] = field(default_factory=list)
    """Learning rate applied at each of those iterations."""
    evaluations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """(iteration, validation metrics) of every evaluation."""
    exit_reason: str = ""
    """Why the loop stopped (``"signal SIGTERM"`` when --exit-signal-handler stopped it)."""
    exit_signal: int | None = None
    """The signal (SIGTERM/SIGINT) that stopped the run, if one did."""

    @property
    def exit_status(self) -> int:
        """Process exit status for this result: 0, or 128 + the signal number (SIGINT 130, SIGTERM 143)."""
        return 0 if self.exit_signal is None else 128 + int(self.exit_signal)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""What --exit-signal-handler catches: a scheduler's pre-emption notice and Ctrl-C."""


DUPLICATE_WINDOW_S = 2.0
"""A repeat of the stop signal this soon after the first is the same request, not a second one: launchers
(torchrun, deepspeed) forward SIGTERM/SIGINT to every rank, so under a scheduler that signals the whole job, or a
Ctrl-C in a terminal, each rank gets it twice within milliseconds."""


class ExitSignals:
    """Records the first SIGTERM/SIGINT so the loop stops after the current step; a second one kills at once.

    A repeat within ``DUPLICATE_WINDOW_S`` of the first is the launcher's forwarded copy and is ignored. A later
    one terminates the process at once (the OS default disposition, re-raised). When the loop acts on the
    signal (:meth:`escalate`) the dispositions go back to the OS default, so during the final save a second signal
    kills the process immediately even while it is inside a long kernel or collective (the checkpoint writes are
    atomic, so that is safe). Megatron's ``--exit-signal-handler`` exits with status 0; here the status is
    128 + signal (130 for SIGINT, 143 for SIGTERM), what a shell reports for a process the signal killed.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.received_at: float | None = None
        """time.monotonic() of the first signal."""
        self.handled = False
        """The training loop acted on ``received`` (saved and reported it)."""

    def _handle(self, signum: int, frame: Any) -> None:
        now_s = time.monotonic()
        if self.received is None or self.received_at is None:
            self.received, self.received_at = signum, now_s
        elif now_s - self.received_at >= DUPLICATE_WINDOW_S:  # a real second signal: exit now, as the OS would
            _restore_default_dispositions()
            os.kill(os.getpid(), signum)

    def escalate(self) -> None:
        """The loop stops now: let copies of the first signal arrive (the rest of ``DUPLICATE_WINDOW_S``), then give
        SIGTERM/SIGINT back to the OS default so a further signal kills at once. Main thread only."""
        if self.received_at is not None:
            left = DUPLICATE_WINDOW_S - (time.monotonic() - self.received_at)
            if left > 0:
                time.sleep(left)  # a copy arriving meanwhile runs _handle (ignored); the sleep resumes
        _restore_default_dispositions()


def _restore_default_dispositions() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def exit_signal_handler(enabled: bool) -> Iterator[ExitSignals | None]:
    """Install the SIGTERM/SIGINT handler (main thread only) for the block; restore the previous handlers after."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield None
        return
    signals = ExitSignals()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signals._handle)
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def signal_exit(signals: ExitSignals | None, result: TrainResult, saved_to: str | None) -> None:
    """After training: turn a signal caught by ``exit_signal_handler`` into ``result`` and one log line.

    ``saved_to`` is the --save directory if the checkpoint of ``result.state.iteration`` was written. A no-op if
    no signal came or the loop already reported it.
    """
    if signals is None or signals.received is None or signals.handled:
        return
    _report_signal(signals.received, result, saved_to)
    signals.handled = True


def _report_signal(signum: int, result: TrainResult, saved_to: str | None) -> None:
    name = signal.Signals(signum).name
    result.exit_signal = signum
    result.exit_reason = f"signal {name}"
    it = result.state.iteration
    done = (f"saved checkpoint at iteration {it} to {saved_to}" if saved_to
            else f"stopped at iteration {it}, no checkpoint saved (no --save)")
    logger.info("received %s: %s; exiting with status %d", name, done, result.exit_status)


def _is_fp32_zero0(engine: Any) -> bool:
    return engine.zero_optimization_stage() == 0 and not engine.bfloat16_enabled() and not engine.fp16_enabled()


def _total_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm over a list of tensors."""
    if not tensors:
        return 0.0
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return float(torch.nn.utils.get_total_norm(tensors, norm_type=2.0, foreach=True))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])))


def _grad_norm(engine: Any) -> float:
    return _total_norm([p.grad for p in engine.module.parameters() if p.grad is not None])


def _dp_average(values: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Average metric sums over `count` micro-batches and all data-parallel ranks (one all-reduce)."""
    if not values:
        return {}
    keys = sorted(values)
    packed = torch.stack([values[k].detach().float().reshape(()) for k in keys]) / max(1, count)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(packed)
        packed /= torch.distributed.get_world_size()
    return dict(zip(keys, packed.cpu().tolist()))


def train_step(engine: Any, data_iterator: Iterator[Batch], forward_step: ForwardStep, data_eff: DataEfficiency,
               state: TrainState, config: RunConfig, *, want_grad_norm: bool = True) -> StepOutput:
    """One optimizer step: engine.forward/backward/step on every micro-batch (DeepSpeed accumulates).

    In plain fp32 without ZeRO DeepSpeed keeps no gradient norm; it is computed here when `want_grad_norm`.
    """
    sums: dict[str, torch.Tensor] = {}
    grad_norm: float | None = None
    batch: Batch = {}
    n_micro = config.training.num_micro_batches
    own_norm = want_grad_norm and _is_fp32_zero0(engine)
    for _ in range(n_micro):
        try:
            batch = next(data_iterator)
        except StopIteration:
            raise DataExhausted(f"training data ran out at iteration {state.iteration + 1} after "
                                f"{state.consumed_train_samples} samples") from None
        batch = data_eff.post_process(batch, state)
        loss, metrics = forward_step(batch, engine, config)
        engine.backward(loss)
        if own_norm and engine.is_gradient_accumulation_boundary():
            grad_norm = _grad_norm(engine)  # gradients are all-reduced here; DeepSpeed keeps no fp32 norm
        engine.step()
        for key, value in metrics.items():
            value = value.detach()
            sums[key] = sums[key] + value if key in sums else value.clone()
    skipped = not step_applied(engine)
    if skipped:
        grad_norm = None  # an overflow step's norm is inf/nan: the log says "skipped" instead
    elif not _is_fp32_zero0(engine):
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else None
    return StepOutput(_dp_average(sums, n_micro), grad_norm, skipped, batch)


def step_applied(engine: Any) -> bool:
    """DeepSpeed's ``was_step_applied()`` after the last micro-batch: False when fp16 overflow skipped the update."""
    applied = getattr(engine, "was_step_applied", None)
    if callable(applied):
        return bool(applied())
    return getattr(engine, "_step_applied", True) is not False


def evaluate(model: Any, data_loader: Iterable[Batch] | None, forward_step: ForwardStep, config: RunConfig, *,
             max_micro_batches: int | None = None, progress: str | None = None) -> dict[str, float]:
    """Mean of each reported metric over the first micro-batches of `data_loader`; training RNG untouched.

    ``model`` is the DeepSpeed engine during training or a plain module (``load_for_inference``). By default
    the first --eval-iters global batches (eval_iters x micro-batches per step); ``max_micro_batches`` sets
    another count (-1: every micro-batch of the loader). ``progress`` labels a tqdm bar.
    The model's train/eval mode is restored afterwards; metrics are averaged over data-parallel ranks.
    """
    if data_loader is None or (config.training.eval_iters == 0 and max_micro_batches is None):
        return {}
    if max_micro_batches is None:
        max_micro_batches = config.training.eval_iters * config.training.num_micro_batches
    total = len(data_loader) if max_micro_batches < 0 else max_micro_batches  # type: ignore[arg-type]
    sums: dict[str, torch.Tensor] = {}
    count = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), fork_rng():
            data_iterator = iter(data_loader)  # creating a DataLoader iterator draws from torch's RNG
            bar = None
            if progress is not None:
                from tqdm import tqdm

                bar = tqdm(total=total, desc=progress, unit="batch", disable=True if total < 50 else None, leave=False)
            while count < total:
                try:
                    batch = next(data_iterator)
                except StopIteration:
                    break
                _, metrics = forward_step(batch, model, config)
                for key, value in metrics.items():
                    sums[key] = sums[key] + value.detach() if key in sums else value.detach().clone()
                count += 1
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
    finally:
        model.train(was_training)
    return _dp_average(sums, count)


def _params_norm(engine: Any) -> float:
    """L2 norm of all parameters; under ZeRO-3 from every rank's own shard, summed over the ranks."""
    params = list(engine.module.parameters())
    if not any(hasattr(p, "ds_tensor") for p in params):
        return _total_norm([p.detach() for p in params])
    from deepspeed.accelerator import get_accelerator

    device = get_accelerator().current_device_name()
    square = torch.zeros((), dtype=torch.float64, device=device)
    for p in params:
        shard = _zero3_owned(p)
        if shard.numel():
            square += shard.detach().double().pow(2).sum().to(device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(square)  # shards of different ranks never overlap
    return float(square.sqrt())


def _zero3_owned(param: Any) -> torch.Tensor:
    """The elements of a ZeRO-3 parameter this rank owns: its shard without the padding of the last one."""
    shard = param.ds_tensor.reshape(-1)
    group = getattr(param, "ds_process_group", None)
    rank = torch.distributed.get_rank(group=group) if torch.distributed.is_initialized() else 0
    start = rank * shard.numel()
    return shard[:max(0, min(shard.numel(), param.ds_numel - start))]


def parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters, also once ZeRO-3 has partitioned them (each then holds an empty placeholder)."""
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())


def _current_lr(engine: Any) -> float:
    return float(engine.optimizer.param_groups[0]["lr"])


def _all_ranks_max(value: int) -> int:
    """The largest of every rank's `value` (one tiny all-reduce on the backend's device; none on a single rank)."""
    from megatron.data_efficiency.collectives import all_reduce_max

    return all_reduce_max(value)


def _all_ranks_agree(flag: bool) -> bool:
    """True if `flag` is true on any rank (so all ranks stop together)."""
    return _all_ranks_max(1 if flag else 0) > 0


def _reports_step(iteration: int, config: RunConfig) -> bool:
    """True if `iteration` is printed or written to TensorBoard (its grad norm is then needed)."""
    log = config.logging
    return (iteration % log.log_interval == 0
            or (log.tensorboard_dir is not None and iteration % log.tensorboard_log_interval == 0))


def budget_reached(state: TrainState, config: RunConfig) -> bool:
    """True once --train-iters/--train-samples or --train-tokens is used up, whichever comes first."""
    t = config.training
    if t.train_iters is not None and state.iteration >= t.train_iters:
        return True
    return t.train_tokens is not None and state.consumed_train_tokens >= t.train_tokens


def train(engine: Any, scheduler: Any, data_iterator: Iterator[Batch], forward_step: ForwardStep,
          data_eff: DataEfficiency, state: TrainState, config: RunConfig, training_logger: TrainingLogger, *,
          evaluate_fn: Callable[[], dict[str, float]], save_fn: Callable[[], None] | None,
          result: TrainResult, signals: ExitSignals | None = None) -> TrainResult:
    """Run optimizer steps until the budget, --exit-interval, --exit-duration-in-mins or a caught signal.

    Evaluates and saves on their intervals. With ``signals`` (--exit-signal-handler), a SIGTERM/SIGINT received on
    any rank stops every rank after the same step, with a checkpoint if --save is set (``result.exit_signal``).
    """
    t, ck = config.training, config.checkpoint
    start = time.time()
    engine.train()
    while not budget_reached(state, config):
        lr = _current_lr(engine)
        t0 = now()
        try:
            out = train_step(engine, data_iterator, forward_step, data_eff, state, config,
                             want_grad_norm=_reports_step(state.iteration + 1, config))
        except DataExhausted as e:
            logger.warning("%s; stopping (raise --train-samples/--train-iters or check the data)", e)
            result.exit_reason = "data exhausted"
            return result
        state.iteration += 1
        state.consumed_train_samples += t.global_batch_size
        acct = data_eff.end_step(out.last_batch, state)  # the one per-step call: tokens, seqlen (spec §3.6)
        state.consumed_train_tokens += acct.tokens
        state.actual_seq_length = acct.actual_seq_length
        state.skipped_iterations += int(out.skipped)
        if not out.skipped:  # as Megatron-DeepSpeed: an fp16 overflow step leaves the LR schedule where it was
            scheduler.step(increment=t.global_batch_size, token_num=state.consumed_train_tokens)
        seconds = now() - t0
        if out.losses and not all(math.isfinite(v) for v in out.losses.values()):
            logger.warning("iteration %d: non-finite loss %s", state.iteration, out.losses)
        record = StepRecord(losses=out.losses, lr=lr, grad_norm=out.grad_norm, step_seconds=seconds, tokens=acct.tokens,
                            skipped=out.skipped, loss_scale=_loss_scale(engine),
                            params_norm=_params_norm(engine) if config.logging.log_params_norm else None,
                            extra=acct.log_fields, notes=acct.log_notes)
        training_logger.record(state, record)
        if state.iteration % config.logging.tensorboard_log_interval == 0:
            training_logger.optimizer_states(state, engine)  # collective under ZeRO: every rank calls it
        result.losses.append(out.losses)
        result.iterations.append(state.iteration)
        result.lrs.append(lr)
        if t.eval_iters and t.eval_interval and state.iteration % t.eval_interval == 0 and not budget_reached(
                state, config):
            metrics = evaluate_fn()
            if metrics:
                training_logger.validation(state, metrics)
                result.evaluations.append((state.iteration, metrics))
        saved = False
        if save_fn is not None and ck.save_interval and state.iteration % ck.save_interval == 0:
            save_fn()
            saved = True
        stop_reason = ""
        # every rank takes part in this all-reduce each step (SIGTERM may reach only some ranks); SIGTERM wins
        signum = _all_ranks_max(signals.received or 0) if signals is not None else 0
        if signum:
            signals.escalate()  # copies of this signal waited out; from here a further one kills at once
            if save_fn is not None and not saved:
                save_fn()
            _report_signal(signum, result, ck.save if save_fn is not None else None)
            signals.handled = True
            return result
        if t.exit_interval and state.iteration % t.exit_interval == 0:
            stop_reason = f"--exit-interval {t.exit_interval}"
        elif t.exit_duration_in_mins and _all_ranks_agree((time.time() - start) / 60.0 > t.exit_duration_in_mins):
            stop_reason = f"--exit-duration-in-mins {t.exit_duration_in_mins}"
        if stop_reason:
            if save_fn is not None and not saved:
                save_fn()
            logger.info("exiting at iteration %d (%s)", state.iteration, stop_reason)
            result.exit_reason = stop_reason
            return result
    result.exit_reason = "budget reached"
    return result


def _loss_scale(engine: Any) -> float | None:
    """The fp16 loss scale of any DeepSpeed optimizer wrapper (fused, unfused, ZeRO); None without fp16."""
    if not engine.fp16_enabled():
        return None
    getter = getattr(engine, "_get_optimizer_loss_scale", None)  # DeepSpeed's own accessor (0.19.x)
    scale = getter() if callable(getter) else None
    optimizer = engine.optimizer
    for holder in (optimizer, getattr(optimizer, "loss_scale_config", None), getattr(optimizer, "loss_scaler", None)):
        if scale is None and holder is not None:
            scale = getattr(holder, "cur_scale", None)
    return float(scale) if scale is not None else None
