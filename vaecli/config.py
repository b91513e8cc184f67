"""Training options as plain data: no torch here, so the CLI can read the defaults cheaply."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vaecli import registry
from vaecli.errors import UsageError

LR_SCHEDULES = ("cosine", "constant")
ON_NAN = ("stop", "skip")
PRECISIONS = ("auto", "32", "bf16", "16-mixed")  # see vaecli.precision
STREAMS = ("auto", "on", "off")  # see vaecli.training.feeding
KEEP = ("last", "best")  # see vaecli.training.selection
FOLDER_PREFIX = "folder:"
MAX_SIZE = 1 << 20  # no latent size (or image side) of a real model is larger
MAX_BATCH = 1 << 24
MAX_EVAL_K = 1 << 20  # importance samples per image
MAX_SEED = 2**63 - 1  # torch takes seeds below 2**64; vaecli derives a few with seed + 1


def resolve_data(data: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``--data folder:PATH`` or ``--data PATH`` (a path: it has a slash or starts with . or ~)
    is the built-in ``folder`` dataset with an absolute ``path`` option; names pass through."""
    if data.startswith(FOLDER_PREFIX):
        path = data[len(FOLDER_PREFIX) :]
    elif "/" in data or os.sep in data or data.startswith((".", "~")):
        path = data
    else:
        return data, options
    return "folder", {**options, "path": str(Path(path).expanduser().resolve())}


@dataclass
class TrainConfig:
    """Every training option; ``vae train`` fills one from its flags."""

    data: str = "mnist"
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    likelihood: str = "auto"  # the one the data suggest (vaecli.suggestions), chosen when a run starts
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    arch: str = "mlp"
    arch_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 32
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    #: The model: ``vae`` (one latent vector from ``arch``) or ``hierarchical`` (or a plugin's).
    model: str = "vae"
    model_options: dict[str, Any] = field(default_factory=dict)
    # The default recipe was chosen for wall time to a good model on 2 CPU cores: batch 384 keeps
    # the step mostly matrix products yet takes enough steps per epoch, and 2.5e-3 was the fastest
    # learning rate to 100 nats at that batch in a sweep of batches 128-512 (ELU: see architectures).
    epochs: int = 40
    batch_size: int = 384
    lr: float = 2.5e-3
    lr_schedule: str = "cosine"
    #: AdamW's decoupled weight decay on the layers' weights (vaecli.training.optimiser); 0: off.
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    force: bool = False
    limit_train: int | None = None
    limit_test: int | None = None
    checkpoint_every: int | None = None
    on_nan: str = "stop"
    precision: str = "auto"
    compile: bool = False
    objective: str = "elbo"
    objective_options: dict[str, Any] = field(default_factory=dict)
    #: The stabilisers (vaecli.training.stabilisers): clip the gradients' norm to grad_clip, skip
    #: updates whose norm passes grad_skip, average the weights with decay ema (0: off).
    grad_clip: float | None = None
    grad_skip: float | None = None
    ema: float = 0.0
    #: Which epoch model.safetensors holds: the ``last``, or the ``best`` by the validation split's
    #: bound; ``patience``: stop after that many epochs without a better one (None: never).
    keep: str = "last"
    patience: int | None = None
    #: Whether the training images stay on the host and reach the step in a background pipeline
    #: (vaecli.training.feeding): auto (when they do not fit the device), on, off.
    stream: str = "auto"
    #: Callbacks by registered name (``--callback NAME``, ``--log tensorboard``), with their options.
    callbacks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data, self.data_options = resolve_data(self.data, dict(self.data_options))

    def validate(self, source: str | None = None) -> None:
        """Reject impossible values before any work starts; ``source`` names the config file the
        values came from (messages then name its keys rather than command-line flags)."""

        def name(key: str) -> str:
            return f"{source}: key '{key}'" if source else "--" + key.replace("_", "-")

        for key in ("epochs", "batch_size", "latent_dim"):
            if getattr(self, key) < 1:
                raise UsageError(f"{name(key)} must be at least 1, got {getattr(self, key)}")
        for key in ("limit_train", "limit_test", "checkpoint_every", "patience"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UsageError(f"{name(key)} must be at least 1, got {value}")
        for key, most in (("latent_dim", MAX_SIZE), ("batch_size", MAX_BATCH)):
            if getattr(self, key) > most:
                raise UsageError(f"{name(key)} must be at most {most}, got {getattr(self, key)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"{name('seed')} must be from 0 to {MAX_SEED}, got {self.seed}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"{name('lr')} must be a positive number, got {self.lr}")
        if not (0.0 <= self.weight_decay and self.weight_decay * self.lr < 1.0):
            raise UsageError(
                f"{name('weight_decay')} must be 0 (off) or a positive number below 1 / lr (each step "
                f"multiplies the weights by 1 - lr * decay), got {self.weight_decay}"
            )
        for key in ("grad_clip", "grad_skip"):
            value = getattr(self, key)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{name(key)} must be a positive number, got {value}")
        if not 0.0 <= self.ema < 1.0:
            raise UsageError(f"{name('ema')} must be from 0 (off) to below 1, e.g. 0.999; got {self.ema}")
        choices = {"lr_schedule": LR_SCHEDULES, "precision": PRECISIONS, "on_nan": ON_NAN, "stream": STREAMS,
                   "keep": KEEP}  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UsageError(f"{name(key)}: unknown '{getattr(self, key)}' (use {', '.join(allowed)})")
        self._check_parts(name)
        self._check_model(name)
        self._check_selection(source)

    def _check_parts(self, name: Callable[[str], str]) -> None:
        """Every part named is registered, and the options of those built cheaply are right."""
        for kind, part in (
            ("dataset", self.data),
            *((("likelihood", self.likelihood),) if self.likelihood != AUTO else ()),
            ("architecture", self.arch),
            ("prior", self.prior),
            ("model", self.model),
            ("objective", self.objective),
            *(("callback", callback) for callback in self.callbacks),
        ):
            registry.BY_KIND[kind].entry(part)
        for callback, options in self.callbacks.items():
            if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
                raise UsageError(f"{name('callbacks')}: the options of '{callback}' must be a mapping")
        from vaecli.models import build_likelihood  # torch is imported only when work starts
        from vaecli.objectives import build_objective

        if self.likelihood != AUTO:
            build_likelihood(self.likelihood, self.likelihood_options)  # checks their options now
        build_objective(self.objective, self.objective_options)
        from vaecli.priors import build_prior

        # (on a 1-pixel image: only the options are checked, before the data are read)
        build_prior(self.prior, self.latent_dim, (1, 1, 1), self.prior_options)

    def _check_selection(self, source: str | None) -> None:
        """Choosing an epoch (keep: best, patience) needs a validation split: choosing it on the
        test set would make the test figures a selected best, not an estimate."""
        from vaecli.datasets import has_validation

        if self.keep != "best" and self.patience is None:
            return
        if has_validation(self.data, self.data_options):
            return
        flags = {"--keep best": "key 'keep: best'", "--patience": "key 'patience'"}
        chosen = (self.keep == "best", self.patience is not None)
        given = [flag for flag, on in zip(flags, chosen, strict=True) if on]
        what = " and ".join(flags[flag] if source else flag for flag in given)
        what = f"{source}: {what}" if source else what
        verb = "choose" if len(given) > 1 else "chooses"
        raise UsageError(
            f"{what} {verb} an epoch on a validation split, and dataset '{self.data}' has none here: add "
            "--data-opt val=N to hold out the last N training images (e.g. val=10000)"
        )

    def _check_model(self, name: Callable[[str], str]) -> None:
        """A model with cells of its own (the hierarchy) takes no architecture or latent size."""
        if getattr(registry.models.load(self.model), "uses_architecture", True):
            return
        defaults = TrainConfig()
        keys = ("arch", "arch_options", "latent_dim")
        given = [name(key) for key in keys if getattr(self, key) != getattr(defaults, key)]
        if given:
            verb = "is" if len(given) == 1 else "are"
            raise UsageError(
                f"{' and '.join(given)} {verb} for --model vae; {registry.models.describe(self.model)} makes "
                "its own cells and sizes: set them with --model-opt"
            )


EVAL_SPLITS = ("test", "train", "val")
#: ``likelihood: auto``: the likelihood the dataset suggests (see :mod:`vaecli.suggestions`).
AUTO = "auto"


@dataclass
class EvalConfig:
    """Every option of ``vae eval``: which model, on which images, with how many samples.

    ``data`` None means the dataset recorded in the model file (``data_options`` then add to the
    recorded options); ``batch_size`` None means as many decoded samples at once as fit a
    fixed memory budget."""

    model: str
    data: str | None = None
    data_dir: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    k: int = 1000
    seed: int = 0
    batch_size: int | None = None
    limit: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.data is not None:
            self.data, self.data_options = resolve_data(self.data, dict(self.data_options))

    def validate(self) -> None:
        """Reject impossible values before the model or the data are read."""
        for key in ("k", "batch_size", "limit"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be at least 1, got {value}")
        if self.k > MAX_EVAL_K:
            raise UsageError(f"--k must be at most {MAX_EVAL_K} (published figures use 5000), got {self.k}")
        if self.split not in EVAL_SPLITS:
            raise UsageError(f"--split: unknown '{self.split}' (use {' or '.join(EVAL_SPLITS)})")
        if self.data is not None:
            registry.BY_KIND["dataset"].entry(self.data)


def _type_of(annotation: str) -> tuple[type, ...]:
    """The Python types a YAML value may have for a field annotated ``annotation``."""
    kinds: tuple[type, ...] = ()
    for part in annotation.split("|"):
        part = part.strip()
        kinds += {
            "str": (str,),
            "int": (int,),
            "float": (float, int),
            "bool": (bool,),
            "None": (type(None),),
        }.get(part, (dict,) if part.startswith("dict") else ())
    return kinds


def config_from_mapping(values: Any, source: str) -> TrainConfig:
    """A TrainConfig from the mapping of a YAML file, every key and type checked."""
    if not isinstance(values, dict):
        raise UsageError(f"{source}: expected a mapping of training options, got {type(values).__name__}")
    known = {f.name: f for f in fields(TrainConfig)}
    if type(values.get("precision")) is int:  # `precision: 32` in YAML means the string "32"
        values = {**values, "precision": str(values["precision"])}
    for key, value in values.items():
        if key not in known:
            raise UsageError(f"{source}: unknown key '{key}' (known: {', '.join(known)})")
        kinds = _type_of(str(known[key].type))
        wrong = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        if wrong:
            wanted = " or ".join(
                "null" if k is type(None) else "mapping" if k is dict else k.__name__ for k in kinds
            )
            raise UsageError(f"{source}: key '{key}' must be {wanted}, got {value!r}")
        if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
            raise UsageError(f"{source}: key '{key}' must map option names to values")
    return TrainConfig(**{k: (float(v) if known[k].type == "float" else v) for k, v in values.items()})


def load_config_file(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a YAML config file (the keys of TrainConfig) and check every key and value. A file
    never replaces an existing run: ``force`` in it is ignored (only a typed --force does)."""
    import warnings

    from vaecli.yamlfiles import read_yaml_file

    values = read_yaml_file(path) or {}
    if isinstance(values, dict) and isinstance(values.get("force"), bool):
        if values["force"]:
            warnings.warn(f"{path}: 'force: true' ignored; to replace a run, type --force", stacklevel=2)
        values = {k: v for k, v in values.items() if k != "force"}
    config = config_from_mapping(values, str(path))
    config.validate(source=str(path))
    return config
