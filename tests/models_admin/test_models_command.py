"""`manage.py models` for a terminal: search, files, download with a progress bar (Ctrl-C
cancels, the same command resumes), list, rm and scan."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from models_admin.downloads import download_start
from models_admin.fit import gib
from models_admin.loading import model_memory_estimate
from models_admin.local_models import localmodel_scan
from models_admin.management.commands import models as models_command
from models_admin.models import Download, LocalModel
from tests.hub_server import FakeHub
from tests.models_admin.conftest import SMOL_FILE, SMOL_REPO, TINY_FILE, TINY_REPO
from tests.processes import MANAGE, ROOT, child_env, wait_for
from wizweb.default_model import file_sha256

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_downloads")]

MB = 1 << 20


def models(*args: str) -> str:
    out = StringIO()
    call_command("models", *args, stdout=out)
    return out.getvalue()


def test_search_lists_repos_with_their_downloads(hub: FakeHub) -> None:
    lines = models("search", "wiz-test").splitlines()
    assert lines[0].split() == [SMOL_REPO, "500", "downloads"]
    assert lines[2].endswith("gated")
    assert models("search", "zzz") == "No repo with GGUF files matches 'zzz'.\n"


def test_files_shows_sizes_quantisation_and_fit(hub: FakeHub, default_model: Any) -> None:
    out = models("files", SMOL_REPO)
    assert "free on the models disk" in out
    need = gib(model_memory_estimate(default_model, 8192))
    assert f"{SMOL_FILE}  0.09 GB  Q4_1  disk ok; needs {need} loaded at 8192 tokens" in out


def test_download_shows_a_progress_bar_and_registers_the_model(
    hub: FakeHub, default_model: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.throttle_bytes_per_s = 2 * MB  # four megabytes: a few moves of the bar
    out = models("download", TINY_REPO, TINY_FILE)
    assert out == f"Downloaded and verified {TINY_REPO}/{TINY_FILE}: model 'tiny-F32'.\n"
    bar = capsys.readouterr().err
    assert "tiny-F32.gguf:" in bar
    assert "100%" in bar and "4.00M/4.00M" in bar
    assert bar.count("\r") >= 3  # it moved
    assert LocalModel.objects.get(name="tiny-F32").repo_id == TINY_REPO
    listed = models("list")
    assert "tiny-F32" in listed and "F32" in listed and "ctx 2048" in listed


def test_a_refused_download_is_one_clear_line(hub: FakeHub) -> None:
    with pytest.raises(CommandError, match=r"^README.md is not a GGUF file"):
        models("download", TINY_REPO, "README.md")
    with pytest.raises(CommandError, match="is not a file name inside a repo"):
        models("download", TINY_REPO, "../../escape.gguf")


def test_ctrl_c_cancels_and_the_same_command_resumes(
    hub: FakeHub, default_model: Any, tiny_gguf: Path
) -> None:
    hub.throttle_bytes_per_s = MB
    command = [sys.executable, MANAGE, "models", "download", TINY_REPO, TINY_FILE]
    first = subprocess.Popen(
        command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_for(
        lambda: hub.served_bytes(TINY_REPO, TINY_FILE) > MB,
        timeout=30,
        what="the transfer to be under way",
    )
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=10)
    assert first.returncode == 1
    assert "bytes are kept. Run the same command to resume." in err.decode()
    cancelled = Download.objects.get()
    assert cancelled.state == "cancelled"
    kept = cancelled.part_path.stat().st_size
    assert 0 < kept < cancelled.total_bytes

    hub.throttle_bytes_per_s = 0
    served_before = hub.served_bytes(TINY_REPO, TINY_FILE)
    again = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert hub.served_bytes(TINY_REPO, TINY_FILE) - served_before == cancelled.total_bytes - kept
    resumed = Download.objects.exclude(pk=cancelled.pk).get()
    assert resumed.resumed_from_bytes == kept
    assert resumed.local_model is not None
    assert resumed.local_model.sha256 == file_sha256(tiny_gguf)


def test_rm_deletes_a_model_by_name_or_id(hub: FakeHub, second_model: Any) -> None:
    path = second_model.path
    with pytest.raises(CommandError, match="Add --yes"):
        models("rm", second_model.name)
    assert models("rm", str(second_model.pk), "--yes") == f"Deleted {second_model.name}.\n"
    assert not path.exists()
    with pytest.raises(CommandError, match="There is no model 'nobody'"):
        models("rm", "nobody", "--yes")


def test_scan_registers_files_put_there_by_hand(default_model: Any, tiny_gguf: Path) -> None:
    localmodel_scan()  # what other tests left in the shared models dir
    folder = Path(settings.MODELS_DIR) / "wiz-test"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(tiny_gguf, folder / "by-hand.gguf")
    assert models("scan") == "Registered wiz-test/by-hand.gguf as 'Tiny Test'.\n"
    assert models("scan") == "Nothing new in the models dir.\n"


def test_download_follows_the_download_the_worker_is_running(
    hub: FakeHub, default_model: Any, download_worker: Any
) -> None:
    hub.throttle_bytes_per_s = 2 * MB
    download, _ = download_start(repo_id=TINY_REPO, filename=TINY_FILE)
    out = models("download", TINY_REPO, TINY_FILE)
    assert out.startswith(f"Already being downloaded (download {download.pk}); following it.\n")
    assert out.endswith(f"Downloaded and verified {TINY_REPO}/{TINY_FILE}: model 'tiny-F32'.\n")
    assert Download.objects.count() == 1


def test_download_stops_following_a_download_nobody_fetches(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_command, "FOLLOW_PATIENCE", 1)
    download, _ = download_start(repo_id=TINY_REPO, filename=TINY_FILE)  # no worker runs
    with pytest.raises(CommandError, match=f"Nobody has fetched download {download.pk} for 1 s"):
        models("download", TINY_REPO, TINY_FILE)
