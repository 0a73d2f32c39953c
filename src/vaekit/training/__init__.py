"""Training: in-memory uint8 data sliced into batches on the device (or streamed shards),
Adam with cosine decay, KL warm-up and free bits, a NaN guard, an optional weight average,
per-epoch test ELBO, atomic checkpoints and exact resume. The model is any
`LatentVariableModel`; the loss is `objectives.TrainingObjective`.

- `loop`: `train`, the loop itself;
- `start`: a new or resumed run's model, data and seeds;
- `epoch`: one epoch's updates, its metrics row and checkpoint;
- `step`: the optimizer step and its guards (clip, skip, NaN guard, weight average);
- `schedules`: learning rate, beta and the time budget;
- `batches`: an epoch's batches on this rank's shard.
"""

from vaekit.device import resolve_device
from vaekit.training.loop import train
from vaekit.training.schedules import TimeBudget, kl_weight, learning_rate
from vaekit.training.step import make_optimizer

__all__ = ["TimeBudget", "kl_weight", "learning_rate", "make_optimizer", "resolve_device", "train"]
