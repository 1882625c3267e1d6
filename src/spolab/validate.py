"""Start-up validation of every entry point's configuration.

``validate(cfg, entry)`` runs at the top of each ``spolab.<entry>.run``, before any model is
loaded, any sample drawn or any file written. The first bad value raises :class:`ConfigError`
with one line ``<key>=<value>: must be <valid range>``; an input the entry reads that is not
there raises :class:`MissingInput` (a ConfigError and a FileNotFoundError) naming the key and
the step that produces it, so a null or missing path never reaches the Hugging Face hub.

Order: plain values (a table of ``(key, check)`` per entry, shared rules for shared keys), then
cross-field rules (the data mix, batch layout, protocol ks, task feasibility), then the memory plan of a
model entry point against ``scale.gpu_memory_gb`` (:func:`spolab.memory.check_memory`: one line naming the
entry, its GiB per device, the budget and the biggest items), then input paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spolab.algos import ALGORITHMS
from spolab.checks import (  # noqa: F401  re-exported: the entry tables' check constructors
    Check,
    Rule,
    apply_rules,
    beta,
    boolean,
    fraction,
    get,
    integer,
    items,
    number,
    one_of,
    optional,
    positive,
    registered,
    text,
)
from spolab.config import CONF_DIR, LAUNCHERS, SHARDINGS, protocol_path
from spolab.errors import ConfigError
from spolab.jsonl import check_manifest, rebuild_data
from spolab.memory import PLANNED, check_bench_memory, check_memory
from spolab.models.build import resolve_name_or_path
from spolab.models.lora import check_saved_targets, lora_settings, require_peft
from spolab.perf import FINE_TUNING, VARIANTS
from spolab.rollout.mix import check_data_mix
from spolab.rollout.offpolicy import POOL_SOURCES, allocate
from spolab.tasks.base import SPLITS, task_class
from spolab.utils import PRECISIONS, device_name_error

__all__ = ["ENTRIES", "SPLITS", "ConfigError", "MissingInput", "check_task", "validate"]


class MissingInput(ConfigError, FileNotFoundError):
    """An input path of an entry point that is null or absent (which step makes it is in the message)."""

    kind = "missing input"



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
MODEL: list[Rule] = [  # the sizes of a from-scratch model; a real one (name_or_path) brings its own (and may
    # state it for the memory plan: conf/model/llama8b.yaml)
    ("model.name", text()),
    ("model.name_or_path", optional(text())),
    ("model.gguf_file?", optional(text())),
    *((f"model.{k}?", optional(integer(1))) for k in (*MODEL_SHAPE, "num_kv_heads", "vocab_size")),
    ("model.tie_embeddings?", boolean()),
]

LORA: list[Rule] = [  # model.lora, present with lora=on (conf/lora/on.yaml; spolab.models.lora)
    ("model.lora.enabled?", boolean()),
    ("model.lora.r?", integer(1, 65_536)),
    ("model.lora.alpha?", positive()),
    ("model.lora.dropout?", fraction(hi_open=True)),
    ("model.lora.target_modules?", items(text())),
]

PLACEMENT: list[Rule] = [  # every entry point that runs a model (spolab.utils.resolve_device / autocast)
    ("device", Check(device_name_error)),
    ("precision", one_of(*PRECISIONS)),
]

SCALE: list[Rule] = [  # the scale's hardware and the memory plan's assumptions (conf/scale/*.yaml; spolab.memory)
    ("scale.world_size?", integer(1, 65_536)),
    ("scale.sharding?", one_of(*SHARDINGS)),
    ("scale.gpu_memory_gb?", optional(positive())),
    ("scale.micro_batch_size?", optional(integer(1, MAX_BATCH))),
    ("scale.prompt_tokens?", optional(integer(1, 1_048_576))),
    ("scale.launcher?", one_of(*LAUNCHERS)),
]

TRACKING: list[Rule] = [
    ("tracking.uri", optional(text())),
    ("tracking.experiment", text()),
    ("tracking.artifact_root", optional(text())),
    ("tracking.flush_every_s", number(0)),
]

PROTOCOL: list[Rule] = [  # the val_protocol of rl and sft (EVAL_PROTOCOL: conf/protocol/*.yaml)
    ("name", text()),
    ("n", integer(1, MAX_SAMPLES)),
    ("temperature", positive()),
    ("top_p", fraction(lo_open=True)),
    ("ks", items(integer(1))),
]
# an evaluation protocol (conf/protocol/*.yaml) may sample nothing: n 0 is pass@k from the exact success mass
EVAL_PROTOCOL: list[Rule] = [("n", integer(0, MAX_SAMPLES)), *PROTOCOL[:1], *PROTOCOL[2:]]

ALGO_COMMON: list[Rule] = [  # the keys every algorithm has; its own: Algorithm.config_rules (spolab.algos)
    ("algo.name", text()),
    ("algo.beta", beta()),
    ("algo.lr", positive()),
    ("algo.grad_clip", positive()),
    ("algo.group_size", integer(1)),
    ("algo.warmup_steps", integer(0)),
    ("algo.lr_schedule", registered("spolab.algos.base", "LR_SCHEDULES")),
    ("algo.min_lr_ratio", fraction()),
]

DATA_MIX: list[Rule] = [
    ("data_mix.name", text()),
    ("data_mix.fresh_fraction", fraction()),
    ("data_mix.sync_every", integer(1)),
]


def _rl_temperature(v) -> str | None:
    """RL's sampling temperature T, any T > 0: fresh samples are drawn from softmax(logits/T), the policy that
    PPO, GRPO and RLOO train (every log-prob of their losses at T); SPO trains π_θ at T 1 on them
    (``spolab.algos.base.Algorithm.tempered``; docs/method.md, "Sampling temperature")."""
    why = positive().test(v)
    return None if why is None else (f"{why} (the sampling temperature T of RL's fresh samples, softmax(logits/T): "
                                     "the policy that PPO, GRPO and RLOO train; SPO trains π_θ at T 1 on them)")


RL_TEMPERATURE = Check(_rl_temperature)

# ------------------------------------------------------------------------------------------ entry tables

RL: list[Rule] = [
    *SEED, *MODEL, *LORA, *TRACKING, *PLACEMENT, *ALGO_COMMON, *DATA_MIX,
    ("name", text()),
    ("updates", integer(1, MAX_UPDATES)),
    ("batch_size", integer(1, MAX_BATCH)),
    ("group_size", integer(1, MAX_GROUP)),
    ("temperature", RL_TEMPERATURE),
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
    ("sft.targets", registered("spolab.tasks.listdsl_task", "SFT_TARGETS")),
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
    ("sampled_splits", optional(items(one_of(*SPLITS)))),
    ("n_samples", optional(integer(1, 10_000))),
    ("forward_batch_size", integer(1, MAX_BATCH)),
    ("ref_model_dir", optional(text())),
    ("exact_mass.enabled", boolean()),
    ("exact_mass.max_len", optional(integer(1, 6))),  # default list DSL, programs per problem (median):
    # 26 at 4 primitives, ~170 at 5, ~1-7k at 6 (~1 s of enumeration per problem): more is out of reach
    ("exact_mass.ref_logprobs", optional(text())),
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
    ("fine_tuning", items(one_of(*FINE_TUNING))),
    ("sft_size", text()),
    ("batch_size", integer(1, MAX_BATCH)),
    ("group_size", integer(1, MAX_GROUP)),
    ("warmup", integer(0, MAX_UPDATES)),
    ("repeats", integer(1, MAX_UPDATES)),
    ("sampler_repeats", integer(0, MAX_UPDATES)),
    ("threads", integer(1)),
]

EXACT: list[Rule] = [
    *SEED, *MODEL, *TRACKING,
    ("algos", items(one_of("spo_squared", "spo_bce", "ppo"))),
    ("exact.K", integer(1)),
    ("exact.L", integer(1)),
    ("exact.p_success", fraction(lo_open=True, hi_open=True)),
    ("exact.seed", integer(0)),
    ("exact.beta", beta(divisor=True)),
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

    name = get(task, "name")
    try:
        cls = task_class(name)
    except ConfigError as e:  # "unknown task 'x'; valid: [...]"
        raise ConfigError(f"{prefix}.name={name!r}: {e}") from None
    cls.check_config(task, prefix)


def _protocol(cfg, prefix: str, exact_allowed: bool = False) -> None:
    """A sampling protocol: fields, and pass@k needs every k <= n. n 0 (no sampling: pass@k from the exact
    success mass) only where ``exact_allowed`` (an evaluation) and of the policy itself (T 1, top-p 1)."""
    apply_rules(cfg, EVAL_PROTOCOL if exact_allowed else PROTOCOL, prefix)
    n = cfg.n
    if n == 0:
        if cfg.temperature != 1.0 or cfg.top_p != 1.0:
            raise ConfigError(f"{prefix}n=0 reads the exact success mass of the policy itself: temperature 1 and "
                              f"top_p 1, not {cfg.temperature} and {cfg.top_p}")
        return
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

    name = cfg.algo.name
    if name not in ALGORITHMS:
        raise _bad("algo.name", name, f"one of {sorted(ALGORITHMS)} (conf/algo)")
    algo = ALGORITHMS[name]
    apply_rules(cfg, algo.config_rules)
    sources = get(cfg, "data_mix.sources") or {}
    if not isinstance(sources, dict):
        raise _bad("data_mix.sources", sources, "a mapping of stored source to its share of each batch")
    for src, share in sources.items():
        fraction()(f"data_mix.sources.{src}", share)
    _, sources = check_data_mix(algo, cfg.data_mix)  # unknown sources, shares, on-policy refusals
    # any temperature T > 0 (the RL table's rule): PPO, GRPO and RLOO train the tempered policy softmax(logits/T),
    # every log-prob of their losses at T (π_old, the sampler's, included); SPO trains π_θ at T 1 (docs/method.md)
    bs, g = cfg.batch_size, cfg.group_size
    if cfg.algo.group_size != g:
        raise ConfigError(f"algo.group_size={cfg.algo.group_size}: must equal group_size={g} (conf/algo: "
                          "${group_size})")
    if g < algo.min_group_size:
        raise ConfigError(f"group_size={g}: must be an integer >= {algo.min_group_size} for algo={name} "
                          "(advantages compare the samples of one prompt)")
    if bs % g:
        raise ConfigError(f"batch_size={bs}: must be a multiple of group_size={g}")
    n_fresh = allocate(bs, cfg.data_mix.fresh_fraction, sources)["fresh"]
    if n_fresh % g:
        raise ConfigError(f"data_mix.fresh_fraction={cfg.data_mix.fresh_fraction}: must give a multiple of "
                          f"group_size={g} fresh samples per update (it gives {n_fresh} of batch_size={bs})")
    if "minibatches" in cfg.algo and bs % cfg.algo.minibatches:
        raise ConfigError(f"algo.minibatches={cfg.algo.minibatches}: must divide batch_size={bs} "
                          "(equal minibatches of each batch)")
    _rl_world(cfg, n_fresh)
    algo.check_config(cfg)
    if lora_settings(cfg.model) is not None:
        require_peft()
    _protocol(cfg.val_protocol, "val_protocol.")


def _rl_world(cfg, n_fresh: int) -> None:
    """A run across ``scale.world_size`` W processes (spolab.dist) splits every batch into W equal shares: each
    rank samples as many whole prompt groups, and trains on as many rows of every (mini)batch, so that the mean
    of the ranks' gradients is the batch's."""
    w = OmegaConf.select(cfg, "scale.world_size", default=None) or 1
    if w == 1:
        return
    bs, g = cfg.batch_size, cfg.group_size
    prompts = n_fresh // g
    if prompts % w:
        raise ConfigError(f"scale.world_size={w}: must divide the {prompts} prompts each update samples (batch_size="
                          f"{bs} x data_mix.fresh_fraction={cfg.data_mix.fresh_fraction} / group_size={g}): each "
                          "process samples an equal share of whole prompt groups")
    if bs % w:
        raise ConfigError(f"scale.world_size={w}: must divide batch_size={bs} (each process trains on an equal share "
                          "of every batch)")
    mb = bs // cfg.algo.minibatches if "minibatches" in cfg.algo else bs
    if mb % w:
        raise ConfigError(f"scale.world_size={w}: must divide the {mb} trajectories of each minibatch (batch_size={bs} "
                          f"/ algo.minibatches={cfg.algo.minibatches}): each process trains on an equal share of it")


def _sft(cfg) -> None:

    _model_shape(cfg)
    _protocol(cfg.val_protocol, "val_protocol.")
    task_class(cfg.task.name).check_sft(cfg)  # what the task's SFT targets need (the flaw, the prompt length)


def _task_tokenizer(cfg) -> bool:
    """Whether the task writes its own tokenizer into the data folder (``Task.builds_tokenizer``)."""

    return task_class(cfg.task.name).builds_tokenizer


def _evaluate(cfg) -> None:
    names = get(cfg, "protocols")
    unsampled_ok = False  # an n-0 (exact) protocol evaluates the splits left out of sampled_splits
    for i, name in enumerate(names):
        path = protocol_path(name)
        if not path.exists():
            valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ConfigError(f"protocols[{i}]={name!r}: must name a file of conf/protocol (valid: {valid})")
        protocol = OmegaConf.load(path)
        try:
            _protocol(protocol, f"protocol[{name}].", exact_allowed=True)
        except ConfigError as e:
            raise ConfigError(f"{e} ({path})") from None
        unsampled_ok = unsampled_ok or protocol.n == 0
        if protocol.n == 0 and not (get(cfg, "exact_mass.enabled") and task_class(cfg.task.name).enumerates_solutions):
            raise ConfigError(f"protocols[{i}]={name!r} samples nothing (n 0): its pass@k is the exact success mass, "
                              f"which needs exact_mass.enabled and a task that enumerates its solutions "
                              f"(task={cfg.task.name}); evaluate with a sampling protocol (policy)")
    sampled = get(cfg, "sampled_splits")
    if sampled is not None and not set(sampled) <= set(get(cfg, "splits")):
        raise ConfigError(f"sampled_splits={list(sampled)}: must be among splits={list(cfg.splits)} (null: all of them)")
    unsampled = [sp for sp in get(cfg, "splits") if sampled is not None and sp not in sampled]
    if unsampled and not unsampled_ok:
        raise ConfigError(f"sampled_splits={list(sampled)}: splits {unsampled} would be evaluated under no protocol; "
                          "add the exact protocol (n 0) to protocols, or sample them")
    if get(cfg, "exact_mass.ref_logprobs") is not None and get(cfg, "ref_model_dir") is None:
        raise ConfigError(f"exact_mass.ref_logprobs={cfg.exact_mass.ref_logprobs!r}: needs ref_model_dir, the π_ref "
                          "whose log-probs the file holds (its weights are checked against the file's)")
    n_problems = get(cfg, "n_problems")
    if n_problems is not None:
        if not isinstance(n_problems, dict):
            raise _bad("n_problems", n_problems, "null or a mapping of split to its first N problems")
        per_split(n_problems, "n_problems", optional(integer(1)))


def _bench(cfg) -> None:

    sizes = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    for i, s in enumerate(cfg.sizes):
        one_of(*sizes)(f"sizes[{i}]", s)
    for i, v in enumerate(cfg.variants):
        one_of(*VARIANTS, "trl_grpo")(f"variants[{i}]", v)
    bs, g = cfg.batch_size, cfg.group_size
    algo_of = {v: algo for v, (algo, _) in VARIANTS.items()} | {"trl_grpo": "grpo"}  # TRL's GRPOTrainer
    need = max(ALGORITHMS[algo_of[v]].min_group_size for v in cfg.variants)
    if g < need:
        grouped = [v for v, algo in algo_of.items() if ALGORITHMS[algo].min_group_size >= need]
        raise ConfigError(f"group_size={g}: must be an integer >= {need} for the {', '.join(grouped[:-1])} and "
                          f"{grouped[-1]} variants")
    if bs % g:
        raise ConfigError(f"batch_size={bs}: must be a multiple of group_size={g}")
    w = int(cfg.scale.get("world_size") or 1)  # the benchmark times one device's share (spolab.perf.bench_batch)
    if bs % (w * g):
        raise ConfigError(f"batch_size={bs}: must split into scale.world_size={w} shares of whole groups of "
                          f"group_size={g} (the benchmark times one device's share)")


def _exact(cfg) -> None:
    if not cfg.betas or not all(isinstance(b, (int, float)) and b > 0 for b in cfg.betas):
        raise ConfigError(f"betas={list(cfg.betas) if cfg.betas else cfg.betas}: must be a non-empty list of positive "
                          "numbers (the KL coefficients the workflow's exact rule runs the testbed at)")
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
            check_manifest(f, rebuild_data(path))
    return path


def _rl_paths(cfg) -> None:

    sft_dir = need_model_dir(cfg, "sft_dir")
    lora = lora_settings(cfg.model)
    if lora is not None:  # every target a linear layer of the SFT model (on the meta device: nothing loaded)
        check_saved_targets(sft_dir, lora["target_modules"])
    need_data(cfg, ["rl", "val"])
    if ALGORITHMS[cfg.algo.name].needs_q0:
        need_file(cfg, "q0_path", f"the reference success counts q0.json (algo={cfg.algo.name} reads Q̂0)", Q0_STEP)
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
    if get(cfg, "exact_mass.ref_logprobs") is not None:
        need_file(cfg, "exact_mass.ref_logprobs", "the exact_logprobs.jsonl an evaluation of π_ref writes",
                  "`python -m spolab.evaluate` of π_ref (Snakemake rule eval, name sft)")
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
    apply_rules(cfg, [*rules, *SCALE])
    if entry in TASK_ENTRIES:
        get(cfg, "task")  # a ConfigError when the group is absent
        check_task(cfg.task)
    if cross is not None:
        cross(cfg)
    if entry in PLANNED:  # the memory plan per device within scale.gpu_memory_gb (none set: nothing checked)
        check_memory(cfg, entry)
    if entry == "bench":  # each row it times, in one process on one device
        check_bench_memory(cfg)
    if check_paths and paths is not None:
        paths(cfg)
