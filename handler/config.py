"""Service settings: read from the environment once, validated at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_POINTER = "DEFAULT"
MB = 1024 * 1024
RUNTIME_MB = 400  # interpreter, NumPy, LiteRT, the model, boto3 and thread buffers (benchmarks/limits.py)
DECODE_BYTES_PER_PIXEL = 8  # peak while decoding the worst case, a 16-bit RGBA PNG (benchmarks/limits.py)
LAMBDA_MB_PER_VCPU = 1769  # Lambda gives one vCPU per 1,769 MB of memory


def usable_cpus(memory_mb: int | None) -> int:
    """vCPUs this process may really use: the affinity mask, and on Lambda the share its memory buys."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if memory_mb:
        cpus = min(cpus, max(1, memory_mb // LAMBDA_MB_PER_VCPU))
    return max(1, cpus)


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message names the variable."""


def bundled_model_uri(models_dir: Path = BUNDLED_MODELS) -> str:
    """The version named in ``models/DEFAULT``: what runs when MODEL_URI is not set."""
    pointer = models_dir / DEFAULT_POINTER
    if not pointer.exists():
        raise ConfigError(f"MODEL_URI is not set and there is no bundled model ({pointer} is missing)")
    return str(models_dir / pointer.read_text().strip())


@dataclass(frozen=True)
class Settings:
    bucket: str = ""
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    error_prefix: str = "errors/"
    models_prefix: str = "models/"
    runs_prefix: str = "runs/"
    model_uri: str = ""
    model_cache_dir: Path = Path("/tmp/models")
    max_object_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    top_k: int = 5
    concurrency: int = 32  # S3 calls in flight: a chunk's fetches and the previous chunk's writes at once
    chunk_items: int = 16
    chunk_bytes: int = 64 * 1024 * 1024
    memory_mb: int | None = None  # the function's MemorySize (Lambda sets AWS_LAMBDA_FUNCTION_MEMORY_SIZE)
    workers: int = 0  # processes that decode and normalise; 0: one per usable vCPU
    allow: str | None = None  # answers only from these characters, for every input (x-amz-meta-allow per upload)
    bulk_output: str = "objects"  # bulk runs: one record object per input, or "jsonl": one object per batch
    xray_sdk: bool = False  # X-Ray subsegments via the SDK (costs cold start); Lambda's own tracing works without

    def __post_init__(self) -> None:
        prefixes = {
            "INPUT_PREFIX": self.input_prefix,
            "OUTPUT_PREFIX": self.output_prefix,
            "ERROR_PREFIX": self.error_prefix,
            "MODELS_PREFIX": self.models_prefix,
            "RUNS_PREFIX": self.runs_prefix,
        }
        for name, value in prefixes.items():
            if not value.endswith("/") or value.startswith("/") or value == "/":
                raise ConfigError(f"{name}={value!r}: a prefix is a folder such as 'input/' (no leading '/')")
            if any(char in value for char in "*?"):
                raise ConfigError(f"{name}={value!r}: '*' and '?' are IAM wildcards and cannot be in a prefix")
        for name, value in prefixes.items():
            for other, other_value in prefixes.items():
                if name != other and value.startswith(other_value):
                    raise ConfigError(
                        f"{name}={value!r} lies inside {other}={other_value!r}: prefixes must be disjoint,"
                        " or the function would trigger on its own writes"
                    )
        for name, number in (
            ("MAX_OBJECT_BYTES", self.max_object_bytes),
            ("MAX_PIXELS", self.max_pixels),
            ("TOP_K", self.top_k),
            ("CONCURRENCY", self.concurrency),
            ("CHUNK_ITEMS", self.chunk_items),
            ("CHUNK_BYTES", self.chunk_bytes),
        ):
            if number < 1:
                raise ConfigError(f"{name}={number}: must be a positive integer")
        if self.bulk_output not in ("objects", "jsonl"):
            raise ConfigError(f"BULK_OUTPUT={self.bulk_output!r}: 'objects' or 'jsonl'")
        if self.workers < 0:
            raise ConfigError(f"WORKERS={self.workers}: 0 (one per vCPU) or a positive number")
        if self.memory_mb is not None and self.memory_mb < self.memory_needed_mb:
            raise ConfigError(
                f"MemorySize {self.memory_mb} MB is below the {self.memory_needed_mb} MB the limits need"
                f" (MAX_PIXELS={self.max_pixels:,}, MAX_OBJECT_BYTES={self.max_object_bytes:,},"
                f" CHUNK_BYTES={self.chunk_bytes:,}): raise MemorySize or lower the limits"
            )
        if self.model_uri and not self.model_uri.startswith("s3://") and not Path(self.model_uri).is_dir():
            raise ConfigError(f"MODEL_URI={self.model_uri!r}: neither s3://... nor an existing folder")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "")
            try:
                return int(raw) if raw else default
            except ValueError:
                raise ConfigError(f"{name}={raw!r}: expected an integer") from None

        defaults = cls.__dataclass_fields__
        return cls(
            bucket=env.get("BUCKET", ""),
            input_prefix=env.get("INPUT_PREFIX", defaults["input_prefix"].default),
            output_prefix=env.get("OUTPUT_PREFIX", defaults["output_prefix"].default),
            error_prefix=env.get("ERROR_PREFIX", defaults["error_prefix"].default),
            models_prefix=env.get("MODELS_PREFIX", defaults["models_prefix"].default),
            runs_prefix=env.get("RUNS_PREFIX", defaults["runs_prefix"].default),
            model_uri=env.get("MODEL_URI", ""),
            model_cache_dir=Path(env.get("MODEL_CACHE_DIR", "/tmp/models")),
            max_object_bytes=integer("MAX_OBJECT_BYTES", defaults["max_object_bytes"].default),
            max_pixels=integer("MAX_PIXELS", defaults["max_pixels"].default),
            top_k=integer("TOP_K", defaults["top_k"].default),
            concurrency=integer("CONCURRENCY", defaults["concurrency"].default),
            chunk_items=integer("CHUNK_ITEMS", defaults["chunk_items"].default),
            chunk_bytes=integer("CHUNK_BYTES", defaults["chunk_bytes"].default),
            memory_mb=integer("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0) or None,
            workers=integer("WORKERS", 0),
            xray_sdk=env.get("XRAY_SDK", "").lower() in ("1", "true", "yes"),
            bulk_output=env.get("BULK_OUTPUT", "objects") or "objects",
            allow=env.get("ALLOW") or None,
        )

    @property
    def memory_needed_mb(self) -> int:
        """The most one invocation can hold: the runtime, two chunks of bodies (one read, the next fetched
        meanwhile), and one worst-case decode per process."""
        held = 2 * self.chunk_bytes + self.cpu_workers * (
            self.max_object_bytes + self.max_pixels * DECODE_BYTES_PER_PIXEL
        )
        return RUNTIME_MB + -(-held // MB)

    @property
    def cpu_workers(self) -> int:
        """Processes decoding at once (the caller included): WORKERS, or every vCPU the memory buys."""
        return self.workers or usable_cpus(self.memory_mb)

    @property
    def resolved_model_uri(self) -> str:
        return self.model_uri or bundled_model_uri()
