"""Start-up validation of every entry point's configuration (issue 10, item 7).

``validate(cfg, entry)`` runs at the top of each ``spolab.<entry>.run``, before any model is
loaded, any sample drawn or any file written. The first bad value raises :class:`ConfigError`
with one line ``<key>=<value>: must be <valid range>``; an input the entry reads that is not
there raises :class:`MissingInput` (a ConfigError and a FileNotFoundError) naming the key and
the step that produces it, so a null or missing path never reaches the Hugging Face hub.

Order: plain values (a table of ``(key, check)`` per entry, shared rules for shared keys), then
cross-field rules (the data mix, batch layout, protocol ks, task feasibility), then input paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from spolab.errors import ConfigError

__all__ = ["ENTRIES", "ConfigError", "MissingInput", "check_task", "validate"]

SPLITS = ("test", "val", "ood", "rl", "sft")  # spolab.data.SPLITS_IN_ORDER (not imported: data imports us)


class MissingInput(ConfigError, FileNotFoundError):
    """An input path of an entry point that is null or absent (which step makes it is in the message)."""

    kind = "missing input"


# ------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class Check:
    """``test(value)`` returns None when the value is good, else what it must be ("an integer >= 1");
    a list check carries the check of each of its items."""

    test: Callable[[Any], str | None]
    item: Check | None = None

    def __call__(self, key: str, value: Any) -> None:
        why = self.test(value)
        if why is not None:
            raise ConfigError(f"{key}={value!r}: must be {why}")
        if self.item is not None:
            for i, v in enumerate(value):
                self.item(f"{key}[{i}]", v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def _in_range(v, lo, hi, lo_open: bool, hi_open: bool) -> bool:
    return ((lo is None or (v > lo if lo_open else v >= lo))
            and (hi is None or (v < hi if hi_open else v <= hi)))


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    desc = " ".join(filter(None, ["an integer", _bounds(lo, hi, False, False)]))
    return Check(lambda v: None if _is_int(v) and _in_range(v, lo, hi, False, False) else desc)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    bounds = _bounds(lo, hi, lo_open, hi_open)

    def test(v):
        if not _is_num(v) or not math.isfinite(v):
            return " ".join(filter(None, ["a finite number", bounds]))
        return None if _in_range(v, lo, hi, lo_open, hi_open) else bounds

    return Check(test)


def positive() -> Check:
    return number(0, lo_open=True)


def fraction(*, lo_open: bool = False, hi_open: bool = False) -> Check:
    return number(0, 1, lo_open=lo_open, hi_open=hi_open)


def one_of(*choices: str) -> Check:
    return Check(lambda v: None if isinstance(v, str) and v in choices else f"one of {sorted(choices)}")


def registered(module: str, registry: str) -> Check:
    """A name of a registry (``spolab.utils.Registry``), read when checked: the valid names are the code's."""

    def test(v):
        import importlib

        names = sorted(getattr(importlib.import_module(module), registry))
        return None if isinstance(v, str) and v in names else f"one of {names}"

    return Check(test)


def text() -> Check:
    return Check(lambda v: None if isinstance(v, str) and v.strip() else "a non-empty string")


def boolean() -> Check:
    return Check(lambda v: None if isinstance(v, bool) else "true or false")


def optional(check: Check) -> Check:
    return Check(lambda v: None if v is None else (None if check.test(v) is None else f"null or {check.test(v)}"))


def items(item: Check, *, nonempty: bool = True) -> Check:
    """A list whose every element passes ``item`` (reported as ``key[i]``)."""
    what = "a non-empty list" if nonempty else "a list"
    return Check(lambda v: None if isinstance(v, list) and (v or not nonempty) else what, item)


Rule = tuple[str, Check]

_ABSENT = object()


def _plain(v):
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v


def get(cfg, key: str):
    """The resolved value at a dotted key; a missing key or a broken interpolation is a ConfigError."""
    try:
        v = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        v = _plain(v)
    except Exception as e:  # omegaconf's interpolation and missing-value errors
        raise ConfigError(f"{key}: cannot be resolved ({type(e).__name__}: {_one_line(e)})") from None
    if v is _ABSENT:
        raise ConfigError(f"{key}: missing from the configuration (see conf/)")
    return v


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def apply_rules(cfg, rules: Sequence[Rule], prefix: str = "") -> None:
    """Check every ``(key, check)`` of ``rules`` on ``cfg``; keys are reported as ``prefix + key``."""
    for key, check in rules:
        if key.endswith("?"):  # checked only where the config has it
            key = key[:-1]
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                continue
        try:
            value = get(cfg, key)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
        check(prefix + key, value)


# ------------------------------------------------------------------------------------------ shared rules

# Upper bounds on sizes: 100x or more beyond any shipped scale (paper: 200 updates of 256 trajectories,
# 1024 new tokens), low enough that a slip of a few digits fails here, at start-up, instead of as an
# ETA of years or a job whose memory grows until the machine kills it.
MAX_UPDATES = 1_000_000  # updates, training steps, epochs x steps
MAX_BATCH = 65_536  # trajectories or sequences per update
MAX_GROUP = 1_024  # samples per prompt in one batch
MAX_SAMPLES = 100_000  # samples per problem (protocol n, n_ref, per_problem, restarts)
MAX_PROBLEMS = 10_000_000  # problems, prompts, replay capacity
MAX_NEW_TOKENS = 32_768  # tokens generated per response
SIZE_CAPS: list[Rule] = [("task.max_new_tokens?", integer(1, MAX_NEW_TOKENS))]  # every entry that generates

SEED: list[Rule] = [("seed", integer(0))]

MODEL_SHAPE = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "max_positions")
MODEL: list[Rule] = [  # the sizes of a from-scratch model; a real one (name_or_path) brings its own
    ("model.name", text()),
    ("model.name_or_path", optional(text())),
    ("model.gguf_file?", optional(text())),
    *((f"model.{k}?", optional(integer(1))) for k in MODEL_SHAPE),
]

def device() -> Check:
    from spolab.utils import device_name_error

    return Check(device_name_error)


PLACEMENT: list[Rule] = [  # every entry point that runs a model (spolab.utils.resolve_device / autocast)
    ("device", device()),
    ("precision", one_of("fp32", "bf16")),
]

TRACKING: list[Rule] = [
    ("tracking.uri", optional(text())),
    ("tracking.experiment", text()),
    ("tracking.artifact_root", optional(text())),
    ("tracking.flush_every_s", number(0)),
]

PROTOCOL: list[Rule] = [  # conf/protocol/*.yaml and the val_protocol of rl and sft
    ("name", text()),
    ("n", integer(1, MAX_SAMPLES)),
    ("temperature", positive()),
    ("top_p", fraction(lo_open=True)),
    ("ks", items(integer(1))),
]

ALGO_COMMON: list[Rule] = [
    ("algo.name", text()),
    ("algo.beta", number(0)),
    ("algo.lr", positive()),
    ("algo.grad_clip", positive()),
    ("algo.group_size", integer(1)),
    ("algo.warmup_steps", integer(0)),
    ("algo.lr_schedule", one_of("constant", "cosine")),
    ("algo.min_lr_ratio", fraction()),
]

ALGO: dict[str, list[Rule]] = {
    "spo": [
        ("algo.beta", positive()),  # Q̂0 and the bce loss divide by β
        ("algo.loss", registered("spolab.algos.losses", "TERMINAL_LOSSES")),
        ("algo.steps_per_batch", integer(1)),
        ("algo.q0_estimator", one_of("plain", "shrunk")),
        ("algo.is_weights", one_of("none", "truncated")),
        ("algo.is_clip", positive()),
    ],
    "ppo": [
        ("algo.critic_lr", positive()),
        ("algo.epochs", integer(1)),
        ("algo.minibatches", integer(1)),
        ("algo.clip", positive()),
        ("algo.value_clip", positive()),
        ("algo.vf_coef", number(0)),
        ("algo.gamma", fraction()),
        ("algo.gae_lambda", fraction()),
        ("algo.whiten_advantages", boolean()),
    ],
    "grpo": [("algo.epochs", integer(1)), ("algo.minibatches", integer(1)), ("algo.clip", positive())],
    "rloo": [("algo.epochs", integer(1)), ("algo.minibatches", integer(1))],
}
REDUCTION = ("algo.loss_reduction?", registered("spolab.algos.losses", "LOSS_REDUCTIONS"))
for _name in ("ppo", "grpo", "rloo"):
    ALGO[_name].append(REDUCTION)
GROUPED = ("grpo", "rloo")  # advantages relative to the other samples of a prompt: group_size >= 2

DATA_MIX: list[Rule] = [
    ("data_mix.name", text()),
    ("data_mix.fresh_fraction", fraction()),
    ("data_mix.sync_every", integer(1)),
]

# ------------------------------------------------------------------------------------------ entry tables

RL: list[Rule] = [
    *SEED, *MODEL, *TRACKING, *PLACEMENT, *ALGO_COMMON, *DATA_MIX,
    ("name", text()),
    ("updates", integer(1, MAX_UPDATES)),
    ("batch_size", integer(1, MAX_BATCH)),
    ("group_size", integer(1, MAX_GROUP)),
    ("temperature", positive()),
    ("replay_capacity", integer(1, MAX_PROBLEMS)),
    ("log_every", integer(1)),
    ("eval_every", integer(1)),
    ("ckpt_every", integer(1)),
    ("val_problems", integer(1, MAX_PROBLEMS)),
    *SIZE_CAPS,
]

SFT: list[Rule] = [
    *SEED, *MODEL, *TRACKING, *PLACEMENT,
    ("sft.enabled", boolean()),
    ("sft.targets", one_of("generator", "all_solvers")),
    ("sft.solver_max_len", integer(1)),
    ("sft.flaw_rate", fraction()),
    ("sft.flaw_ops", items(registered("spolab.tasks.listdsl", "PRIM_BY_NAME"), nonempty=False)),
    ("sft.epochs", integer(1, MAX_UPDATES)),
    ("sft.batch_size", integer(1, MAX_BATCH)),
    ("sft.lr", positive()),
    ("sft.warmup_steps", integer(0)),
    ("sft.min_lr_ratio", fraction()),
    ("sft.weight_decay", number(0)),
    ("sft.grad_clip", positive()),
    ("sft.log_every", integer(1)),
    ("sft.eval_every", integer(0)),  # 0: only at the end
    ("sft.ckpt_every", integer(1)),
    ("val_problems", integer(1, MAX_PROBLEMS)),
    *SIZE_CAPS,
]

EVALUATE: list[Rule] = [
    *SEED, *MODEL, *TRACKING, *PLACEMENT,
    ("name", text()),
    ("splits", items(one_of(*SPLITS))),
    ("protocols", items(text())),
    ("forward_batch_size", integer(1, MAX_BATCH)),
    ("ref_model_dir", optional(text())),
    *SIZE_CAPS,
]

Q0: list[Rule] = [*SEED, *MODEL, *TRACKING, *PLACEMENT, ("n_ref", integer(1, MAX_SAMPLES)),
                  ("forward_batch_size", integer(1, MAX_BATCH)), *SIZE_CAPS]

SOURCES: list[Rule] = [
    *SEED, *MODEL, *TRACKING, *PLACEMENT,
    ("problems", integer(1, MAX_PROBLEMS)),
    ("forward_batch_size", integer(1, MAX_BATCH)),
    ("expert.per_problem", integer(1, MAX_SAMPLES)),
    ("other_policy.per_problem", integer(1, MAX_SAMPLES)),
    ("other_policy.temperature", positive()),
    ("decoding.restarts", integer(1, MAX_SAMPLES)),
    ("random.per_problem", integer(1, MAX_SAMPLES)),
    *SIZE_CAPS,
]

DATA: list[Rule] = [*SEED, *MODEL]  # and TASK, as for every entry with a task

BENCH: list[Rule] = [
    *MODEL, *TRACKING, *PLACEMENT,
    ("sizes", items(text())),
    ("variants", items(text())),
    ("sft_size", text()),
    ("batch_size", integer(1, MAX_BATCH)),
    ("group_size", integer(1, MAX_GROUP)),
    ("warmup", integer(0, MAX_UPDATES)),
    ("repeats", integer(1, MAX_UPDATES)),
    ("threads", integer(1)),
]

EXACT: list[Rule] = [
    *SEED, *MODEL, *TRACKING,
    ("algos", items(one_of("spo_squared", "spo_bce", "ppo"))),
    ("exact.K", integer(1)),
    ("exact.L", integer(1)),
    ("exact.p_success", fraction(lo_open=True, hi_open=True)),
    ("exact.seed", integer(0)),
    ("exact.beta", positive()),
    ("exact.updates", integer(1, MAX_UPDATES)),
    ("exact.batch_size", integer(1, MAX_BATCH)),
    ("exact.behaviour", one_of("online", "uniform")),
    ("exact.q0", one_of("exact", "mc")),
    ("exact.n_ref", integer(1, MAX_SAMPLES)),
    ("exact.spo_lr", positive()),
    ("exact.ppo_lr", positive()),
    ("exact.critic_lr", positive()),
    ("exact.ppo_epochs", integer(1)),
    ("exact.ppo_minibatches", integer(1)),
    ("exact.clip", positive()),
    ("exact.value_clip", positive()),
    ("exact.vf_coef", number(0)),
    ("exact.gae_lambda", fraction()),
    ("exact.log_every", integer(1)),
]


# ------------------------------------------------------------------------------------------ cross-field rules


def _bad(key: str, value, must: str) -> ConfigError:
    return ConfigError(f"{key}={value!r}: must be {must}")


def per_split(mapping, key: str, check: Check) -> None:
    """A mapping of split name to value (``task.splits``, ``.max_problems``, ``.fractions``): every name a
    known split, every value passing ``check``."""
    for split, v in dict(mapping).items():
        if split not in SPLITS:
            raise ConfigError(f"{key}.{split}={v!r}: unknown split; must be one of {list(SPLITS)}")
        check(f"{key}.{split}", v)


def check_task(task, prefix: str = "task") -> None:
    """The task group (conf/task/<name>.yaml): its own task class checks it (``Task.check_config``)."""
    from spolab.tasks.base import task_class

    name = get(task, "name")
    try:
        cls = task_class(name)
    except ConfigError as e:  # "unknown task 'x'; valid: [...]"
        raise ConfigError(f"{prefix}.name={name!r}: {e}") from None
    cls.check_config(task, prefix)


def _protocol(cfg, prefix: str) -> None:
    """A sampling protocol: fields, and pass@k needs every k <= n."""
    apply_rules(cfg, PROTOCOL, prefix)
    n = cfg.n
    for i, k in enumerate(cfg.ks):
        if k > n:
            raise ConfigError(f"{prefix}ks[{i}]={k}: must be <= {prefix}n={n} (pass@k needs k <= n samples)")


def _model_shape(cfg) -> None:
    m = cfg.model
    if m.name_or_path:
        return  # a pretrained model: its config.json holds its shape
    for k in MODEL_SHAPE:
        if m.get(k) is None:
            raise ConfigError(f"model.{k}=None: must be an integer >= 1 for a model trained from scratch "
                              "(model.name_or_path null), or set model.name_or_path")
    if m.hidden_size % m.num_heads or (m.hidden_size // m.num_heads) % 2:
        raise ConfigError(f"model.hidden_size={m.hidden_size}: must be a multiple of 2 x model.num_heads="
                          f"{m.num_heads} (an even head dimension for rotary embeddings)")


def _rl(cfg) -> None:
    from spolab.algos import ALGORITHMS
    from spolab.rl import check_data_mix
    from spolab.rollout.offpolicy import allocate

    name = cfg.algo.name
    if name not in ALGORITHMS:
        raise _bad("algo.name", name, f"one of {sorted(ALGORITHMS)} (conf/algo)")
    apply_rules(cfg, ALGO.get(name, []))
    sources = get(cfg, "data_mix.sources") or {}
    if not isinstance(sources, dict):
        raise _bad("data_mix.sources", sources, "a mapping of stored source to its share of each batch")
    for src, share in sources.items():
        fraction()(f"data_mix.sources.{src}", share)
    _, sources = check_data_mix(ALGORITHMS[name], cfg.data_mix)  # unknown sources, shares, on-policy refusals
    if ALGORITHMS[name].on_policy and cfg.temperature != 1.0:
        # PPO's, GRPO's and RLOO's π_old is the sampler's log-prob, which is π_θ only at temperature 1
        raise _bad("temperature", cfg.temperature, f"1.0 for the on-policy algo={name} (its π_old is the "
                   "sampler's log-prob, which equals π_θ only at temperature 1); off-policy algo=spo accepts any")
    bs, g = cfg.batch_size, cfg.group_size
    if cfg.algo.group_size != g:
        raise ConfigError(f"algo.group_size={cfg.algo.group_size}: must equal group_size={g} (conf/algo: "
                          "${group_size})")
    if name in GROUPED and g < 2:
        raise ConfigError(f"group_size={g}: must be an integer >= 2 for algo={name} (advantages compare the "
                          "samples of one prompt)")
    if bs % g:
        raise ConfigError(f"batch_size={bs}: must be a multiple of group_size={g}")
    n_fresh = allocate(bs, cfg.data_mix.fresh_fraction, sources)["fresh"]
    if n_fresh % g:
        raise ConfigError(f"data_mix.fresh_fraction={cfg.data_mix.fresh_fraction}: must give a multiple of "
                          f"group_size={g} fresh samples per update (it gives {n_fresh} of batch_size={bs})")
    if "minibatches" in cfg.algo and bs % cfg.algo.minibatches:
        raise ConfigError(f"algo.minibatches={cfg.algo.minibatches}: must divide batch_size={bs} "
                          "(equal minibatches of each batch)")
    if name == "spo" and cfg.task.reward != "binary" and cfg.algo.q0_estimator != "plain":
        raise ConfigError(f"algo.q0_estimator={cfg.algo.q0_estimator!r}: must be 'plain' with task.reward="
                          f"{cfg.task.reward!r} (the shrunk estimator pools binary success counts)")
    if name == "spo" and cfg.algo.loss == "bce" and cfg.task.reward != "binary":
        raise ConfigError(f"task.reward={cfg.task.reward!r}: must be 'binary' with algo.loss='bce' "
                          "(a success probability needs a 0/1 reward)")
    _protocol(cfg.val_protocol, "val_protocol.")


def _sft(cfg) -> None:
    from spolab.tasks.base import task_class

    _model_shape(cfg)
    _protocol(cfg.val_protocol, "val_protocol.")
    task_class(cfg.task.name).check_sft(cfg)  # what the task's SFT targets need (the flaw, the prompt length)


def _task_tokenizer(cfg) -> bool:
    """Whether the task writes its own tokenizer into the data folder (``Task.builds_tokenizer``)."""
    from spolab.tasks.base import task_class

    return task_class(cfg.task.name).builds_tokenizer


def protocol_path(name: str) -> Path:
    from spolab import evaluate

    return Path(evaluate.CONF_DIR) / "protocol" / f"{name}.yaml"


def _evaluate(cfg) -> None:
    names = get(cfg, "protocols")
    for i, name in enumerate(names):
        path = protocol_path(name)
        if not path.exists():
            valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ConfigError(f"protocols[{i}]={name!r}: must name a file of conf/protocol (valid: {valid})")
        try:
            _protocol(OmegaConf.load(path), f"protocol[{name}].")
        except ConfigError as e:
            raise ConfigError(f"{e} ({path})") from None
    n_problems = get(cfg, "n_problems")
    if n_problems is not None:
        if not isinstance(n_problems, dict):
            raise _bad("n_problems", n_problems, "null or a mapping of split to its first N problems")
        per_split(n_problems, "n_problems", optional(integer(1)))


def _bench(cfg) -> None:
    from spolab.bench import VARIANTS
    from spolab.config import CONF_DIR

    sizes = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    for i, s in enumerate(cfg.sizes):
        one_of(*sizes)(f"sizes[{i}]", s)
    for i, v in enumerate(cfg.variants):
        one_of(*VARIANTS, "trl_grpo")(f"variants[{i}]", v)
    bs, g = cfg.batch_size, cfg.group_size
    if g < 2 and ({"grpo", "rloo", "trl_grpo"} & set(cfg.variants)):
        raise ConfigError(f"group_size={g}: must be an integer >= 2 for the grpo, rloo and trl_grpo variants")
    if bs % g:
        raise ConfigError(f"batch_size={bs}: must be a multiple of group_size={g}")


def _exact(cfg) -> None:
    e, limit = cfg.exact, 1_000_000
    responses, level = 0, 1
    for _ in range(e.L + 1):  # sum of K^n, n <= L, stopped past the limit (L may be huge)
        responses += level
        level *= e.K
        if responses > limit:
            raise ConfigError(f"exact.L={e.L}: must keep the testbed to <= {limit} responses with exact.K={e.K} "
                              "(the tabular policy enumerates every response)")
    if e.batch_size % e.ppo_minibatches:
        raise ConfigError(f"exact.ppo_minibatches={e.ppo_minibatches}: must divide exact.batch_size={e.batch_size}")


# ------------------------------------------------------------------------------------------ input paths

DATA_STEP = "`python -m spolab.data` (Snakemake rule data)"
SFT_STEP = "`python -m spolab.sft` (Snakemake rule sft)"
Q0_STEP = "`python -m spolab.q0` (Snakemake rule q0)"
SOURCES_STEP = "`python -m spolab.sources` (Snakemake rule sources)"
EVAL_MODEL_STEP = "`python -m spolab.sft` or `python -m spolab.rl` (Snakemake rules sft, rl)"


def _path(cfg, key: str, what: str, producer: str) -> Path:
    value = get(cfg, key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MissingInput(f"{key}={value!r}: must be {what}, not {'null' if value is None else 'empty'}: set it to "
                           f"the output of {producer}")
    if not isinstance(value, str):
        raise MissingInput(f"{key}={value!r}: must be {what} (a path)")
    return Path(value)


def need_file(cfg, key: str, what: str, producer: str) -> Path:
    path = _path(cfg, key, what, producer)
    if not path.is_file():
        raise MissingInput(f"{key}={str(path)!r}: must be {what}, but it does not exist: run {producer} first")
    return path


def need_model_dir(cfg, key: str, producer: str = SFT_STEP) -> Path:
    """A saved model (config.json) on local disk: never a hub id, never looked up on the network."""
    what = "a local model directory holding config.json"
    path = _path(cfg, key, what, producer)
    if not path.is_dir():
        raise MissingInput(f"{key}={str(path)!r}: must be {what}, but it does not exist: run {producer} first")
    if not (path / "config.json").is_file():
        raise MissingInput(f"{key}={str(path)!r}: must be {what}, but {path / 'config.json'} does not exist: "
                           f"run {producer} first")
    return path


def need_data(cfg, splits: Sequence[str], tokenizer: bool = False, key: str = "data_dir") -> Path:
    """The dataset directory with the given non-empty split files (and the tokenizer)."""
    names = [f"{s}.jsonl" for s in splits] + (["tokenizer"] if tokenizer else [])
    what = f"a dataset directory holding {', '.join(names)}"
    path = _path(cfg, key, what, DATA_STEP)
    for name in names:
        f = path / name
        if not f.exists():
            raise MissingInput(f"{key}={str(path)!r}: must be {what}, but {f} does not exist: run {DATA_STEP} first")
        if f.is_file() and f.stat().st_size == 0:
            raise MissingInput(f"{key}={str(path)!r}: must be {what}, but {f} is empty: rebuild the data with "
                               f"task.splits.{name.removesuffix('.jsonl')} >= 1 ({DATA_STEP})")
        if f.is_file():  # edited or damaged since the data step wrote it: refused before any work
            from spolab.jsonl import check_manifest, rebuild_data

            check_manifest(f, rebuild_data(path))
    return path


def _rl_paths(cfg) -> None:
    from spolab.rollout.offpolicy import POOL_SOURCES

    need_model_dir(cfg, "sft_dir")
    need_data(cfg, ["rl", "val"])
    if cfg.algo.name == "spo":
        need_file(cfg, "q0_path", "the reference success counts q0.json (SPO's Q̂0)", Q0_STEP)
    for src, share in (get(cfg, "data_mix.sources") or {}).items():
        if not share:
            continue
        if src == "earlier_run":
            need_file(cfg, "earlier_run_path", "the trajectories.jsonl a finished RL run dumps (data_mix source "
                      "'earlier_run' reads it)", "the study's PPO run")
        elif src in POOL_SOURCES:
            pool = _path(cfg, "sources_dir", "the directory of the stored source pools", SOURCES_STEP) / f"{src}.jsonl"
            if not pool.is_file():
                raise MissingInput(f"sources_dir={cfg.sources_dir!r}: must hold {src}.jsonl (data_mix source {src!r} "
                                   f"reads it), but {pool} does not exist: run {SOURCES_STEP} first")


def _sft_paths(cfg) -> None:
    name_or_path = get(cfg, "model.name_or_path")
    if name_or_path:
        from spolab.models.build import resolve_name_or_path

        folder = Path(resolve_name_or_path(name_or_path))  # package:<module> -> its folder (ConfigError if absent)
        gguf_file = OmegaConf.select(cfg, "model.gguf_file", default=None)
        if gguf_file and not (folder / gguf_file).is_file():
            raise MissingInput(f"model.gguf_file={gguf_file!r}: no such file in {folder} (model.name_or_path="
                               f"{name_or_path!r})")
        if not gguf_file and not (folder / "config.json").is_file():
            raise MissingInput(f"model.name_or_path={name_or_path!r}: must be null or a local model directory "
                               "holding config.json (hub ids are not fetched: download the checkpoint first, e.g. "
                               "`huggingface-cli download <id> --local-dir <dir>`)")
        need_data(cfg, ["val"] if not get(cfg, "sft.enabled") else ["sft", "val"])
    else:
        need_data(cfg, ["sft", "val"], tokenizer=True)


def _evaluate_paths(cfg) -> None:
    need_model_dir(cfg, "model_dir", EVAL_MODEL_STEP)
    if cfg.ref_model_dir is not None:
        need_model_dir(cfg, "ref_model_dir", EVAL_MODEL_STEP)
    need_data(cfg, list(dict.fromkeys(cfg.splits)))


def _ref_paths(cfg) -> None:  # q0 and sources: π_ref and the rl prompts
    need_model_dir(cfg, "sft_dir")
    need_data(cfg, ["rl"])


TASK_ENTRIES = ("data", "sft", "rl", "evaluate", "q0", "sources")  # bench and exact have no task group (scale
# files may still set a few task keys there, for the entries that do)

ENTRIES: dict[str, tuple[list[Rule], Callable | None, Callable | None]] = {
    # entry: (value rules, cross-field rules, input paths)
    "data": (DATA, None, None),
    "sft": (SFT, _sft, _sft_paths),
    "rl": (RL, _rl, _rl_paths),
    "evaluate": (EVALUATE, _evaluate, _evaluate_paths),
    "q0": (Q0, None, _ref_paths),
    "sources": (SOURCES, None, _ref_paths),
    "bench": (BENCH, _bench, lambda cfg: need_data(cfg, ["rl"], tokenizer=_task_tokenizer(cfg))),  # a real model brings its tokenizer
    "exact": (EXACT, _exact, None),
}


def validate(cfg: DictConfig, entry: str, *, check_paths: bool = True) -> None:
    """Raise ConfigError (one line: key, value, valid range) for the first bad value of ``cfg`` as
    entry point ``entry`` uses it, then MissingInput for the first input that is not on disk
    (``check_paths=False`` skips those: tests of the shipped configs without their inputs)."""
    if entry not in ENTRIES:
        raise ValueError(f"no validation rules for entry {entry!r}; known: {sorted(ENTRIES)}")
    rules, cross, paths = ENTRIES[entry]
    apply_rules(cfg, rules)
    if entry in TASK_ENTRIES:
        get(cfg, "task")  # a ConfigError when the group is absent
        check_task(cfg.task)
    if cross is not None:
        cross(cfg)
    if check_paths and paths is not None:
        paths(cfg)
