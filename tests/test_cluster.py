"""cluster/: manifests that Ray and KubeRay accept, and a real `ray start --head` + cluster/submit.sh run.

The manifest checks are fast and need no cluster. The end-to-end tests start one real, token-protected
Ray head for the module (its own session, temp dir and ports; torn down by killing that session's
processes only), submit a tiny search with cluster/submit.sh exactly as a user would, and check the run
folder, the upload size, resubmission (resume under RUN_ID-r2 without recomputing) and following a job
that is still running. They only use the CLI and the files it writes, so they hold whether shards run
one after another in the driver or as Ray actors.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import ray.autoscaler
import ray.runtime_env
import yaml
from conftest import budget_ms
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
SUBMIT = CLUSTER / "submit.sh"
SHARED = "/mnt/shared"
MUST_EXCLUDE = {".git", "runs", "/data", ".venv"}


def _load(rel: str) -> dict:
    doc = yaml.safe_load((CLUSTER / rel).read_text())
    assert isinstance(doc, dict), rel
    return doc


# ---------------------------------------------------------------- manifests (no Ray cluster needed)


def test_every_yaml_in_cluster_parses():
    files = sorted(CLUSTER.rglob("*.yaml"))
    assert {p.relative_to(CLUSTER).as_posix() for p in files} >= {
        "runtime_env.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/networkpolicy.yaml",
        "launcher/gpu.yaml"}
    for p in files:
        assert isinstance(yaml.safe_load(p.read_text()), dict), p


def _containers(pod_template: dict) -> list[dict]:
    containers = pod_template["spec"]["containers"]
    assert containers
    for c in containers:
        assert c.get("name") and c.get("image"), c
        res = c.get("resources") or {}
        assert res.get("requests") and res.get("limits"), f"{c['name']}: set resources.requests and .limits"
        for key in ("cpu", "memory"):
            assert key in res["requests"] and key in res["limits"], (c["name"], key)
    return containers


def _mounts_shared(pod_template: dict) -> None:
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod_template["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
    assert claims, "no PVC volume"
    for c in pod_template["spec"]["containers"]:
        mounted = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert mounted.get(SHARED) in claims, f"{c['name']}: mount a PVC at {SHARED}"


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert all(isinstance(v, str) for v in params.values()), "rayStartParams values must be strings"
    assert params.get("num-gpus") == "0"
    assert "dashboard-host" in params
    _containers(head["template"])
    _mounts_shared(head["template"])
    groups = spec["workerGroupSpecs"]
    assert groups
    gpu_groups = []
    for g in groups:
        assert g["groupName"]
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        assert isinstance(g.get("rayStartParams", {}), dict)
        _mounts_shared(g["template"])
        for c in _containers(g["template"]):
            if int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(g)
                tolerations = g["template"]["spec"].get("tolerations", [])
                assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), g["groupName"]
    assert gpu_groups, "a worker group needs a container limit nvidia.com/gpu >= 1"


def test_kuberay_raycluster():
    doc = _load("kuberay/raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    _check_ray_cluster_spec(doc["spec"])


def test_kuberay_rayjob():
    doc = _load("kuberay/rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("python -m hwnas.cli search ")
    assert re.search(rf"--out {SHARED}/hwnas/runs/\S+", entry), entry
    assert "--no-progress" in entry
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] >= 0
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(runtime_env) <= set(ray.runtime_env.RuntimeEnv.known_fields)
    _check_ray_cluster_spec(spec["rayClusterSpec"])


def test_kuberay_pvc_is_read_write_many():
    doc = _load("kuberay/pvc.yaml")
    assert doc["kind"] == "PersistentVolumeClaim" and doc["metadata"]["name"] == "hwnas-shared"
    assert doc["spec"]["accessModes"] == ["ReadWriteMany"]


PLACEHOLDER = "unpinned.invalid/hwnas:run-cluster-pin_image.sh"
DIGEST = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
PIN = CLUSTER / "pin_image.sh"


def _templates(spec: dict) -> list[dict]:
    """The pod templates of a RayCluster spec: head, then worker groups."""
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def _manifest_images() -> dict[str, str]:
    """Every image the manifests run: 'where' -> image."""
    images = {"launcher/gpu.yaml docker.image": _load("launcher/gpu.yaml")["docker"]["image"]}
    job = _load("kuberay/rayjob.yaml")["spec"]
    specs = {"raycluster": _load("kuberay/raycluster.yaml")["spec"], "rayjob": job["rayClusterSpec"]}
    for name, spec in specs.items():
        for t in _templates(spec):
            images.update({f"{name} {c['name']}": c["image"] for c in t["spec"]["containers"]})
    images.update({f"rayjob {c['name']}": c["image"] for c in job["submitterPodTemplate"]["spec"]["containers"]})
    return images


def test_images_pin_the_installed_ray_and_torch():
    v = ray.__version__
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM\s+(\S+)", text, re.M).group(1) == "${RAY_IMAGE}"
    assert re.search(r"^ARG RAY_IMAGE=(\S+)$", text, re.M).group(1) == f"rayproject/ray:{v}-py311-gpu"
    assert f'"ray[default,train]=={v}"' in text and f'io.hwnas.ray-version="{v}"' in text
    # torch: a stated CUDA 12.x wheel index, and the versions tested here, which pyproject.toml allows
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu12\d$", text, re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pkg, arg in (("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")):
        tested = importlib.metadata.version(pkg).split("+")[0]
        assert re.search(rf"^ARG {arg}=(\S+)$", text, re.M).group(1) == tested, pkg
        spec = SpecifierSet(re.search(rf'"{pkg}([<>=!~][^"]+)"', pyproject).group(1))
        assert tested in spec, f"pyproject.toml's {pkg}{spec} does not admit the tested {tested}"
    assert re.search(r"^USER 1000:100$", text, re.M), "the image runs as the non-root user ray"
    # every manifest runs that image, by digest, or the placeholder that pin_image.sh replaces
    images = _manifest_images()
    assert len(images) == 6, images
    for where, image in images.items():
        assert image == PLACEHOLDER or DIGEST.match(image), f"{where}: {image} is not pinned by digest"


def test_pin_image_refuses_unpinned_manifests_and_writes_a_digest(tmp_path):
    copy = tmp_path / "cluster"
    shutil.copytree(CLUSTER, copy)
    script = copy / "pin_image.sh"
    r = subprocess.run([str(script), "--check"], capture_output=True, text=True, timeout=30)
    if any(i == PLACEHOLDER for i in _manifest_images().values()):
        assert r.returncode == 1 and "not pinned by digest" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr
    for bad in ("registry.example.com/hwnas:latest", "registry.example.com/hwnas@sha256:1234"):
        r = subprocess.run([str(script), "--set", bad], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "not REPO@sha256" in r.stderr, (bad, r.stderr)
    r = subprocess.run([str(script), "tagged:1.0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "without tag or digest" in r.stderr, r.stderr
    ref = "registry.example.com/team/hwnas@sha256:" + "0123456789abcdef" * 4  # test data, not a real image
    r = subprocess.run([str(script), "--set", ref], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "all 6 images are pinned" in r.stdout, (r.stdout, r.stderr)
    for rel in ("kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "launcher/gpu.yaml"):
        text = (copy / rel).read_text()
        assert PLACEHOLDER not in text and ref in text, rel
        yaml.safe_load(text)
    assert subprocess.run([str(script), "--check"], capture_output=True, timeout=30).returncode == 0


def _pod_security(template: dict, where: str, *, volumes: bool = True) -> None:
    pod = template["spec"].get("securityContext") or {}
    assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0, f"{where}: pod runs as root"
    if volumes:
        assert pod.get("fsGroup") == pod.get("runAsGroup") == 100, f"{where}: set fsGroup for the shared volume"
    for c in template["spec"]["containers"]:
        _container_security(c.get("securityContext") or {}, f"{where} {c['name']}")


def _container_security(sc: dict, where: str) -> None:
    assert sc.get("runAsUser", 1) != 0 and sc.get("runAsNonRoot", True) is True, f"{where}: runs as root"
    assert sc.get("allowPrivilegeEscalation") is False, f"{where}: set allowPrivilegeEscalation: false"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL capabilities"
    assert not sc.get("privileged"), where


def test_every_container_runs_as_non_root():
    job = _load("kuberay/rayjob.yaml")["spec"]
    for name, spec in (("raycluster", _load("kuberay/raycluster.yaml")["spec"]), ("rayjob", job["rayClusterSpec"])):
        for t in _templates(spec):
            _pod_security(t, name)
        auto = spec["autoscalerOptions"]["securityContext"]  # the sidecar KubeRay adds to the head pod
        _container_security(auto, f"{name} autoscaler")
        assert auto["runAsNonRoot"] is True and auto["runAsUser"] > 0
    _pod_security(job["submitterPodTemplate"], "rayjob submitter", volumes=False)
    opts = " ".join(_load("launcher/gpu.yaml")["docker"]["run_options"])
    for flag in ("--user 1000:100", "--cap-drop ALL", "--security-opt no-new-privileges"):
        assert flag in opts, f"launcher/gpu.yaml docker.run_options: add {flag}"


def test_network_policy_limits_the_heads_ports_to_the_cluster():
    doc = _load("kuberay/networkpolicy.yaml")
    policies = [i for i in doc["items"] if i["kind"] == "NetworkPolicy"]
    assert policies and all(i["apiVersion"] == "networking.k8s.io/v1" for i in policies)
    raycluster_head = _load("kuberay/raycluster.yaml")["spec"]["headGroupSpec"]["template"]
    head_labels = raycluster_head["metadata"]["labels"]
    worker_labels = _templates(_load("kuberay/raycluster.yaml")["spec"])[1]["metadata"]["labels"]
    job_spec = _load("kuberay/rayjob.yaml")["spec"]
    assert _templates(job_spec["rayClusterSpec"])[0]["metadata"]["labels"] == head_labels
    submitter_labels = job_spec["submitterPodTemplate"]["metadata"]["labels"]

    def selects(selector: dict, labels: dict) -> bool:
        return set(selector.get("matchExpressions", [])) == set() and \
            all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

    def allowed(labels: dict, port: int) -> bool:
        """Whether a pod with ``labels`` may open ``port`` on the head, by some policy that selects the head."""
        for pol in policies:
            spec = pol["spec"]
            if not selects(spec["podSelector"], head_labels):
                continue
            for rule in spec.get("ingress", []):
                peers = rule.get("from")
                assert peers, f"{pol['metadata']['name']}: a rule without 'from' admits everyone"
                ports = [p["port"] for p in rule.get("ports", [])] or None
                for peer in peers:
                    assert "ipBlock" not in peer, f"{pol['metadata']['name']}: no ipBlock rules"
                    if selects(peer["podSelector"], labels) and (ports is None or port in ports):
                        return True
        return False

    head_policies = [p for p in policies if selects(p["spec"]["podSelector"], head_labels)]
    assert head_policies and all("Ingress" in p["spec"]["policyTypes"] for p in head_policies)
    container = raycluster_head["spec"]["containers"][0]
    head_ports = {p["containerPort"] for p in container["ports"]}
    assert head_ports == {6379, 8265, 10001}
    for port in head_ports | {52365, 40000}:  # the agent, and one of Ray's dynamic ports
        assert allowed(head_labels, port) and allowed(worker_labels, port), port
    assert allowed(submitter_labels, 8265)
    for port in (6379, 10001, 52365):
        assert not allowed(submitter_labels, port), port
    for port in head_ports:
        assert not allowed({"app": "something-else"}, port), port


def test_nothing_in_cluster_is_world_writable():
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for pattern in (r"\b0?[0-7]?777\b", r"chmod\s+(-R\s+)?[ao]\+w", r"chmod\s+(-R\s+)?[0-7]?[0-7][0-7][2367]\b"):
                m = re.search(pattern, text)
                assert not m, f"{path.relative_to(ROOT)}: world-writable mode {m.group(0)!r}"
    init = " ".join(_load("launcher/gpu.yaml")["initialization_commands"])
    assert "chmod 2770 /mnt/shared" in init and "chown 1000:100 /mnt/shared" in init


def test_launcher_yaml_passes_ray_up_validation():
    jsonschema = pytest.importorskip("jsonschema")  # a dependency of ray[default]
    cfg = _load("launcher/gpu.yaml")
    schema_path = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
    jsonschema.validate(cfg, json.loads(schema_path.read_text()))
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 1 and t["max_workers"] >= t.get("min_workers", 0) for t in workers)
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=disabled" not in cmd and "0.0.0.0" not in cmd
    # What `ray up` runs before it contacts the cloud: fill in the provider's defaults, then validate.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


def _ignore_lines(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip() and not s.lstrip().startswith("#")]


def test_runtime_env_excludes_large_folders():
    env = _load("runtime_env.yaml")
    assert set(env) <= set(ray.runtime_env.RuntimeEnv.known_fields)
    assert "working_dir" not in env  # from submit.sh
    # stock clusters: pip-install hwnas (and its dependencies) from the uploaded working dir, nothing else
    assert env["pip"]["packages"] == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"]
    ray.runtime_env.RuntimeEnv(**env)  # Ray accepts it
    assert MUST_EXCLUDE <= set(env["excludes"])
    assert env["env_vars"] == {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    assert set(_ignore_lines(ROOT / ".rayignore")) == set(env["excludes"])


def test_submit_sh_is_valid_bash_and_refuses_bad_arguments(tmp_path):
    assert os.access(SUBMIT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SUBMIT)], capture_output=True).returncode == 0
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9", "HWNAS_STORAGE": str(tmp_path)}
    for args in ([], ["--epochs", "1"], ["run1", "--out", "x"], ["bad/id"]):
        r = subprocess.run([str(SUBMIT), *args], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "submit.sh" in r.stderr, r.stderr
    r = subprocess.run([str(SUBMIT), "run1"], capture_output=True, text=True, env={**env, "HWNAS_INSTALL": "conda"},
                       timeout=30)
    assert r.returncode == 2 and "HWNAS_INSTALL must be pip" in r.stderr, r.stderr


# ---------------------------------------------------------------- a real head and cluster/submit.sh


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies waiting to be reaped do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if os.getsid(int(entry)) == sid and stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry))
            except (OSError, IndexError):
                pass
    return pids


def _kill_session(sid: int, grace: float = 3.0) -> None:
    """Stop every process of this head's session (not `ray stop`, which stops all of the user's Ray)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in _session_pids(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_pids(sid):
            return


@dataclass
class Head:
    address: str  # the dashboard / Jobs API
    env: dict  # what a user's shell needs to submit: PATH, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH
    token: str
    temp_dir: Path
    storage: Path

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def run_submit(self, run_id: str, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """``cluster/submit.sh RUN_ID FLAGS`` from outside the repo, as a user's shell would run it."""
        env = {**(self.env if env is None else env), "RAY_ADDRESS": self.address,
               "HWNAS_STORAGE": str(self.storage), "HWNAS_NO_WAIT": "1"}
        return subprocess.run([str(SUBMIT), run_id, *flags], capture_output=True, text=True, env=env,
                              cwd=tempfile.gettempdir(), timeout=180)

    def submit(self, run_id: str, *flags: str) -> subprocess.CompletedProcess:
        r = self.run_submit(run_id, *flags)
        assert r.returncode == 0, f"submit.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r

    def wait(self, job_id: str, timeout: float = 300) -> str:
        from ray.job_submission import JobStatus

        client = self.client()
        deadline = time.monotonic() + timeout
        status = client.get_job_status(job_id)
        while not status.is_terminal() and time.monotonic() < deadline:
            time.sleep(1)
            status = client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            pytest.fail(f"job {job_id} is {status.value} after at most {timeout:.0f} s; its logs:\n"
                        f"{client.get_job_logs(job_id)[-8000:]}")
        return client.get_job_logs(job_id)


def _start_head(base: Path, bin_dir: Path, env_extra: dict) -> Iterator[Head]:
    """A real, token-protected head started with ``bin_dir/ray``; torn down (its session only) afterwards."""
    # Ray's socket paths must stay under ~107 bytes: a short temp dir of its own under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="hwray", dir="/tmp"))
    token = secrets.token_hex(32)
    token_path = base / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in (
        "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "PYTHONPATH", "VIRTUAL_ENV")}
    # Token auth from a token file of our own, so the test neither needs nor touches ~/.ray/auth_token.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1", **env_extra)
    gcs, dash, client_port, agent = _free_ports(4)
    cmd = [str(bin_dir / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
           f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent}",
           "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={temp_dir}",
           "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=base)
    sid = proc.pid  # the daemons `ray start` leaves behind stay in this session
    try:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed ({proc.returncode}):\n{out}")
        h = Head(f"http://127.0.0.1:{dash}", env, token, temp_dir, base / "storage")
        deadline = time.monotonic() + 60
        while True:
            try:
                h.client().list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield h
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_session(sid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _needs_ray_cli() -> Path:
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists() or shutil.which("bash") is None or not Path("/proc").is_dir():
        pytest.skip("needs the venv's `ray` executable, bash and /proc (Linux)")
    return ray_bin


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head running this venv's Python, where hwnas is installed: jobs need nothing installed (image mode)."""
    ray_bin = _needs_ray_cli()
    yield from _start_head(tmp_path_factory.mktemp("cluster"), ray_bin.parent, {"HWNAS_INSTALL": "image"})


TINY = ("--space", "seed-cnn", "--dataset", "digits", "--data-limit", "200", "--epochs", "2",
        "--warmup-epochs", "1", "--fine-tune-epochs", "1", "--targets", f"{budget_ms(0.4):g},{budget_ms(1.0):g}", "--seeds", "0",
        "--threads", "1")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_head_refuses_requests_without_the_token(head, tmp_path):
    import requests

    assert requests.get(f"{head.address}/api/jobs/", timeout=10).status_code == 401
    bad = requests.get(f"{head.address}/api/jobs/", headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 403
    ok = requests.get(f"{head.address}/api/jobs/", headers={"Authorization": f"Bearer {head.token}"}, timeout=10)
    assert ok.status_code == 200

    # submit.sh with a wrong token, or with none at all (no ~/.ray/auth_token either): refused.
    no_token = {k: v for k, v in head.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    for env in ({**head.env, "RAY_AUTH_TOKEN": "0" * 64}, {**no_token, "HOME": str(tmp_path)}):
        r = head.run_submit("denied-0", *TINY, env=env)
        assert r.returncode == 1 and "Authentication" in r.stderr, (r.stdout, r.stderr)
    assert not any(j.submission_id.startswith("denied") for j in head.client().list_jobs())


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_submit_runs_a_search_and_resubmitting_resumes_it(head):
    run_id = "tiny-0"
    run_dir = head.storage / "runs" / run_id
    r = head.submit(run_id, *TINY)
    assert f"submission id: {run_id}\n" in r.stdout and str(run_dir) in r.stdout, r.stdout
    head.wait(run_id)

    front = json.loads((run_dir / "pareto.json").read_text())
    assert isinstance(front, list) and front
    for cand in front:
        assert {"arch", "accuracy", "predicted_latency_ms"} <= set(cand), cand
        assert 0.0 <= cand["accuracy"] <= 1.0 and cand["predicted_latency_ms"] > 0
    done = sorted(run_dir.glob("shards/*/candidate.json"))
    assert len(done) == 2, done
    mtimes = {p: p.stat().st_mtime_ns for p in done}

    # What went up: the repo without .venv (GBs), .git, runs or data; a few MB at most.
    pkgs = [p for p in head.temp_dir.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*") if p.is_dir()]
    assert pkgs, "no working_dir package found on the head"
    for pkg in pkgs:
        assert (pkg / "hwnas" / "cli.py").is_file()
        assert not any((pkg / d).exists() for d in MUST_EXCLUDE | {"benchmarks/data"}), sorted(os.listdir(pkg))
        size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
        assert size < 20 * 2**20, f"working_dir upload is {size / 2**20:.1f} MiB"

    # The same RUN_ID again: Ray never reuses a submission id, so it runs as RUN_ID-r2 on the same
    # folder, reads the finished shards back and rewrites the front without training anything.
    r2 = head.submit(run_id, *TINY)
    assert f"submission id: {run_id}-r2\n" in r2.stdout, r2.stdout
    head.wait(f"{run_id}-r2")
    assert {p: p.stat().st_mtime_ns for p in done} == mtimes, "resubmission recomputed finished shards"
    assert json.loads((run_dir / "pareto.json").read_text()) == front


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_submit_follows_a_run_that_is_still_running(head):
    from ray.job_submission import JobStatus

    client = head.client()
    client.submit_job(entrypoint="sleep 60", submission_id="busy-0")
    try:
        deadline = time.monotonic() + 30
        while client.get_job_status("busy-0") == JobStatus.PENDING and time.monotonic() < deadline:
            time.sleep(0.5)
        r = head.submit("busy-0", *TINY)
        assert "submission id: busy-0 (already RUNNING" in r.stdout, r.stdout
        assert {j.submission_id for j in client.list_jobs()} & {"busy-0-r2"} == set()
    finally:
        client.stop_job("busy-0")


# ---------------------------------------------------------------- a stock cluster: hwnas is not installed

HIDDEN_DEP = "tqdm"  # a dependency of hwnas alone (not of ray): only the job's pip step can bring it


def _stock_python(base: Path) -> Path:
    """The Python of a "stock" cluster, like a rayproject/ray image: ray, torch and the rest are installed,
    hwnas is not. A fresh venv whose site-packages links to this venv's packages, except hwnas (an editable
    install here) and HIDDEN_DEP; returns its bin folder, which gets a `ray` CLI."""
    venv = base / "py"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    ours = Path(ray.__file__).resolve().parents[1]  # this venv's site-packages
    site = next(venv.glob("lib/python3*/site-packages"))
    hidden = ("hwnas", "__editable__", HIDDEN_DEP, f"{HIDDEN_DEP}-", "__pycache__")
    for entry in ours.iterdir():
        if entry.name.startswith(hidden) or entry.suffix == ".pth" or (site / entry.name).exists():
            continue
        (site / entry.name).symlink_to(entry)
    ray_cli = venv / "bin" / "ray"
    ray_cli.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom ray.scripts.scripts import main\n"
                       "sys.exit(main())\n")
    ray_cli.chmod(0o755)
    return venv / "bin"


@pytest.fixture(scope="module")
def stock_head(tmp_path_factory):
    _needs_ray_cli()
    base = tmp_path_factory.mktemp("stock")
    bin_dir = _stock_python(base)
    yield from _start_head(base, bin_dir, {"HWNAS_INSTALL": "pip", "PYTHON": str(bin_dir / "python")})


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_submit_installs_hwnas_on_a_stock_cluster(stock_head, tmp_path):
    py = stock_head.env["PYTHON"]
    for module in ("hwnas", HIDDEN_DEP):  # the cluster's Python has ray and torch, not these
        r = subprocess.run([py, "-c", f"import ray, torch; import {module}"], cwd=tmp_path, env=stock_head.env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and f"No module named '{module}'" in r.stderr, (module, r.stderr[-2000:])

    run_id = "stock-0"
    r = stock_head.submit(run_id, "--space", "seed-cnn", "--dataset", "digits", "--data-limit", "200", "--epochs",
                          "1", "--warmup-epochs", "0", "--fine-tune-epochs", "0", "--seeds", "0,1", "--threads", "1",
                          "--json")
    assert "install:       pip" in r.stdout, r.stdout
    stock_head.wait(run_id, timeout=360)
    run_dir = stock_head.storage / "runs" / run_id
    assert json.loads((run_dir / "pareto.json").read_text()) and len(list(run_dir.glob("shards/*/candidate.json"))) == 2

    # the job ran in the environment Ray built on the node: hwnas and its missing dependency pip-installed
    envs = list(stock_head.temp_dir.glob("session_2*/runtime_resources/pip/*/virtualenv"))
    assert len(envs) == 1, envs
    site = next(envs[0].glob("lib/python3*/site-packages"))
    assert list(site.glob("hwnas-*.dist-info")) and list(site.glob(f"{HIDDEN_DEP}-*.dist-info")), \
        sorted(p.name for p in site.iterdir())
