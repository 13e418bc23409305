"""Check what the Lambda image installs, without Docker: the runtime requirements go into a clean
virtualenv, the image's file layout is copied beside it (handler/ + models/, as the Dockerfile
does), every entry point named in template.yaml is imported, the bundled model is loaded, and
the installed size is printed. TensorFlow must not be installed.

The image runs CPython 3.12 on Amazon Linux 2023 (x86_64 or arm64), not this machine's Python, so
the pinned set (runtime.txt + constraints.txt) is also resolved with ``pip download --only-binary
:all: --platform manylinux_... --python-version 3.12`` for both architectures: every package needs a
wheel there, and every package pip picks must be pinned in constraints.txt.

The development virtualenv installs with the same constraints, so the tests run against the versions
the image installs; ``--dev-python .venv/bin/python`` fails the check when any shared package drifts.

Run: python3 infra/check_image_requirements.py --dev-python .venv/bin/python   (target: under 300 MB)
     python3 infra/check_image_requirements.py --refresh   (rewrite constraints.txt from runtime.txt)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 300
RUNTIME = ROOT / "requirements" / "runtime.txt"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
IMAGE_PYTHON = "3.12"
ARCHITECTURES = ("x86_64", "aarch64")  # Lambda's x86_64 and arm64
GLIBC_MINORS = range(17, 35)  # Amazon Linux 2023 has glibc 2.34: any manylinux_2_17 .. 2_34 wheel runs
CONSTRAINTS_HEADER = """\
# Every package the Lambda image installs, transitive ones included, pinned (pip -c).
# Resolved for CPython 3.12 on manylinux x86_64 and aarch64; `make image-check` verifies that each has a
# wheel for both. Refresh: edit runtime.txt, then `python infra/check_image_requirements.py --refresh`.
"""
PROBE = """
import importlib, json, sys
entry_points = json.loads(sys.argv[1])
found = {}
for function, target in entry_points.items():
    module, _, name = target.rpartition(".")
    found[function] = callable(getattr(importlib.import_module(module), name))
import handler.app
version = handler.app.service().model_info.version
try:
    import tensorflow  # noqa: F401
    has_tf = True
except ImportError:
    has_tf = False
print(json.dumps({"entry_points": found, "model": version, "tensorflow": has_tf}))
"""


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_wheels(architecture: str, directory: Path, *, constrained: bool = True) -> dict[str, str]:
    """Resolve the runtime set as the image's pip would, on its platform: name -> version of each wheel."""
    platforms = [f"manylinux_2_{minor}_{architecture}" for minor in GLIBC_MINORS] + [f"manylinux2014_{architecture}"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--disable-pip-version-check",
        "--only-binary",
        ":all:",
        "--python-version",
        IMAGE_PYTHON,
        "--implementation",
        "cp",
        "-d",
        str(directory),
        "-r",
        str(RUNTIME),
    ]
    command += [arg for platform in platforms for arg in ("--platform", platform)]
    if constrained:
        command += ["-c", str(CONSTRAINTS)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise SystemExit(f"no complete wheel set for Python {IMAGE_PYTHON} on {architecture}:\n" + "\n".join(errors))
    return {canonical(w.name.split("-")[0]): w.name.split("-")[1] for w in directory.glob("*.whl")}


def pinned() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return {canonical(name): version for name, _, version in (line.partition("==") for line in lines if line)}


def check_platform_wheels() -> bool:
    pins, ok = pinned(), True
    for architecture in ARCHITECTURES:
        with tempfile.TemporaryDirectory() as tmp:
            wheels = image_wheels(architecture, Path(tmp))
        unpinned = sorted(set(wheels) - set(pins))
        ok &= not unpinned
        print(
            f"CPython {IMAGE_PYTHON} manylinux {architecture}: {len(wheels)} wheels, all pinned"
            if not unpinned
            else f"CPython {IMAGE_PYTHON} {architecture}: not pinned in constraints.txt: {unpinned}"
        )
    return ok


def check_development_environment(python: Path) -> bool:
    """The tests run against what the image installs: every package pinned in constraints.txt that the
    development virtualenv holds must be at the pinned version (both install with ``-c constraints.txt``;
    a hand-installed upgrade, or a dev pin that overrides the image's, is drift)."""
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {canonical(item["name"]): item["version"] for item in json.loads(listed.stdout)}
    pins = pinned()
    drift = {
        name: (pins[name], installed[name])
        for name in sorted(pins)
        if name in installed and installed[name] != pins[name]
    }
    missing = sorted(
        name for name in ("boto3", "botocore", "numpy", "pillow", "ai-edge-litert") if name not in installed
    )
    for name, (want, have) in drift.items():
        print(f"drift: {name} is {have} in the development environment, the image pins {want}")
    if missing:
        print(f"drift: the development environment lacks {missing}")
    shared = sum(1 for name in pins if name in installed)
    if not drift and not missing:
        print(
            f"development environment ({python}): the {shared} packages it shares with the image match constraints.txt"
        )
    return not drift and not missing


def refresh_constraints() -> int:
    pins: dict[str, str] = {}
    for architecture in ARCHITECTURES:
        with tempfile.TemporaryDirectory() as tmp:
            for name, version in image_wheels(architecture, Path(tmp), constrained=False).items():
                if pins.setdefault(name, version) != version:
                    raise SystemExit(f"{name}: {pins[name]} on one architecture, {version} on another")
    CONSTRAINTS.write_text(CONSTRAINTS_HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    print(f"wrote {len(pins)} pins to {CONSTRAINTS.relative_to(ROOT)}")
    return 0


def main() -> int:
    if "--refresh" in sys.argv[1:]:
        return refresh_constraints()
    sys.path.insert(0, str(ROOT))
    wheels_ok = check_platform_wheels()
    if "--dev-python" in sys.argv[1:]:
        wheels_ok &= check_development_environment(Path(sys.argv[sys.argv.index("--dev-python") + 1]))
    from infra.cfn import entry_points, load_template

    targets = entry_points(load_template(ROOT / "template.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        venv, task_root = Path(tmp) / "venv", Path(tmp) / "task"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir",
             "-r", str(RUNTIME), "-c", str(CONSTRAINTS)],
            check=True,
        )  # fmt: skip
        shutil.copytree(ROOT / "handler", task_root / "handler", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "models", task_root / "models", ignore=shutil.ignore_patterns("model.keras", "*.png"))
        env = {
            "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
            "POWERTOOLS_SERVICE_NAME": "image-check",
            "POWERTOOLS_METRICS_NAMESPACE": "ImageCheck",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MODEL_CACHE_DIR": str(Path(tmp) / "cache"),
        }
        out = subprocess.run(
            [str(python), "-c", PROBE, json.dumps(targets)], cwd=task_root, env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        report = json.loads(out.stdout.strip().splitlines()[-1])
        site = next((venv / "lib").glob("python3*/site-packages"))
        installed = size_mb(site)
        task = size_mb(task_root)
    print(f"entry points importable: {report['entry_points']}")
    print(f"bundled model loaded: {report['model']}; tensorflow installed: {report['tensorflow']}")
    print(f"runtime packages: {installed:.0f} MB, handler + model: {task:.1f} MB, total {installed + task:.0f} MB")
    reference = ROOT / ".venv" / "lib"
    tf_dirs = list(reference.glob("python3*/site-packages/tensorflow")) if reference.exists() else []
    if tf_dirs:
        print(f"for comparison, TensorFlow alone in the training venv: {size_mb(tf_dirs[0]):.0f} MB")
    ok = (
        wheels_ok and all(report["entry_points"].values()) and not report["tensorflow"] and installed + task < TARGET_MB
    )
    print(
        f"target < {TARGET_MB} MB, wheels for both architectures, development environment in step, all entry points, "
        f"no TensorFlow: {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
