"""jobs/cluster.yaml: Ray's own schema accepts it, every node starts Ray with token authentication (the
token from a file, never written in the YAML), and a failed NFS mount fails the node's setup instead of
being hidden by `|| true` (before: `mount ... || true`, and no authentication)."""

import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "jobs" / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_accepts_the_cluster_file(cluster):
    pytest.importorskip("ray.autoscaler")
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(cluster))


def test_every_node_starts_ray_with_token_authentication(cluster):
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cluster[key]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c and "RAY_AUTH_TOKEN_PATH" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert "RAY_AUTH_TOKEN=" not in CLUSTER.read_text().replace("RAY_AUTH_TOKEN=\"$(", "")  # no literal secret


def test_a_failed_mount_fails_the_node_setup(cluster, tmp_path):
    """Runs the mount command with stand-ins for sudo, mount and mountpoint that fail like a missing EFS."""
    mount = next(c for c in cluster["setup_commands"] if "mount -t nfs" in c)
    assert "|| true" not in mount
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sudo", '"$@"'), ("mount", "exit 32"), ("mountpoint", "exit 1"), ("mkdir", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    failed = subprocess.run(["bash", "-c", mount], env=env, capture_output=True, text=True, timeout=30)
    assert failed.returncode != 0
    (bin_dir / "mountpoint").write_text("#!/bin/sh\nexit 0\n")  # already mounted: setup goes on
    assert subprocess.run(["bash", "-c", mount], env=env, capture_output=True, timeout=30).returncode == 0
