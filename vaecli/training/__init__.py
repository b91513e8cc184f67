"""The training loop and what happens around it.

run.py          TrainingRun: everything one run is made of, set up from a TrainConfig
step.py         one optimiser step: batch, forward, objective, backward, NaN guard, update
loop.py         fit(): epochs of steps, then each epoch's report
callbacks.py    the Callback hooks, and the registry of plugin callbacks (vaecli.callbacks)
outputs.py      built-in callbacks: metrics.jsonl and curves.png, pictures, model and checkpoints
interrupts.py   SIGINT/SIGTERM: finish the step, write a checkpoint, stop
tensorboard.py  the ``tensorboard`` callback (``vae train --log tensorboard``)
"""

from vaecli.training.callbacks import Callback
from vaecli.training.interrupts import TrainingInterrupted
from vaecli.training.run import TrainingRun

__all__ = ["Callback", "TrainingInterrupted", "TrainingRun"]
