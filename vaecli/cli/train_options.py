"""``vae train``'s options: each flag's type, name and help, as the command's signature names them."""

from __future__ import annotations

from typing import Annotated

import typer

ConfigOpt = Annotated[
    str | None,
    typer.Option(help="A YAML file of training options (keys as in config.yaml); flags override it."),
]
ResumeOpt = Annotated[str | None, typer.Option(help="Continue the run in this folder from its checkpoint.")]
DataNameOpt = Annotated[str, typer.Option(help="Dataset name (see the registry), e.g. mnist.")]
LikelihoodOpt = Annotated[
    str,
    typer.Option(
        help="Decoder distribution: bernoulli, gaussian, categorical, pixelcnn (or a plugin's); "
        "auto: bernoulli for MNIST and grey images, gaussian for colour ones."
    ),
]
LikelihoodOptionOpt = Annotated[
    list[str] | None, typer.Option(help="A likelihood option KEY=VALUE (repeatable).")
]
SigmaOpt = Annotated[
    str | None,
    typer.Option(help="gaussian: a fixed sigma, 'learned' (one value) or 'pixel' (per pixel)."),
]
BinsOpt = Annotated[int | None, typer.Option(help="categorical: grey levels K, 2 to 256.")]
ArchOpt = Annotated[str, typer.Option(help="Architecture: mlp or conv (or a plugin's).")]
ArchOptionOpt = Annotated[
    list[str] | None, typer.Option(help="An architecture option KEY=VALUE (repeatable).")
]
HiddenOpt = Annotated[
    str | None, typer.Option(help="Hidden widths, e.g. 512,256 (same as --arch-opt hidden=...).")
]
LatentDimOpt = Annotated[int, typer.Option(help="Size of z.")]
PriorOpt = Annotated[
    str, typer.Option(help="Prior p(z): normal (N(0, I)), vamp (VampPrior) or mog (a learned mixture).")
]
PriorOptionOpt = Annotated[
    list[str] | None, typer.Option(help="A prior option KEY=VALUE (repeatable), e.g. k=500.")
]
ModelOpt = Annotated[
    str, typer.Option(help="Model: vae (one latent vector) or hierarchical (groups of latents).")
]
ModelOptionOpt = Annotated[
    list[str] | None, typer.Option(help="A model option KEY=VALUE (repeatable), e.g. groups=2,2.")
]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the training set.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Images per step.")]
LrOpt = Annotated[float, typer.Option(help="Adam learning rate (peak of the schedule).")]
LrScheduleOpt = Annotated[str, typer.Option(help="cosine (to 0 over the run) or constant.")]
WeightDecayOpt = Annotated[
    float, typer.Option(help="AdamW's decoupled weight decay on the layers' weights, e.g. 0.01 (0: off).")
]
OutOpt = Annotated[str | None, typer.Option(help="Run folder (default: runs/DATA-LIKELIHOOD-ARCH[-N]).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or epoch rows.")]
LimitTrainOpt = Annotated[int | None, typer.Option(help="Use only the first N training images.")]
LimitTestOpt = Annotated[int | None, typer.Option(help="Use only the first N test images.")]
CheckpointEveryOpt = Annotated[
    int | None, typer.Option(help="Also write checkpoint.safetensors every N steps (always: each epoch).")
]
OnNanOpt = Annotated[
    str, typer.Option(help="A non-finite loss or gradient: stop (default) or skip the batch.")
]
PrecisionOpt = Annotated[
    str,
    typer.Option(help="auto (bf16 on CUDA where supported, else 32), 32, bf16 or 16-mixed (fp16 + scaler)."),
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Compile the training step with torch.compile.")]
NprocOpt = Annotated[
    int | None,
    typer.Option(help="Train with N processes on this machine (starts torchrun; DDP, gloo on CPU)."),
]
ObjectiveOpt = Annotated[
    str | None, typer.Option(help="Training objective: elbo (default) or iwae (or a plugin's).")
]
ObjectiveOptionOpt = Annotated[
    list[str] | None, typer.Option(help="An objective option KEY=VALUE (repeatable).")
]
BetaOpt = Annotated[float | None, typer.Option(help="elbo: weight of the KL term (beta-VAE; 1 is the ELBO).")]
KlWarmupOpt = Annotated[
    float | None,
    typer.Option(help="elbo: raise the KL weight linearly from 0 to --beta over this many epochs."),
]
FreeBitsOpt = Annotated[
    float | None,
    typer.Option(help="elbo: free bits, the least KL in nats per latent dimension (batch mean)."),
]
IwSamplesOpt = Annotated[
    int | None, typer.Option(help="Train on the importance-weighted bound with K samples (iwae).")
]
GradClipOpt = Annotated[
    float | None, typer.Option(help="Scale the gradients down to this L2 norm when above it.")
]
GradSkipOpt = Annotated[
    float | None,
    typer.Option(help="Skip updates whose gradient norm is above this (counted as outlier_steps)."),
]
EmaOpt = Annotated[
    float,
    typer.Option(
        help="Average the weights with this decay (e.g. 0.999) for eval, samples and the model file."
    ),
]
KeepOpt = Annotated[
    str,
    typer.Option(
        help="What model.safetensors holds: last (the last epoch) or best (the epoch with the lowest "
        "validation bound; needs a validation split, e.g. --data-opt val=10000)."
    ),
]
PatienceOpt = Annotated[
    int | None,
    typer.Option(help="Stop after N epochs in which the validation bound did not go below its best."),
]
StreamOpt = Annotated[
    str,
    typer.Option(
        help="Keep the training images on the host and feed batches in a background pipeline: "
        "auto (when they do not fit the device's memory), on or off."
    ),
]
CallbackOpt = Annotated[
    list[str] | None, typer.Option(help="Run a registered callback NAME during training (repeatable).")
]
CallbackOptionOpt = Annotated[
    list[str] | None, typer.Option(help="A callback option NAME.KEY=VALUE (repeatable).")
]
LogOpt = Annotated[
    list[str] | None,
    typer.Option(help="Log to a logger callback: tensorboard (RUN/tensorboard/; same as --callback)."),
]
