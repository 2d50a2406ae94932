""".ci/deps, which `make test` and `.ci/run` run first: on a machine without redis-server or
nginx it installs them as root and otherwise prints the one command to run.

This machine has them all, so each test runs the real script (and the real make) with a PATH
of its own: links to the real tools the case has, and stand-ins for ``id`` (the uid the case
runs as) and ``apt-get`` (which records its arguments instead of installing anything).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEPS = ROOT / ".ci" / "deps"
PRESENT = ("bash", "dirname", "python3", "make", "openssl", "npm", "redis-server", "nginx",
           "tinyproxy")
INSTALL = "apt-get update && apt-get install -y --no-install-recommends redis-server nginx"


def real(tool: str) -> str:
    if tool == "python3":  # the interpreter itself, not a launcher (pyenv's shims need pyenv)
        return os.path.realpath(sys.executable)
    found = shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert found, f"{tool} is needed to run this test"
    return found


class Machine:
    """A PATH with some of the tools, as root or not, with or without apt-get."""

    def __init__(self, directory: Path, tools=PRESENT, uid: int = 0, apt: bool = True) -> None:
        self.bin = directory / "bin"
        self.bin.mkdir()
        self.apt_log = directory / "apt.log"
        for tool in tools:
            (self.bin / tool).symlink_to(real(tool))
        self.stand_in("id", f'echo {uid}')
        if apt:
            self.stand_in("apt-get", f'echo "$*" >> {self.apt_log}')

    def stand_in(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def run(self, *command: str, **env: str) -> subprocess.CompletedProcess:
        # DEPS_SBIN='': /usr/sbin is left out of the search, where this machine has nginx
        env = {"PATH": str(self.bin), "DEPS_SBIN": "", "HOME": os.environ.get("HOME", "/"),
               **env}
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)

    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


def without(*tools: str) -> tuple[str, ...]:
    return tuple(tool for tool in PRESENT if tool not in tools)


def test_nothing_missing_installs_nothing_and_says_nothing(tmp_path):
    machine = Machine(tmp_path)
    done = machine.run(str(DEPS))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert machine.apt_calls() == []


def test_as_root_the_missing_servers_are_installed_with_apt_get(tmp_path):
    machine = Machine(tmp_path, without("redis-server", "nginx"))
    done = machine.run(str(DEPS))
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == [
        "update -qq", "install -y -qq --no-install-recommends redis-server nginx"]
    assert done.stderr == ".ci/deps: installing redis-server nginx\n"


@pytest.mark.parametrize("present", [False, True])
def test_the_installed_servers_are_not_started_as_services(tmp_path, present):
    """A policy-rc.d refusing service starts stands while apt-get installs (the tests start
    their own redis-server and nginx): written and removed again, or left as it was."""
    policy = tmp_path / "policy-rc.d"
    if present:
        policy.write_text("#!/bin/sh\nexit 101\n")
    machine = Machine(tmp_path, (*without("redis-server", "nginx"), "chmod", "rm", "sh"))
    machine.stand_in("apt-get", f'echo "$* $(sh {policy}; echo $?)" >> {machine.apt_log}')
    done = machine.run(str(DEPS), DEPS_POLICY_RC=str(policy))
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == [
        "update -qq 101", "install -y -qq --no-install-recommends redis-server nginx 101"]
    assert policy.exists() == present


def test_not_root_prints_the_one_command_to_run_and_fails(tmp_path):
    machine = Machine(tmp_path, without("redis-server", "nginx"), uid=1000)
    done = machine.run(str(DEPS))
    assert done.returncode == 1
    assert machine.apt_calls() == []
    assert done.stderr.splitlines() == [
        ".ci/deps: the tests need redis-server nginx, which are not installed. Install them with:",
        f"    sudo sh -c '{INSTALL}'",
        "then run make test again."]


def test_dry_run_prints_the_install_and_runs_nothing(tmp_path):
    machine = Machine(tmp_path, without("redis-server", "nginx"))
    done = machine.run(str(DEPS), "--dry-run")
    assert (done.returncode, done.stdout) == (0, INSTALL + "\n")
    assert machine.apt_calls() == []


def test_every_tool_the_suite_needs_is_checked(tmp_path):
    machine = Machine(tmp_path, ("bash", "dirname", "python3"))
    done = machine.run(str(DEPS), "--dry-run")
    assert done.stdout == ("apt-get update && apt-get install -y --no-install-recommends "
                           "make openssl npm redis-server nginx tinyproxy\n")


def test_a_python_older_than_3_10_is_named_with_the_fix(tmp_path):
    machine = Machine(tmp_path, without("python3"))
    # Debian 11's python3: the version check fails, --version says which it is
    machine.stand_in("python3", '[ "$1" = --version ] && echo "Python 3.9.2"; exit 1')
    done = machine.run(str(DEPS))
    assert done.returncode == 1
    assert done.stderr == (".ci/deps: python3 is Python 3.9.2; the project needs Python 3.10 "
                           "or later: run make with PYTHON=python3.X naming one\n")


def test_a_python_without_ensurepip_needs_the_venv_package_until_the_venv_exists(tmp_path):
    machine = Machine(tmp_path, without("python3"))
    # Debian's python3 without python3-venv: every import works but ensurepip's
    machine.stand_in("python3", 'case "$2" in *ensurepip*) exit 1;; esac; exit 0')
    done = machine.run(str(DEPS), "--dry-run", VENV=str(tmp_path / "no-venv"))
    assert done.stdout == ("apt-get update && apt-get install -y --no-install-recommends "
                           "python3-venv\n")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(real("python3"))
    done = machine.run(str(DEPS), "--dry-run", VENV=str(tmp_path / "venv"))
    assert (done.returncode, done.stdout) == (0, "")


def test_without_apt_get_the_packages_are_named(tmp_path):
    machine = Machine(tmp_path, without("npm"), apt=False)
    done = machine.run(str(DEPS))
    assert done.returncode == 1
    assert "the tests need these, which are not installed: npm" in done.stderr


def test_an_unknown_argument_is_refused(tmp_path):
    done = Machine(tmp_path).run(str(DEPS), "--dryrun")
    assert done.returncode == 2
    assert done.stderr == ".ci/deps: unknown argument '--dryrun' (the only one is --dry-run)\n"


@pytest.mark.parametrize("target", ["test", "deps"])
def test_make_test_stops_at_the_missing_servers_before_any_test_runs(tmp_path, target):
    machine = Machine(tmp_path, without("redis-server", "nginx"), uid=1000)
    # were the check skipped, this would only collect one small file
    done = machine.run("make", target, "PYTEST_ARGS=--collect-only tests/test_jsonrpc.py")
    assert done.returncode != 0
    assert f"    sudo sh -c '{INSTALL}'" in done.stderr.splitlines()
    assert "collected" not in done.stdout


def test_ci_run_installs_before_it_runs_make_test():
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines.index(".ci/deps") < lines.index("make test") == len(lines) - 1
