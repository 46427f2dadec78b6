"""The settings of a training run: ``LMConfig`` (``tinyar train``) and ``ClassifyConfig``
(``tinyar classify``). Each is saved with its run's checkpoint."""
from dataclasses import dataclass, field


@dataclass
class LMConfig:
    """Every setting of a training run (saved with the checkpoint)."""
    data: str = "stdlib"
    max_chars: int = 2_000_000
    level: str = "char"
    vocab: int = 10_000          # word level: keep the most frequent words
    backbone: str = "rnn"        # rnn | conv (causal dilated convolutions)
    cell: str = "lstm"
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.0
    head: str = "multilevel"
    classes: int = 0             # 0: round(sqrt(vocabulary))
    tie: bool = False
    steps: int = 600
    epochs: float = 0.0          # > 0 overrides steps
    batch: int = 32
    bptt: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clip: float = 1.0
    warmup: int = 50
    schedule: str = "cosine"
    eval_every: int = 100
    eval_tokens: int = 50_000
    sample_every: int = 200
    sample_tokens: int = 200
    checkpoint_every: int = 200
    early_stop: int = 0          # stop after this many evaluations without a better
                                 # validation loss (0: never)
    record_every: int = 25       # gradient/activation statistics (0: off)
    max_seconds: float = 0.0     # > 0: stop after this much training time
    device: str = "cpu"
    seed: int = 0
    out: str = ""
    prompt: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class ClassifyConfig:
    data: str = "glyphs"
    hierarchy: str = ""          # JSON mapping for data given by path
    train_size: int = 20_000     # glyphs: how many to render
    test_size: int = 4_000
    label_fraction: float = 1.0  # use only this fraction of the training labels
    val_fraction: float = 0.1    # held out of the training set to pick the best epoch
    model: str = "cnn"
    arch: str = "lenet"
    cell: str = "lstm"
    hidden: int = 128
    head: str = "multilevel"
    decode: str = "joint"
    level_weights: list = field(default_factory=lambda: [1.0, 1.0])
    weight_schedule: str = ""    # e.g. "0:0.9,0.1;2:0.5,0.5;4:0.1,0.9"
    epochs: int = 3
    batch: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    clip: float = 5.0
    augment: bool = False
    pretrain_steps: int = 0
    pretrain_lr: float = 2e-3
    early_stop: int = 0          # stop after this many epochs without a better
                                 # validation loss (0: never)
    device: str = "cpu"
    seed: int = 0
    out: str = ""
