"""The resources a run asks Ray for, written down before anything starts: a plan, not a snapshot.

    plan = run_plan(cfg, "refine")          # resource_plan(cfg, stage, compute_store=...) is the pure part
    print(plan.describe())                  # the table launch.run_training prints
    check_schedulable(plan, timeout_s=cfg.scaling.schedule_timeout_s)   # else UnschedulableError, by name

Why a plan. The Ray Data pipeline used to decide from ``ray.cluster_resources()`` on the driver whether its
decode and flow actors ask for a GPU. That snapshot is wrong both ways: on a warm cluster whose GPUs are
all held by the training workers (one per GPU), actors that ask for a GPU never start and Ray Data waits
forever; on an autoscaling cluster whose head has no GPU (jobs/cluster.yaml) there are no GPUs yet, so the
actors reserve none and RAFT / DALI run on GPU 0 beside a training worker (Ray 2.60 does not hide GPUs
from actors that asked for none). Now every GPU share is a config key (``scaling.decode_gpus``,
``scaling.flow_gpus``; workers: ``scaling.use_gpu``), this module adds them up per group of identical
actors, and ``check_schedulable`` asks Ray whether the whole plan can be placed before training starts.

A plan has one or two phases, run one after the other:
- 'training': the Ray Train workers (``scaling.num_workers`` x {CPU: scaling.cpus_per_worker, GPU: 1 if
  scaling.use_gpu}), and with ``data.video_source=ray_data`` the pipeline's actors beside them:
  decode+flow actors (``data.flow_actors``, 1 CPU each) when neither stage reserves a GPU, else
  ``scaling.decode_actors`` decode actors and ``data.flow_actors`` flow actors with their GPU shares;
  plus one CPU for Ray Data's own tasks (reads, splits; FACTS.md: a pipeline whose actors take every CPU
  hangs).
- 'pair store' (``data.video_source=precomputed`` when the store is missing): the same pipeline actors
  write the store first, with no training worker alive; then 'training' holds the workers and a read
  task.
The local source and pretraining read their frames in the workers: workers only.

The probe: one placement group per group of the phase (workers with ``scaling.placement_strategy``, as
Ray Train places them; pipeline actors with PACK, which still spreads over nodes when one is full, as Ray
Data's actors may), created together so an autoscaler sees the whole demand at once, waited for up to
``timeout_s`` (this is also how long an autoscaling cluster gets to start nodes: pending placement groups
are what it scales for), then removed. What was placed proves the resources exist; it does not keep them:
Ray Train creates its own group right after, and another job could take them in between.

Planning one node with 8 GPUs (text for the README):

    8 training workers with one GPU each hold every GPU, so a pipeline actor that asks for a GPU share
    never starts (the launch now refuses it by name after scaling.schedule_timeout_s instead of hanging).
    Two ways that fit:

    - Stream with 7 workers and give the 8th GPU to the pipeline, in shares:
      --set scaling.num_workers=7 --set scaling.use_gpu=true --set scaling.decode_actors=4
      --set scaling.decode_gpus=0.125 --set data.flow_actors=2 --set scaling.flow_gpus=0.25
      --set flow.estimator=raft_small --set flow.raft_weights=/shared/raft_small_C_T_V2-01064c6d.pth
      = 7 GPUs for training + 4 x 0.125 (NVDEC decoding) + 2 x 0.25 (RAFT) = 8 GPUs. With a CPU flow
      estimator (flow.estimator=dis, scaling.flow_gpus=0) the flow actors hold CPUs instead: 7 workers,
      --set scaling.decode_actors=4 --set scaling.decode_gpus=0.25 (= the 8th GPU, for NVDEC)
      --set data.flow_actors=32.
    - Compute the pair store first on all 8 GPUs, then train on all 8:
      raymotion precompute-flow --set data.flow_actors=8 --set scaling.flow_gpus=1 --set flow.estimator=...
      python jobs/refine.py --set data.video_source=precomputed --set scaling.num_workers=8
      --set scaling.use_gpu=true
      (decoding stays on the CPU with scaling.decode_gpus=0, in scaling.decode_actors actors). The store is
      reused by every later run and sweep trial with the same data and flow settings. Run precompute-flow
      while no training holds the GPUs: it does not wait for a plan (only the training launch does).

    The launch prints the plan (``ResourcePlan.describe``) before it waits. CPUs count too: each pipeline
    actor holds one, each worker scaling.cpus_per_worker, and one stays free for Ray Data's tasks; and an
    actor with a GPU share needs its CPU on a GPU node, which the probe checks and a sum of totals would not.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from raymotion.config import ConfigError
from raymotion.errors import RaymotionError
from raymotion.data.flow_store import DONE_FILE, PairSpec, store_folder
from raymotion.data.pipeline import ACTOR_CPUS, stage_gpu_problems

if TYPE_CHECKING:
    from raymotion.config import Config

PLAN_STAGES = ("pretrain", "refine")
DATA_TASK_CPUS = 1.0
"""CPUs kept free for Ray Data's own tasks (reads, splits, writes) beside its actors (FACTS.md)."""
PROGRESS_EVERY_S = 10.0
"""While waiting for the cluster, say what is pending this often (the first time only)."""
_WORKER_KEYS = ("scaling.num_workers", "scaling.cpus_per_worker", "scaling.use_gpu", "scaling.placement_strategy")


class UnschedulableError(RaymotionError, RuntimeError):
    """The cluster did not place a resource plan in time; the message names the groups, their requests,
    the plan's totals, the cluster's resources and the config keys to change."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ActorGroup:
    """Identical Ray actors or Ray Train workers: how many, what each reserves, which keys set it."""

    name: str
    count: int
    cpus: float
    """CPUs each one reserves."""
    gpus: float
    """GPUs (or GPU share) each one reserves."""
    keys: tuple[str, ...]
    """The config keys that set it, as the user types them."""
    strategy: str = "PACK"
    """How its probe placement group is placed (the workers': scaling.placement_strategy)."""

    @property
    def bundle(self) -> dict[str, float]:
        """One member's request as a placement-group bundle (zero amounts left out, as Ray wants)."""
        return {name: amount for name, amount in (("CPU", self.cpus), ("GPU", self.gpus)) if amount > 0}

    @property
    def total_cpus(self) -> float:
        return self.count * self.cpus

    @property
    def total_gpus(self) -> float:
        return self.count * self.gpus


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    """Groups that are alive at the same time."""

    name: str
    groups: tuple[ActorGroup, ...]

    @property
    def cpus(self) -> float:
        return sum(g.total_cpus for g in self.groups)

    @property
    def gpus(self) -> float:
        return sum(g.total_gpus for g in self.groups)


@dataclass(frozen=True, kw_only=True, slots=True)
class ResourcePlan:
    """What a run places on Ray, phase by phase (module doc). Pure data: built without Ray."""

    title: str
    phases: tuple[Phase, ...]

    @property
    def peak_cpus(self) -> float:
        return max((p.cpus for p in self.phases), default=0.0)

    @property
    def peak_gpus(self) -> float:
        return max((p.gpus for p in self.phases), default=0.0)

    def describe(self) -> str:
        """A table, one row per group and a total per phase, as the launch prints it."""
        if not any(p.groups for p in self.phases):
            return f"resource plan: {self.title}: nothing to place on Ray"
        header = ("phase", "group", "count", "CPU each", "GPU each", "CPU", "GPU", "set by")
        rows = []
        for phase in self.phases:
            for g in phase.groups:
                rows.append((phase.name, g.name, str(g.count), _num(g.cpus), _num(g.gpus), _num(g.total_cpus),
                             _num(g.total_gpus), _keys_text(g.keys)))
            rows.append((phase.name, "total", "", "", "", _num(phase.cpus), _num(phase.gpus), ""))
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        right = {2, 3, 4, 5, 6}  # numbers

        def line(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(cells, widths))) + " |"

        lines = [f"resource plan: {self.title}", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += [line(r) for r in rows]
        if len(self.phases) > 1:
            lines.append(f"peak: {_num(self.peak_cpus)} CPU, {_num(self.peak_gpus)} GPU (phases run one after the "
                         "other; each must fit on its own)")
        return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:g}"


def _keys_text(keys: tuple[str, ...]) -> str:
    """('scaling.a', 'scaling.b') -> 'scaling.{a, b}'; keeps the table narrow."""
    if not keys:
        return "-"
    sections = {k.rpartition(".")[0] for k in keys}
    if len(keys) > 1 and len(sections) == 1:
        return f"{sections.pop()}.{{{', '.join(k.rpartition('.')[2] for k in keys)}}}"
    return ", ".join(keys)


def pipeline_groups(cfg: Config) -> tuple[ActorGroup, ...]:
    """The actor groups of the frame-pair pipeline as ``launch.video_datasets`` / ``precompute_for_config``
    build it (``pipeline.build_pair_dataset`` with ``data.decoder``).

    Raises:
        ConfigError: GPU shares the pipeline would refuse (``pipeline.stage_gpu_problems``), e.g.
            flow.estimator=dali_of with scaling.flow_gpus=0, named by their scaling.* key.
    """
    s, estimator = cfg.scaling, cfg.flow.estimator
    problems = stage_gpu_problems(decoder=cfg.data.decoder, decode_gpus=s.decode_gpus, flow=estimator,
                                  flow_device=cfg.flow.device, flow_gpus=s.flow_gpus)
    if problems:
        name, value, why = problems[0]
        raise ConfigError(f"scaling.{name}", value, why)
    if s.decode_gpus == 0 and s.flow_gpus == 0:  # fused, as build_pair_dataset(fuse=None) does
        return (ActorGroup(name=f"decode+flow actors ({estimator}, CPU)", count=cfg.data.flow_actors,
                           cpus=ACTOR_CPUS, gpus=0.0,
                           keys=("data.flow_actors", "scaling.decode_gpus", "scaling.flow_gpus")),)
    decode = "NVDEC" if s.decode_gpus > 0 else "CPU"
    flow = "GPU" if s.flow_gpus > 0 else "CPU"
    return (ActorGroup(name=f"decode actors ({decode})", count=s.decode_actors, cpus=ACTOR_CPUS, gpus=s.decode_gpus,
                       keys=("scaling.decode_actors", "scaling.decode_gpus")),
            ActorGroup(name=f"flow actors ({estimator}, {flow})", count=cfg.data.flow_actors, cpus=ACTOR_CPUS,
                       gpus=s.flow_gpus, keys=("data.flow_actors", "scaling.flow_gpus")))


def resource_plan(cfg: Config, stage: str, *, compute_store: bool = True, local: bool = False) -> ResourcePlan:
    """The plan of running ``stage`` ('pretrain' or 'refine') with ``cfg`` (module doc). Pure: no Ray, no I/O.

    Args:
        compute_store: with data.video_source=precomputed, whether the pair store must be computed
            first (``run_plan`` looks); adds the 'pair store' phase.
        local: training runs in the driver process (Ray Train's local mode, ``run_training(local=True)``):
            no worker is placed on Ray.

    Raises:
        ValueError: an unknown stage. ConfigError: see ``pipeline_groups``.
    """
    if stage not in PLAN_STAGES:
        raise ValueError(f"stage={stage!r}; choose one of: {', '.join(PLAN_STAGES)}")
    s = cfg.scaling
    workers = () if local else (ActorGroup(name="training workers", count=s.num_workers, cpus=s.cpus_per_worker,
                                           gpus=1.0 if s.use_gpu else 0.0, keys=_WORKER_KEYS,
                                           strategy=s.placement_strategy),)
    data_tasks = ActorGroup(name="Ray Data tasks (a free CPU)", count=1, cpus=DATA_TASK_CPUS, gpus=0.0, keys=())
    source = cfg.data.video_source if stage == "refine" else "local"
    where = " in this process (Ray Train local mode)" if local else ""
    title = f"{stage}{where}, data.video_source={source}" if stage == "refine" else f"{stage}{where}"
    if source == "local":
        return ResourcePlan(title=title, phases=(Phase(name="training", groups=workers),))
    if source == "ray_data":
        groups = (*workers, *pipeline_groups(cfg), data_tasks)
        return ResourcePlan(title=f"{title}, flow.estimator={cfg.flow.estimator}",
                            phases=(Phase(name="training", groups=groups),))
    training = Phase(name="training", groups=(*workers, data_tasks))
    if not compute_store:
        return ResourcePlan(title=f"{title} (pair store found)", phases=(training,))
    store = Phase(name="pair store", groups=(*pipeline_groups(cfg), data_tasks))
    return ResourcePlan(title=f"{title} (pair store missing: computed first), flow.estimator={cfg.flow.estimator}",
                        phases=(store, training))


def run_plan(cfg: Config, stage: str, *, local: bool = False) -> ResourcePlan:
    """``resource_plan`` with ``compute_store`` read from storage: whether the pair store of a precomputed
    refinement is finished yet (its ``_DONE.json``, ``flow_store.store_folder``; reads the manifest and stats
    the clips)."""
    compute_store = False
    if stage == "refine" and cfg.data.video_source == "precomputed":
        folder = store_folder(PairSpec.from_config(cfg), cfg.data.pair_store or None)
        compute_store = not (folder / DONE_FILE).is_file()
    return resource_plan(cfg, stage, compute_store=compute_store, local=local)


# ---------------------------------------------------------------------------- asking Ray

def check_schedulable(plan: ResourcePlan, *, timeout_s: float) -> None:
    """Ask Ray whether each phase of ``plan`` can be placed: reserve it as placement groups (module doc),
    wait up to ``timeout_s`` per phase, and remove them again. Ray must be initialised when the plan places
    anything.

    Raises:
        UnschedulableError: a phase was not placed in time; the message names the groups not placed and
            placed, their requests and keys, the phase's totals, the cluster's total and available
            resources, and what to change.
    """
    for phase in plan.phases:
        groups = [g for g in phase.groups if g.count > 0 and g.bundle]
        if not groups:
            continue
        available = ray.available_resources()  # for the error message: what was free when we asked
        # Named per probe: runs launched side by side (launch.run_side_by_side) probe at the same time, and a
        # placement group's name is unique in its namespace.
        token = uuid.uuid4().hex[:8]
        pgs = [placement_group([g.bundle] * g.count, strategy=g.strategy,
                               name=f"raymotion-plan-probe/{g.name}/{token}") for g in groups]
        try:
            pending = _wait_placed(pgs, groups, timeout_s=timeout_s)
        finally:
            for pg in pgs:
                remove_placement_group(pg)
        if pending:
            raise UnschedulableError(unschedulable_message(
                plan, phase, groups, pending=pending, timeout_s=timeout_s,
                cluster_total=ray.cluster_resources(), cluster_available=available))


def _wait_placed(pgs: list, groups: list[ActorGroup], *, timeout_s: float) -> set[int]:
    """Indices of the groups whose placement group was not ready within ``timeout_s``."""
    index = {pg.ready(): i for i, pg in enumerate(pgs)}
    waiting = list(index)
    deadline = time.monotonic() + timeout_s
    told = False
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=min(left, PROGRESS_EVERY_S))
        if waiting and not told and time.monotonic() < deadline:
            told = True
            names = ", ".join(groups[index[ref]].name for ref in waiting)
            print(f"waiting up to {timeout_s:g} s (scaling.schedule_timeout_s) for the cluster to place: {names} "
                  "(an autoscaling cluster may be starting nodes)", flush=True)
    return {index[ref] for ref in waiting}


def unschedulable_message(plan: ResourcePlan, phase: Phase, groups: list[ActorGroup], *, pending: set[int],
                          timeout_s: float, cluster_total: dict[str, float],
                          cluster_available: dict[str, float]) -> str:
    """The text of ``UnschedulableError`` (pure, for tests and for reading)."""
    def request(g: ActorGroup) -> str:
        strategy = f", {g.strategy}" if g.strategy != "PACK" else ""
        keys = f" ({', '.join(g.keys)})" if g.keys else ""
        return f"{g.name}: {g.count} x {_resources(g.bundle)}{strategy}{keys}"

    lines = [f"the cluster did not place the '{phase.name}' phase of the resource plan within {timeout_s:g} s "
             f"(scaling.schedule_timeout_s); resource plan: {plan.title}"]
    lines += [f"  NOT PLACED  {request(g)}" for i, g in enumerate(groups) if i in pending]
    lines += [f"  placed      {request(g)}" for i, g in enumerate(groups) if i not in pending]
    lines.append(f"phase total: {_num(phase.cpus)} CPU, {_num(phase.gpus)} GPU; cluster total: "
                 f"{_resources(cluster_total)}; available before the probe: {_resources(cluster_available)}")
    short = [name for name, need in (("CPU", phase.cpus), ("GPU", phase.gpus)) if need > cluster_total.get(name, 0.0)]
    if short:
        lines.append(f"the phase asks for more {' and '.join(short)} than the whole cluster has (an autoscaling "
                     "cluster can add only what its node types and max_workers allow)")
    keys = [k for i in sorted(pending) for k in groups[i].keys] + [k for g in groups for k in g.keys]
    keys = list(dict.fromkeys(keys))
    lines.append(f"fix: change {', '.join(keys)} (--set KEY=VALUE) so that the phase fits, free the GPUs other jobs "
                 "hold, or add nodes; on an autoscaling cluster that is still starting nodes, raise "
                 "scaling.schedule_timeout_s")
    return "\n".join(lines)


def _resources(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {_num(resources.get(name, 0.0))}" for name in ("CPU", "GPU")) + "}"
