"""The local runner's warm fork server: children behave like fresh interpreters (env, argv, log,
exit code, own process group), termination and shutdown leave no process behind, and the
runner falls back to a fresh interpreter when the zygote cannot serve."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from overcast.localcloud.forkserver import ORPHANED, ForkedProcess, ForkServer
from overcast.localcloud.launcher import ForkServerLauncher
from tests.e2e.helpers import wait

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SLEEPER = "import time; print('up', flush=True); time.sleep(600)"
# Ignores SIGTERM, so only SIGKILL stops it (a hung agent).
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(600)")


def gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def server():
    fs = ForkServer({**os.environ, "ZYGOTE_ONLY": "1"})
    try:
        assert fs.ready(90), "the zygote did not finish its imports"
        yield fs
    finally:
        fs.stop()
    assert fs.proc.returncode is not None


def spawn(fs: ForkServer, tmp_path: Path, code: str, env: dict[str, str] | None = None,
          *args: str) -> tuple[ForkedProcess, Path]:
    log = tmp_path / f"child-{time.monotonic_ns()}.log"
    with open(log, "ab") as f:  # the child has its own copy of the fd
        proc = fs.spawn([sys.executable, "-c", code, *args], env or {"PATH": "/bin"}, f)
    return proc, log


def test_child_is_a_fresh_interpreter_lookalike(server, tmp_path):
    code = ("import json, os, sys, threading, distributed, numpy\n"
            "blas = float((numpy.ones((300, 300)) @ numpy.ones((300, 300))).sum())\n"
            "print(json.dumps({'argv': sys.argv, 'env': dict(os.environ), 'blas': blas,"
            " 'main': sys.modules['__main__'].__dict__.get('blas'),"
            " 'pgid': os.getpgid(0), 'pid': os.getpid(), 'stdin': sys.stdin.read(),"
            " 'threads': threading.active_count()}))\n"
            "print('to stderr', file=sys.stderr)\n"
            "sys.exit(3)")
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0", "OVERCAST_INSTANCE_ID": "i-1"}
    proc, log = spawn(server, tmp_path, code, env, "a1", "a2")
    assert proc.wait(20) == 3 and proc.returncode == 3 and proc.poll() == 3
    lines = log.read_text().splitlines()
    seen = json.loads(lines[0])
    assert seen["argv"] == ["-c", "a1", "a2"]
    assert seen["env"] == env  # replaced: nothing of the zygote's own environment
    assert seen["pgid"] == seen["pid"] == proc.pid  # own process group, for killpg
    assert seen["stdin"] == "" and seen["threads"] == 1
    assert seen["blas"] == seen["main"] == 300.0**3  # OpenBLAS works after fork; own __main__
    assert lines[1] == "to stderr"


@pytest.mark.parametrize(("code", "expected", "printed"), [
    ("raise RuntimeError('boom')", 1, "RuntimeError: boom"),
    ("import sys; sys.exit('bye')", 1, "bye"),
    ("pass", 0, ""),
])
def test_exit_codes(server, tmp_path, code, expected, printed):
    proc, log = spawn(server, tmp_path, code)
    assert proc.wait(20) == expected
    assert printed in log.read_text()


def test_dask_config_follows_the_child_env(server, tmp_path):
    code = ("import dask, distributed\n"
            "print(dask.config.get('distributed.comm.timeouts.connect'))")
    proc, log = spawn(server, tmp_path, code, {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "7s"})
    assert proc.wait(20) == 0 and log.read_text().strip() == "7s"


def test_real_agent_without_imds_exits_2(server, tmp_path):
    """`-m overcast.agent` runs the agent's __main__ in the child (preloaded modules)."""
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        do_PUT = do_GET

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        log = tmp_path / "agent.log"
        env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{httpd.server_port}/i-x"}
        with open(log, "ab") as f:
            proc = server.spawn([sys.executable, "-m", "overcast.agent"], env, f)
        assert proc.wait(30) == 2
        assert "cannot read this VM's overcast boot config" in log.read_text()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_killpg_reaches_the_child(server, tmp_path):
    proc, log = spawn(server, tmp_path, SLEEPER)
    wait(lambda: "up" in log.read_text(), 20, "child up")
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == -signal.SIGTERM
    assert gone(proc.pid)


def test_zygote_stop_terminates_then_kills_children(tmp_path):
    fs = ForkServer()
    try:
        assert fs.ready(90)
        polite, polite_log = spawn(fs, tmp_path, SLEEPER)
        stubborn, stubborn_log = spawn(fs, tmp_path, STUBBORN)
        wait(lambda: "up" in polite_log.read_text() and "up" in stubborn_log.read_text(), 20,
             "children up")
    finally:
        fs.stop()
    assert fs.proc.returncode == 0
    assert polite.wait(1) == -signal.SIGTERM and stubborn.wait(1) == -signal.SIGKILL
    assert gone(polite.pid) and gone(stubborn.pid)
    assert not os.path.exists(fs.path)


def test_children_follow_a_killed_zygote(tmp_path):
    fs = ForkServer()
    try:
        assert fs.ready(90)
        proc, log = spawn(fs, tmp_path, SLEEPER)
        wait(lambda: "up" in log.read_text(), 20, "child up")
        fs.proc.kill()  # no chance to clean up: PR_SET_PDEATHSIG must do it
        assert proc.wait(10) == ORPHANED
        wait(lambda: gone(proc.pid), 10, "child gone")
    finally:
        fs.stop()


def test_launcher_falls_back_to_a_fresh_interpreter(tmp_path):
    launcher = ForkServerLauncher(dict(os.environ))
    try:
        assert launcher.wait_ready(90)
        with open(tmp_path / "a.log", "ab") as f:
            forked = launcher.launch([sys.executable, "-c", "pass"], {}, f)
            other = launcher.launch(["/bin/sh", "-c", "exit 4"], {}, f)  # not a python -m/-c
        assert isinstance(forked, ForkedProcess) and forked.wait(20) == 0
        assert isinstance(other, subprocess.Popen) and other.wait(20) == 4
        launcher.server.proc.kill()  # the zygote dies: later instances still start
        launcher.server.proc.wait(10)
        with open(tmp_path / "b.log", "ab") as f:
            after = launcher.launch([sys.executable, "-c", "raise SystemExit(5)"], {}, f)
        assert isinstance(after, subprocess.Popen) and after.wait(30) == 5
    finally:
        launcher.close()


def test_local_cloud_shutdown_leaves_no_process(tmp_path, monkeypatch):
    """Instances forked, GPU env passed, then the local cloud stops: instances and zygote gone."""
    from overcast.localcloud.main import LocalCloud
    from tests.e2e import test_localcloud as lc_tests

    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    out.mkdir()
    cloud = LocalCloud(port=0, imds_port=0, write_state=False,
                       agent_command=[sys.executable, "-c", lc_tests.AGENT, str(out)])
    try:
        launcher = cloud.runner.launcher
        assert isinstance(launcher, ForkServerLauncher) and launcher.wait_ready(90)
        cloud.runner._host_gpus = 1  # pretend the host has one GPU
        cpu = lc_tests.launch(cloud, {"overcast": 1})  # also creates the instance profile
        ec2 = lc_tests.client(cloud, "ec2")
        image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["overcast-agent-*"]}])
        gpu = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1,
                                InstanceType="g4dn.xlarge", UserData='{"overcast": 1}',
                                IamInstanceProfile={"Name": "acme"},
                                TagSpecifications=lc_tests.TAGS)["Instances"][0]["InstanceId"]
        reports = {}
        for iid in (gpu, cpu):
            path = out / f"{iid}.json"
            reports[iid] = json.loads(wait(lambda p=path: p.exists() and p.read_text(), 30,
                                           "agent report"))
        assert reports[gpu]["cuda"] == "0" and reports[cpu]["cuda"] == ""
        procs = [cloud.runner.booted[i].proc for i in (gpu, cpu)]
        assert all(isinstance(p, ForkedProcess) and p.poll() is None for p in procs)
        zygote = launcher.server.proc
    finally:
        cloud.stop()
    assert zygote.poll() is not None
    assert all(p.poll() == -signal.SIGTERM and gone(p.pid) for p in procs)


def test_killed_runner_takes_zygote_and_children_along(tmp_path):
    """kill -9 of the local cloud's process: the zygote gets SIGTERM (PR_SET_PDEATHSIG) and
    stops its children, so no VM process outlives the local cloud."""
    script = ("import sys, time\n"
              "from overcast.localcloud.forkserver import ForkServer\n"
              "fs = ForkServer()\n"
              "assert fs.ready(90)\n"
              "p = fs.spawn([sys.executable, '-c', 'import time; time.sleep(600)'], {},"
              " open(sys.argv[1], 'ab'))\n"
              "print(fs.proc.pid, p.pid, fs.path, flush=True)\n"
              "time.sleep(600)\n")
    runner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c.log")],
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        zygote, child, socket_path = runner.stdout.readline().decode().split()
        zygote, child = int(zygote), int(child)
        runner.kill()
        runner.wait(10)
        wait(lambda: gone(child) and gone(zygote), 15, "zygote and child gone")
        assert not os.path.exists(os.path.dirname(socket_path))
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(10)
        runner.stdout.close()
