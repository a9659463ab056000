"""synshot.fsio: atomic writes (mode, durability, no partial file), output locks, atomic publication."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from synshot import fsio
from synshot.cli import EXIT_USAGE

pytestmark = pytest.mark.faults


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_json_atomic_and_group_readable(tmp_path, umask022):
    p = fsio.write_json(tmp_path / "a" / "m.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert _mode(p) == 0o644  # not mkstemp's 0600
    assert [x.name for x in p.parent.iterdir()] == ["m.json"]  # no temp left behind


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o077)
    try:
        p = fsio.write_text(tmp_path / "t.txt", "hi")
    finally:
        os.umask(old)
    assert _mode(p) == 0o600
    assert fsio.current_umask() == old


def test_failed_write_keeps_old_content(tmp_path):
    p = fsio.write_bytes(tmp_path / "f.bin", b"old")
    with pytest.raises(RuntimeError):
        with fsio.atomic_open(p, "wb") as f:
            f.write(b"new-partial")
            raise RuntimeError("killed mid-write")
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_path_for_name_taking_writers(tmp_path, umask022):
    np = pytest.importorskip("numpy")
    target = tmp_path / "arr.npy"
    with fsio.atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2] and _mode(target) == 0o644


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        fsio.write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not (tmp_path / "n.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_no_permission_folder_is_a_user_error_non_root_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(fsio.OutputPathError, match="choose a writable output"):
            fsio.write_text(ro / "x.txt", "x")
        with pytest.raises(fsio.OutputPathError):
            fsio.ensure_dir(ro / "sub")
    finally:
        ro.chmod(0o755)


def test_file_where_folder_expected_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(fsio.OutputPathError, match="not a folder") as e:
        fsio.write_text(tmp_path / "file" / "x.txt", "x")
    assert e.value.exit_code == EXIT_USAGE


def test_lock_refuses_live_owner_and_names_it(tmp_path):
    # a real second process holds the lock
    code = ("import sys, time; from synshot import fsio; l = fsio.lock_dir(sys.argv[1], 'train').acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(fsio.OutputLockedError, match=rf"in use by train \(pid {proc.pid} on "):
            fsio.lock_dir(tmp_path, "invert").acquire()
    finally:
        proc.kill()
        proc.wait()
    # the owner died without releasing: its lock is stale and taken over
    with fsio.lock_dir(tmp_path, "invert") as lock:
        assert lock.owner()["pid"] == os.getpid()
    assert not (tmp_path / fsio.LOCK_NAME).exists()


def test_lock_on_other_host_is_refused_with_the_fix(tmp_path):
    (tmp_path / fsio.LOCK_NAME).write_text(json.dumps({"host": "node-x", "pid": 1, "purpose": "train"}))
    with pytest.raises(fsio.OutputLockedError, match=r"node-x.*delete .*\.synshot\.lock"):
        fsio.lock_dir(tmp_path).acquire()
    assert socket.gethostname() != "node-x"


def test_lock_reentrant_in_one_process(tmp_path):
    with fsio.lock_dir(tmp_path):
        with fsio.lock_dir(tmp_path):
            pass
        assert (tmp_path / fsio.LOCK_NAME).exists()
    assert not (tmp_path / fsio.LOCK_NAME).exists()


def test_publish_replaces_the_whole_set_and_keeps_previous(tmp_path, umask022):
    out = tmp_path / "out"
    with fsio.publish_dir(out) as stage:
        (stage / "a.txt").write_text("1")
        (stage / "b.txt").write_text("1")
    with fsio.publish_dir(out) as stage:
        (stage / "a.txt").write_text("2")  # fewer outputs this time
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # no stale b.txt beside the new set
    assert (out / "a.txt").read_text() == "2"
    prev = tmp_path / "out.previous"
    assert sorted(p.name for p in prev.iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.previous"]  # no staging/lock left


def test_failed_publish_leaves_previous_outputs(tmp_path):
    out = tmp_path / "out"
    with fsio.publish_dir(out) as stage:
        (stage / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with fsio.publish_dir(out) as stage:
            (stage / "a.txt").write_text("partial")
            raise RuntimeError("crash")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_without_previous(tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        with fsio.publish_dir(out, keep_previous=False) as stage:
            (stage / f"{i}.txt").write_text("x")
    assert [p.name for p in out.iterdir()] == ["1.txt"]
    assert not (tmp_path / "out.previous").exists()


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # > 2 MiB: several 1 MiB blocks
    (tmp_path / "f.bin").write_bytes(data)
    assert fsio.file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
