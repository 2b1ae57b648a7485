"""`repairbot comfyui install`: a ComfyUI of our own, with kijai's DDColor node and its checkpoints.

Everything lands under one folder (`COMFYUI_DIR`, default `var/comfyui/`):

    ComfyUI/                              ComfyUI at a pinned commit (a git URL or a local path)
    ComfyUI/custom_nodes/ComfyUI-DDColor/ the DDColor node at a pinned commit
    ComfyUI/custom_nodes/ComfyUI-DDColor/checkpoints/  where that node reads its weights
    venv/                                 its own Python: torch (CUDA with an NVIDIA GPU, CPU otherwise)
    install.json                          what was installed, so a rerun skips finished steps

Each step says what it does and shows the tools' own progress (git, pip, the hub's progress bars), and
every failure ends in one `InstallError` sentence that says what to do (no network, no disk, no driver).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.settings import Settings

COMFYUI_GIT = "https://github.com/Comfy-Org/ComfyUI.git"
COMFYUI_REF = "a125cd84b054a57729b5eecab930ca9408719832"  # v0.3.64, the release the protocol was read from
NODE_GIT = "https://github.com/kijai/ComfyUI-DDColor.git"
NODE_REF = "30d5b8e7666382a6a78404caee28dfa87f741037"  # 2024-01-18
NODE_DIRNAME = "ComfyUI-DDColor"
HF_REPO = "piddnad/DDColor-models"  # the repository the node itself downloads from
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# Left out of ComfyUI's requirements: torch comes first in its own flavour; torchaudio only serves
# ComfyUI's audio nodes, which then stay unloaded. OpenCV's desktop build needs libGL, which servers
# and slim images lack; the headless build provides the same `cv2`.
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}
RENAMED_REQUIREMENTS = {"opencv-python": "opencv-python-headless", "opencv_python": "opencv-python-headless"}
# ComfyUI imports `requests` (app/frontend_management.py) without listing it; it used to arrive with
# huggingface_hub, whose 1.x releases no longer depend on it.
EXTRA_REQUIREMENTS = ("requests",)
FREE_GB_NEEDED = {"cpu": 4.0, "cuda": 10.0}  # venv + sources; checkpoints are checked one by one


class InstallError(RuntimeError):
    """One sentence for the operator: what failed and what to do."""


@dataclass(frozen=True)
class Layout:
    """Where an install keeps each part; `repairbot up` reads the same layout."""

    root: Path
    python_path: Path | None = None  # COMFYUI_PYTHON: an existing Python instead of our own virtualenv

    @property
    def comfyui(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def node(self) -> Path:
        return self.comfyui / "custom_nodes" / NODE_DIRNAME

    @property
    def checkpoints(self) -> Path:
        # nodes.py: os.path.join(script_directory, "checkpoints/<name>")
        return self.node / "checkpoints"

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        if self.python_path is not None:
            return self.python_path
        return self.venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    @property
    def state_file(self) -> Path:
        return self.root / "install.json"

    def read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        except (OSError, ValueError):
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def installed(self) -> bool:
        """True once every step of an install finished (a half-done install is not 'installed')."""
        return bool(self.read_state().get("complete")) and self.python.exists() and (self.comfyui / "main.py").exists()


@dataclass
class InstallOptions:
    root: Path
    source: str = COMFYUI_GIT
    ref: str = COMFYUI_REF
    node_source: str = NODE_GIT
    node_ref: str = NODE_REF
    weights: Path | None = None
    skip_weights: bool = False
    checkpoints: tuple[str, ...] = ()
    device: str = "auto"  # auto | cpu | cuda
    torch_spec: str = "torch"
    torch_index: str = "auto"  # auto: the CPU wheel index for a CPU install; "" = pip's own indexes only
    hf_endpoint: str | None = None
    python: Path | None = None
    extra_requirements: tuple[str, ...] = EXTRA_REQUIREMENTS
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


# --- the steps -----------------------------------------------------------------------------------
def install(options: InstallOptions) -> Layout:
    """Run every step; each one is skipped when the install already has what it would make."""
    layout = Layout(options.root.resolve(), options.python)
    state = layout.read_state()
    state["complete"] = False
    steps = 6
    say = options.say

    say(f"[1/{steps}] checking the machine")
    device = detect_device(options.device, say)
    check_free_space(layout.root, FREE_GB_NEEDED[device])
    state["device"] = device

    say(f"[2/{steps}] ComfyUI from {options.source} at {options.ref[:12]}")
    checkout(options.source, options.ref, layout.comfyui, say)
    state["comfyui"] = {"source": options.source, "ref": options.ref}
    layout.write_state(state)

    say(f"[3/{steps}] DDColor node from {options.node_source} at {options.node_ref[:12]}")
    checkout(options.node_source, options.node_ref, layout.node, say)
    state["node"] = {"source": options.node_source, "ref": options.node_ref}
    layout.write_state(state)

    say(f"[4/{steps}] Python environment in {layout.venv} with torch for {device}")
    make_venv(layout, say)
    install_torch(layout, device, options, say)

    say(f"[5/{steps}] ComfyUI's and the node's requirements")
    install_requirements(layout, state, options.extra_requirements, say)
    layout.write_state(state)

    names = options.checkpoints
    if options.skip_weights:
        say(f"[6/{steps}] checkpoints: skipped (--skip-weights); run the install again to fetch them")
        layout.write_state(state)
        return layout
    say(f"[6/{steps}] checkpoints {', '.join(names) or '(none named)'} in {layout.checkpoints}")
    recorded = state.setdefault("checkpoints", {})
    for name in names:
        if options.weights is not None:
            recorded[name] = copy_checkpoint(options.weights, name, layout.checkpoints, say)
        else:
            recorded[name] = download_checkpoint(name, layout.checkpoints, recorded.get(name), options, say)
        layout.write_state(state)

    state["complete"] = True
    layout.write_state(state)
    say(f"ComfyUI is installed in {layout.root}; `repairbot up` starts it")
    return layout


def detect_device(wanted: str, say: Callable[[str], None]) -> str:
    """CUDA when nvidia-smi lists a GPU; CPU when there is none. A driver that is there but broken is
    an error rather than a silent CPU install, since the operator most likely wants the GPU."""
    if wanted in ("cpu", "cuda"):  # named, not detected (an image build has no GPU to see)
        say(f"      {wanted.upper()} build of torch (asked for)")
        return wanted
    smi = shutil.which("nvidia-smi")
    if smi is None:
        say("      no NVIDIA GPU (nvidia-smi not found): CPU build of torch, ComfyUI will run with --cpu")
        return "cpu"
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(
            f"nvidia-smi did not answer ({exc}): the NVIDIA driver is not working; fix it, "
            "or install the CPU build with --device cpu"
        ) from exc
    gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    if listed.returncode != 0 or not gpus:
        detail = (listed.stderr or listed.stdout).strip().splitlines()[:1]
        raise InstallError(
            f"nvidia-smi is installed but sees no GPU ({' '.join(detail) or 'no output'}): the "
            "NVIDIA driver is not working; fix it, or install the CPU build with --device cpu"
        )
    say(f"      {gpus[0]}: CUDA build of torch")
    return "cuda"


def check_free_space(root: Path, needed_gb: float) -> None:
    probe = root
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < needed_gb:
        raise InstallError(
            f"not enough disk: {free_gb:.1f} GB free in {probe}, the install needs about "
            f"{needed_gb:.0f} GB; free some space or choose another folder with --dir"
        )


def checkout(source: str, ref: str, target: Path, say: Callable[[str], None]) -> None:
    """A git checkout of `source` (URL or local path) at exactly `ref`; an existing one is moved to it."""
    if is_local(source):
        path = Path(source).expanduser().resolve()
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            raise InstallError(f"{source} is not a git repository")
        source = str(path)
    if (target / ".git").exists():
        head = _git(["rev-parse", "HEAD"], cwd=target).strip()
        if head.startswith(ref) or head == _resolve(target, ref):
            say(f"      already at {head[:12]}")
            return
        say(f"      moving {target} from {head[:12]} to {ref[:12]}")
        if _resolve(target, ref) is None:
            _run(["git", "fetch", "--progress", source, ref], cwd=target, what=f"fetching {ref[:12]} from {source}")
    else:
        if target.exists() and any(target.iterdir()):
            raise InstallError(f"{target} exists and is not a git checkout: move it away and run the install again")
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "--progress", "--no-checkout", source, str(target)], what=f"cloning {source}")
    if _resolve(target, ref) is None:
        raise InstallError(
            f"{source} has no commit {ref}: pass the pinned repository, or another commit with --ref / --node-ref"
        )
    _run(
        ["git", "-c", "advice.detachedHead=false", "checkout", "--force", ref],
        cwd=target,
        what=f"checking out {ref[:12]}",
    )


def make_venv(layout: Layout, say: Callable[[str], None]) -> None:
    if layout.python_path is not None:
        if not layout.python.exists():
            raise InstallError(f"COMFYUI_PYTHON={layout.python} does not exist")
        say(f"      using {layout.python} (COMFYUI_PYTHON), no virtualenv")
        return
    if layout.python.exists():
        say(f"      virtualenv exists ({layout.venv})")
        return
    say(f"      creating a virtualenv with {sys.executable}")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(layout.venv)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise InstallError(f"could not create a virtualenv in {layout.venv}: {exc}") from exc


def torch_flavour(layout: Layout) -> str | None:
    """'cpu', 'cuda' or None (torch or torchvision missing) for the install's own Python."""
    probe = "import torch, torchvision; print('cuda' if torch.version.cuda else 'cpu', torch.__version__)"
    done = subprocess.run([str(layout.python), "-c", probe], capture_output=True, text=True)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


def install_torch(layout: Layout, device: str, options: InstallOptions, say: Callable[[str], None]) -> None:
    if not options.torch_spec:
        say("      COMFYUI_TORCH is empty: torch left as it is")
        return
    flavour = torch_flavour(layout)
    if flavour == device or (flavour == "cuda" and device == "cpu"):
        say(f"      torch is installed ({flavour} build)")
        return
    command = _pip(layout) + ["install", options.torch_spec, "torchvision"]
    index = CPU_TORCH_INDEX if options.torch_index == "auto" and device == "cpu" else options.torch_index
    if index and index != "auto":
        command += ["--extra-index-url", index]
    say(
        f"      pip install {options.torch_spec} torchvision"
        + (f" (also from {index})" if index and index != "auto" else "")
    )
    _run(command, what="installing torch")
    installed = torch_flavour(layout)
    if installed is None:
        raise InstallError(
            "torch and torchvision were installed but do not import together in the install's Python (a CPU "
            "torch with a CUDA torchvision, say): install both from one index (COMFYUI_TORCH_INDEX_URL=auto "
            "gives PyTorch's CPU index) or pin a matching pair with COMFYUI_TORCH"
        )
    if installed != device:
        say(f"      note: the {installed} build of torch was installed on a {device} machine")


def requirement_lines(*files: Path) -> list[str]:
    """Both requirements files, without the torch packages (installed before) and with OpenCV headless."""
    lines: list[str] = []
    for path in files:
        if not path.exists():
            continue
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].strip()
            if name.lower() in SKIPPED_REQUIREMENTS:
                continue
            renamed = RENAMED_REQUIREMENTS.get(name.lower()) or RENAMED_REQUIREMENTS.get(name)
            lines.append(renamed + line[len(name) :] if renamed else line)
    return lines


def install_requirements(
    layout: Layout, state: dict[str, Any], extra: tuple[str, ...], say: Callable[[str], None]
) -> None:
    lines = requirement_lines(layout.comfyui / "requirements.txt", layout.node / "requirements.txt")
    lines += [line for line in extra if line not in lines]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    if state.get("requirements") == digest:
        say("      already installed")
        return
    if not lines:
        say("      nothing to install")
        state["requirements"] = digest
        return
    wanted = layout.root / "requirements.txt"
    wanted.write_text("\n".join(lines) + "\n")
    say(f"      pip install -r {wanted} ({len(lines)} packages)")
    _run(_pip(layout) + ["install", "-r", str(wanted)], what="installing ComfyUI's requirements")
    state["requirements"] = digest


# --- checkpoints -----------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_checkpoint(weights: Path, name: str, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """`--weights` is a checkpoint file (used for every name) or a folder holding files by those names."""
    source = weights / name if weights.is_dir() else weights
    if not source.is_file():
        raise InstallError(f"--weights {weights}: no checkpoint {name} there")
    target = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    size = source.stat().st_size
    if target.is_file() and target.stat().st_size == size and sha256_of(target) == sha256_of(source):
        say(f"      {name}: already there ({size / 1e6:.0f} MB)")
        return {"sha256": sha256_of(target), "size": size, "from": str(source)}
    check_free_space(folder, size / 1e9 + 0.1)
    partial = target.with_name(target.name + ".part")
    from tqdm.auto import tqdm

    try:
        with (
            source.open("rb") as src,
            partial.open("wb") as dst,
            tqdm(total=size, unit="B", unit_scale=True, desc=f"      {name}") as bar,
        ):
            for chunk in iter(lambda: src.read(1 << 22), b""):
                dst.write(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InstallError(f"copying {source} to {folder} failed: {exc.strerror or exc}") from exc
    digest = sha256_of(partial)
    partial.replace(target)
    say(f"      {name}: copied from {source} (sha256 {digest[:16]}…)")
    return {"sha256": digest, "size": size, "from": str(source)}


def download_checkpoint(
    name: str, folder: Path, recorded: dict[str, Any] | None, options: InstallOptions, say: Callable[[str], None]
) -> dict[str, Any]:
    """From the hub with huggingface_hub (its progress bar, its retries that resume a dropped connection),
    into `<name>.part` next to the target, so a run stopped midway resumes where it stopped on the next
    one. The file must match the SHA-256 the hub publishes for it (its LFS etag), or it is deleted."""
    try:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import HfHubHTTPError, build_hf_headers  # type: ignore[attr-defined]
    except ImportError as exc:
        raise InstallError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    endpoint = (options.hf_endpoint or constants.ENDPOINT).rstrip("/")
    target = folder / name
    url = hf_hub_url(HF_REPO, name, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url)
    except Exception as exc:  # noqa: BLE001 - network errors come in several library types
        if target.is_file() and recorded and recorded.get("sha256") == sha256_of(target):
            say(f"      {name}: hub unreachable, keeping the verified file already there")
            return recorded
        raise InstallError(
            f"cannot reach {endpoint} for {HF_REPO}/{name} ({_short(exc)}): no network? Copy the checkpoint "
            f"here with --weights PATH"
        ) from exc
    expected = (meta.etag or "").strip('"').lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise InstallError(f"the hub gave no SHA-256 for {name} (etag {meta.etag!r}); refusing an unchecked file")
    if target.is_file() and target.stat().st_size == meta.size and sha256_of(target) == expected:
        say(f"      {name}: already there and verified")
        return {"sha256": expected, "size": meta.size, "from": url}
    if meta.size:
        check_free_space(folder, meta.size / 1e9 + 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    done = partial.stat().st_size if partial.is_file() else 0
    if meta.size is not None and done > meta.size:
        partial.unlink()
        done = 0
    say(
        f"      {name}: {(meta.size or 0) / 1e6:.0f} MB from {endpoint}"
        + (f", resuming at {done / 1e6:.0f} MB" if done else "")
    )
    try:
        with partial.open("r+b" if done else "wb") as handle:  # not "ab": a server ignoring Range rewinds it
            handle.seek(done)
            http_get(
                meta.location or url, handle, resume_size=done, headers=build_hf_headers(), expected_size=meta.size
            )
    except HfHubHTTPError as exc:
        raise InstallError(f"the hub refused {HF_REPO}/{name}: {_short(exc)}") from exc
    except OSError as exc:
        if getattr(exc, "errno", None) == 28:
            raise InstallError(f"the disk filled up while downloading {name} into {folder}") from exc
        raise InstallError(f"downloading {name} failed ({_short(exc)}); run the install again to resume") from exc
    except Exception as exc:  # noqa: BLE001 - connection drops surface as httpx errors
        raise InstallError(f"downloading {name} failed ({_short(exc)}); run the install again to resume") from exc
    path = partial
    digest = sha256_of(path)
    if digest != expected:
        path.unlink(missing_ok=True)
        raise InstallError(
            f"{name} does not match its published SHA-256 (got {digest[:16]}…, want "
            f"{expected[:16]}…): the file was deleted; run the install again"
        )
    path.replace(target)
    say(f"      {name}: verified (sha256 {digest[:16]}…)")
    return {"sha256": digest, "size": target.stat().st_size, "from": url}


def checkpoints_named(workflows_dir: Path) -> tuple[str, ...]:
    """The checkpoint each mode uses by default: what a fresh install must have."""
    from backend.workflows import Workflows

    names: list[str] = []
    for mode in Workflows.load(workflows_dir).modes.values():
        for node in mode.build("probe.png", task_id="install").values():
            value = node.get("inputs", {}).get("checkpoint")
            if node.get("class_type") == "DDColor_Colorize" and isinstance(value, str) and value not in names:
                names.append(value)
    return tuple(names)


# --- helpers -------------------------------------------------------------------------------------
def is_local(source: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*://", source) and not re.match(r"^[\w.-]+@[\w.-]+:", source)


def _pip(layout: Layout) -> list[str]:
    return [str(layout.python), "-m", "pip", "--disable-pip-version-check"]


def _resolve(repo: Path, ref: str) -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=repo, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


NETWORK_SIGNS = (
    "could not resolve",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "connection refused",
    "newconnectionerror",
    "failed to establish",
    "connection timed out",
    "no route to host",
    "failed to connect",
    "couldn't connect",
)
DISK_SIGNS = ("no space left on device", "errno 28", "disk quota exceeded")


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    """Run a tool with its output (and progress) passed through; a failure becomes one clear sentence."""
    tail: deque[str] = deque(maxlen=60)
    env = dict(os.environ, PYTHONUNBUFFERED="1", GIT_TERMINAL_PROMPT="0")
    try:
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    except OSError as exc:
        raise InstallError(f"{what}: cannot run {command[0]} ({exc.strerror})") from exc
    assert proc.stdout is not None
    buffered = b""
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]  # a BufferedReader
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        buffered = (buffered + chunk)[-8192:]
    code = proc.wait()
    tail.extend(buffered.decode(errors="replace").replace("\r", "\n").splitlines())
    if code == 0:
        return
    text = "\n".join(tail).lower()
    if any(sign in text for sign in DISK_SIGNS):
        raise InstallError(f"{what} failed: the disk is full; free some space and run the install again")
    if any(sign in text for sign in NETWORK_SIGNS):
        raise InstallError(
            f"{what} failed: no network (see above); connect, or install from local copies with "
            "--source/--node-source and --weights"
        )
    last = next((line for line in reversed(tail) if line.strip()), "")
    raise InstallError(f"{what} failed (exit {code}): {last.strip()[:300]}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# --- `repairbot comfyui install` -----------------------------------------------------------------------
def options_from(
    settings: Settings, args: argparse.Namespace | None = None, say: Callable[[str], None] | None = None
) -> InstallOptions:
    """Install options: the command line where given, else the settings, else the pinned defaults."""

    def get(name: str, default: Any) -> Any:
        value = getattr(args, name, None) if args is not None else None
        if value is None:
            value = getattr(settings, f"comfyui_{name}", None)
        return default if value is None else value

    options = InstallOptions(
        root=Path(getattr(args, "dir", None) or settings.comfyui_dir),
        source=get("source", COMFYUI_GIT),
        ref=get("ref", COMFYUI_REF),
        node_source=get("node_source", NODE_GIT),
        node_ref=get("node_ref", NODE_REF),
        weights=get("weights", None),
        skip_weights=bool(getattr(args, "skip_weights", False)),
        checkpoints=checkpoints_named(settings.workflows_dir),
        device=get("device", "auto"),
        torch_spec=settings.comfyui_torch,
        torch_index=settings.comfyui_torch_index_url,
        python=settings.comfyui_python,
        hf_endpoint=settings.hf_endpoint,
    )
    if say is not None:
        options.say = say
    return options


def run_install(settings: Settings, args: argparse.Namespace) -> int:
    try:
        install(options_from(settings, args))
    except InstallError as exc:
        print(f"install failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("install stopped; run it again to carry on where it stopped", file=sys.stderr)
        return 130
    return 0
