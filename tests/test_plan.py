"""The resource plan (raymotion/train/plan.py): groups, counts and totals from configs (pure), and the probe
against a multi-node Ray cluster whose nodes declare GPUs that do not exist (no GPU is touched): a plan
that fits is placed and released, one that does not is refused by name within its timeout. Also: the pair
pipeline's stages ask Ray for exactly the GPU shares they are given."""

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymotion.config import ConfigError, load_config
from raymotion.train.plan import resource_plan

ray = pytest.importorskip("ray")

GPU_RUN = {"scaling.use_gpu": True, "scaling.num_workers": 2, "scaling.decode_actors": 2, "scaling.decode_gpus": 0.5,
           "scaling.flow_gpus": 0.25, "flow.estimator": "raft_small"}
"""2 workers x {CPU 1, GPU 1} + 2 decode actors x {CPU 1, GPU 0.5} + 1 flow actor x {CPU 1, GPU 0.25} + 1 CPU
for Ray Data's tasks = 6 CPU, 3.25 GPU."""


def groups(plan, phase=0):
    return {g.name: (g.count, g.cpus, g.gpus) for g in plan.phases[phase].groups}


# ---- the plan (pure) --------------------------------------------------------------------------


def test_default_config_plans_one_worker_and_one_fused_cpu_actor():
    plan = resource_plan(load_config(), "refine")
    assert [p.name for p in plan.phases] == ["training"]
    assert groups(plan) == {"training workers": (1, 1.0, 0.0), "decode+flow actors (dis, CPU)": (1, 1.0, 0.0),
                            "Ray Data tasks (a free CPU)": (1, 1.0, 0.0)}
    assert (plan.peak_cpus, plan.peak_gpus) == (3.0, 0.0)


def test_gpu_plan_counts_and_totals_are_the_sum_of_its_groups():
    plan = resource_plan(load_config(overrides=GPU_RUN), "refine")
    assert groups(plan) == {"training workers": (2, 1.0, 1.0), "decode actors (NVDEC)": (2, 1.0, 0.5),
                            "flow actors (raft_small, GPU)": (1, 1.0, 0.25), "Ray Data tasks (a free CPU)": (1, 1.0, 0.0)}
    assert (plan.phases[0].cpus, plan.phases[0].gpus) == (6.0, 3.25)
    text = plan.describe()
    for name in ("training workers", "decode actors (NVDEC)", "flow actors (raft_small, GPU)", "Ray Data tasks",
                 "scaling.{decode_actors, decode_gpus}", "data.flow_actors, scaling.flow_gpus", "3.25"):
        assert name in text, name


def test_precomputed_source_plans_the_store_before_training_only_when_it_is_missing():
    cfg = load_config(overrides={**GPU_RUN, "data.video_source": "precomputed", "scaling.num_workers": 4,
                                 "data.flow_actors": 4, "scaling.flow_gpus": 1, "scaling.decode_gpus": 0})
    plan = resource_plan(cfg, "refine", compute_store=True)
    assert [p.name for p in plan.phases] == ["pair store", "training"]
    assert groups(plan, 0) == {"decode actors (CPU)": (2, 1.0, 0.0), "flow actors (raft_small, GPU)": (4, 1.0, 1.0),
                               "Ray Data tasks (a free CPU)": (1, 1.0, 0.0)}
    assert groups(plan, 1) == {"training workers": (4, 1.0, 1.0), "Ray Data tasks (a free CPU)": (1, 1.0, 0.0)}
    assert (plan.peak_cpus, plan.peak_gpus) == (7.0, 4.0)  # the phases' largest, not their sum (8 GPUs)
    assert "peak: 7 CPU, 4 GPU" in plan.describe()
    assert [p.name for p in resource_plan(cfg, "refine", compute_store=False).phases] == ["training"]


def test_local_source_pretraining_and_local_mode_place_workers_only_or_nothing():
    for cfg, stage in ((load_config(overrides={"data.video_source": "local", "scaling.num_workers": 2}), "refine"),
                       (load_config(overrides={"scaling.num_workers": 2}), "pretrain")):
        assert groups(resource_plan(cfg, stage)) == {"training workers": (2, 1.0, 0.0)}
    plan = resource_plan(load_config(), "pretrain", local=True)
    assert plan.peak_cpus == 0 and "nothing to place on Ray" in plan.describe()
    with pytest.raises(ValueError, match="choose one of: pretrain, refine"):
        resource_plan(load_config(), "eval")


def test_gpu_only_flow_without_a_gpu_share_is_refused_by_key():
    cfg = load_config(overrides={"flow.estimator": "dali_of"})
    with pytest.raises(ConfigError, match="dali_of") as err:
        resource_plan(cfg, "refine")
    assert err.value.key == "scaling.flow_gpus"
    resource_plan(load_config(overrides={"flow.estimator": "dali_of", "data.video_source": "local"}), "refine")
    with pytest.raises(ConfigError, match="unused") as err:  # a GPU share a CPU estimator never uses
        resource_plan(load_config(overrides={"scaling.flow_gpus": 1}), "refine")
    assert err.value.key == "scaling.flow_gpus"


def test_gpu_shares_are_fractions_up_to_one_or_whole_numbers():
    assert load_config(overrides={"scaling.decode_gpus": "0.25", "scaling.flow_gpus": "2"}).scaling.flow_gpus == 2.0
    for key, value in (("scaling.decode_gpus", "1.5"), ("scaling.flow_gpus", "-0.5")):
        with pytest.raises(ConfigError) as err:
            load_config(overrides={key: value})
        assert err.value.key == key


# ---- the probe, on a 3-node cluster with declared (fake) GPUs -------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """Head {CPU 2, GPU 0} + two workers {CPU 2, GPU 2}: like an autoscaling cluster's CPU-only head."""
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another test module left Ray running"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
    try:
        for _ in range(2):
            c.add_node(num_cpus=2, num_gpus=2)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def wait_all_available(timeout_s=10.0):
    """True once every CPU and GPU of the cluster is available again (placement-group removal is async)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        total, free = ray.cluster_resources(), ray.available_resources()
        if all(free.get(k, 0) == total.get(k, 0) for k in ("CPU", "GPU")):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.ray
def test_a_plan_that_fits_is_placed_and_released(cluster):
    from raymotion.train.plan import check_schedulable

    assert ray.cluster_resources()["GPU"] == 4 and ray.cluster_resources()["CPU"] == 6
    # 4 GPU-holding members (2 workers, 1 decode, 1 flow) on the GPU nodes' 4 CPUs; the free CPU on the head.
    plan = resource_plan(load_config(overrides={**GPU_RUN, "scaling.decode_actors": 1}), "refine")
    start = time.monotonic()
    check_schedulable(plan, timeout_s=20)
    assert time.monotonic() - start < 20
    assert wait_all_available(), (ray.available_resources(), ray.cluster_resources())


@pytest.mark.ray
def test_a_plan_whose_totals_fit_but_whose_members_do_not_is_refused(cluster):
    """GPU_RUN asks 6 of 6 CPUs and 3.25 of 4 GPUs, yet its 5 GPU-holding members each need a CPU on a GPU
    node, which have 4: only placing it tells (a comparison of totals would say it fits)."""
    from raymotion.train.plan import UnschedulableError, check_schedulable

    start = time.monotonic()
    with pytest.raises(UnschedulableError, match="NOT PLACED"):
        check_schedulable(resource_plan(load_config(overrides=GPU_RUN), "refine"), timeout_s=3)
    assert time.monotonic() - start < 30
    assert wait_all_available()


@pytest.mark.ray
def test_a_plan_asking_for_more_gpus_than_exist_is_refused_by_name(cluster):
    from raymotion.train.plan import UnschedulableError, check_schedulable

    plan = resource_plan(load_config(overrides={**GPU_RUN, "scaling.num_workers": 4}), "refine")  # 5.25 GPU of 4
    start = time.monotonic()
    with pytest.raises(UnschedulableError) as err:
        check_schedulable(plan, timeout_s=3)
    assert time.monotonic() - start < 30
    text = str(err.value)
    assert "NOT PLACED" in text and "asks for more CPU and GPU than the whole cluster has" in text
    for needle in ("scaling.num_workers", "scaling.decode_gpus", "scaling.flow_gpus", "phase total: 8 CPU, 5.25 GPU",
                   "cluster total: {CPU: 6, GPU: 4}", "scaling.schedule_timeout_s"):
        assert needle in text, needle
    assert wait_all_available()


@pytest.mark.ray
def test_gpus_held_by_training_workers_refuse_gpu_decode_actors_by_name(cluster):
    """The issue's warm cluster: every GPU is held (here by a placement group standing in for Ray Train's
    workers); a pipeline that reserves NVDEC shares cannot start and is refused, not left waiting."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from raymotion.train.plan import UnschedulableError, check_schedulable

    holder = placement_group([{"GPU": 1}] * 4, strategy="SPREAD")
    assert holder.wait(20)
    try:
        cfg = load_config(overrides={"scaling.decode_gpus": 0.25, "scaling.decode_actors": 2})
        start = time.monotonic()
        with pytest.raises(UnschedulableError) as err:
            check_schedulable(resource_plan(cfg, "refine"), timeout_s=3)
        assert time.monotonic() - start < 30
        text = str(err.value)
        assert "NOT PLACED  decode actors (NVDEC): 2 x {CPU: 1, GPU: 0.25} (scaling.decode_actors, scaling.decode_gpus)" \
            in text
        assert "placed      training workers" in text and "available before the probe: {CPU: 6, GPU: 0}" in text
    finally:
        remove_placement_group(holder)
    assert wait_all_available()


# ---- the pipeline asks for what it is given ---------------------------------------------------


@pytest.fixture(scope="module")
def manifest_only(tmp_path_factory):
    """A benchmark folder with only a manifest: enough to build (not run) the pipeline's dataset."""
    root = tmp_path_factory.mktemp("manifest_only")
    pq.write_table(pa.Table.from_pylist([{
        "clip_id": "video_00000", "path": "video/video_00000/video.mp4", "labels_path": "video/video_00000/labels.parquet",
        "flow_path": "", "frames": 8, "fps": 30.0, "width": 64, "height": 64, "subject": 0, "motion": "walk",
        "split": "video"}]), root / "manifest.parquet")
    return root


def map_stages(dataset):
    """(stage class name, num_gpus, actors, fn_constructor_kwargs) of each map_batches stage, first to last,
    read from Ray Data's logical plan (an internal structure: ray 2.60)."""
    stages, op = [], dataset._logical_plan.dag
    while op.input_dependencies:
        if hasattr(op, "ray_remote_args"):
            stages.append((op.fn.__name__, op.ray_remote_args.get("num_gpus", 0), op.compute.max_size,
                           op.fn_constructor_kwargs))
        op = op.input_dependencies[0]
    return stages[::-1]


@pytest.mark.ray
def test_pipeline_stages_reserve_the_gpu_shares_they_are_given(cluster, manifest_only):
    from raymotion.config import FlowConfig
    from raymotion.data.pipeline import build_pair_dataset

    args = {"crop_size": 32, "bbox_scale": 1.3, "window": 8, "flow_config": FlowConfig(raft_weights="w.pth")}
    split = build_pair_dataset(manifest_only, flow="raft_small", decode_concurrency=3, flow_concurrency=2,
                               decode_gpus=0.25, flow_gpus=0.5, **args)
    (decode, decode_gpus, decode_n, _), (flow, flow_gpus, flow_n, flow_kwargs) = map_stages(split)
    assert (decode, decode_gpus, decode_n, flow, flow_gpus, flow_n) == ("DecodeCropStage", 0.25, 3, "FlowStage", 0.5, 2)
    assert flow_kwargs["flow_config"].device == "auto"
    # No GPU share: one fused CPU stage, and RAFT is told to stay on the CPU even where CUDA is visible.
    ((fused, fused_gpus, fused_n, fused_kwargs),) = map_stages(
        build_pair_dataset(manifest_only, flow="raft_small", flow_concurrency=2, **args))
    assert (fused, fused_gpus, fused_n) == ("DecodeFlowStage", 0, 2)
    assert fused_kwargs["flow"]["flow_config"].device == "cpu"


def test_pipeline_refuses_gpu_work_without_a_gpu_share_naming_both(tmp_path):
    from raymotion.data.pipeline import build_pair_dataset

    args = {"crop_size": 32, "bbox_scale": 1.3, "window": 8}  # refused before the folder is read or Ray is needed
    with pytest.raises(ValueError, match=r"decode_gpus=0.0 \(scaling.decode_gpus\): decoder='dali_mixed'"):
        build_pair_dataset(tmp_path, decoder="dali_mixed", **args)
    with pytest.raises(ValueError, match=r"flow_gpus=0.0 \(scaling.flow_gpus\): flow estimator 'dali_of'"):
        build_pair_dataset(tmp_path, flow="dali_of", **args)
    with pytest.raises(ValueError, match="decoder='cpu' decodes on the CPU"):
        build_pair_dataset(tmp_path, decoder="cpu", decode_gpus=0.5, **args)
