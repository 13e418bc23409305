"""Check what the Lambda image installs, without Docker: the runtime requirements go into a clean
virtualenv, the image's file layout is copied beside it (handler/ + models/, as the Dockerfile
does), every entry point named in template.yaml is imported, the bundled model is loaded, and
the installed size is printed. TensorFlow must not be installed.

Run: python3 infra/check_image_requirements.py   (target: under 300 MB)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 300
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


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from infra.cfn import entry_points, load_template

    targets = entry_points(load_template(ROOT / "template.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        venv, task_root = Path(tmp) / "venv", Path(tmp) / "task"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir",
             "-r", str(ROOT / "requirements" / "runtime.txt")],
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
    ok = all(report["entry_points"].values()) and not report["tensorflow"] and installed + task < TARGET_MB
    print(f"target < {TARGET_MB} MB, all entry points, no TensorFlow: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
