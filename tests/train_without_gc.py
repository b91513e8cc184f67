"""Run ``vae ARGS`` under torchrun with the garbage collector off, then fail (exit 3) if any
DistributedDataParallel object is still alive: one left for interpreter shutdown aborts the process."""

import gc
import sys

gc.disable()

from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from vaecli.cli import main  # noqa: E402

code = main(sys.argv[1:])
alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
if alive:
    print(f"{alive} DistributedDataParallel object(s) outlived the process group", file=sys.stderr)
sys.exit(3 if alive else code)
