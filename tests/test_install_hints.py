"""The distribution's name and version, and every install hint the project prints or documents.

``mcp-proxy`` on PyPI is another project (0.13): a hint that names it installs that project,
and ``pip install -U mcp-proxy`` would replace this one with it. This project is installed
from its clone under its own name; its command is still ``mcp-proxy``.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import mcp_proxy

ROOT = Path(__file__).parents[1]
DIST = "mcp-proxy-gevent"
# An installer command whose arguments name the other project (mcp-proxy, mcp_proxy, with or
# without extras or a version), up to the end of its code span, comment or command.
OTHER_PROJECT = re.compile(
    r"(?:\bpip3?\s+(?:install|uninstall|download)|\bpipx\s+(?:install|uninstall|run|upgrade|"
    r"reinstall|inject)|\buv\s+tool\s+(?:install|uninstall|run|upgrade)|\buv\s+pip\s+"
    r"(?:install|uninstall)|\buv\s+add|\buvx)\b[^`#\n;|&)\"]*?(?<![\w./@-])mcp[-_.]proxy"
    r"(?![\w-])", re.IGNORECASE)
# Where the project tells people how to install it. bench/ is left out on purpose: it installs
# the other project, pinned, as a peer to measure against (bench/peers.py).
HINTED = ("README.md", "docs/**/*.md", "mcp_proxy/**/*.py", "tests/*.py", "Dockerfile",
          "Makefile", "compose.yaml", "deploy/*", ".ci/*", "mkdocs.yml")


def hinted_files() -> list[Path]:
    files = {path for pattern in HINTED for path in ROOT.glob(pattern) if path.is_file()}
    return sorted(files - {Path(__file__)})


@pytest.mark.parametrize("text", [
    "pip install 'mcp-proxy[keys]'", "pip install -U mcp-proxy", "pip3 install mcp_proxy==0.1",
    "uv tool install mcp-proxy", "pipx install mcp-proxy", "uvx mcp-proxy --port 8080",
    "uv tool uninstall mcp-proxy", "pip uninstall mcp-proxy", "uv pip install MCP-Proxy>=0.1",
    "pipx inject mcp-proxy 'PyJWT[crypto]'"])
def test_the_pattern_finds_a_hint_for_the_other_project(text):
    assert OTHER_PROJECT.search(text)


@pytest.mark.parametrize("text", [
    "pip install '.[keys]'", f"pip install -U {DIST}", f"uv tool uninstall {DIST}",
    "uv tool install . # the mcp-proxy command", "pip install . `mcp-proxy --help`",
    "uvx mcp-server-fetch", "docker build -t mcp-proxy .", "python -m mcp_proxy",
    f"pipx install --force '.[gunicorn]'; pipx uninstall {DIST}"])
def test_the_pattern_leaves_this_projects_hints_alone(text):
    assert not OTHER_PROJECT.search(text)


def test_no_install_hint_names_the_other_project():
    files = hinted_files()
    assert len(files) > 50 and ROOT / "mcp_proxy" / "upstream" / "oauth" / "wire.py" in files
    found = [f"{path.relative_to(ROOT)}: {match.group(0)}" for path in files
             for match in OTHER_PROJECT.finditer(path.read_text(errors="replace"))]
    assert found == []


def test_the_documentation_uninstalls_this_project_by_its_own_name():
    docs = "\n".join(path.read_text() for path in hinted_files() if path.suffix == ".md")
    for command in ("uv tool uninstall", "pipx uninstall", "pip uninstall"):
        assert f"{command} {DIST}" in docs


def test_the_distribution_has_its_own_name_and_a_calendar_version():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["name"] == DIST
    assert metadata.version(DIST) == mcp_proxy.__version__  # installed under that name
    year, month, release = (int(part) for part in mcp_proxy.__version__.split("."))
    assert year >= 2026 and 1 <= month <= 12 and release >= 0
    [script] = [entry for entry in metadata.entry_points(group="console_scripts")
                if entry.dist.name == DIST]
    assert (script.name, script.value) == ("mcp-proxy", "mcp_proxy.cli:main")


def test_version_flag_prints_the_calendar_version():
    done = subprocess.run([sys.executable, "-m", "mcp_proxy", "--version"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, f"mcp-proxy {mcp_proxy.__version__}\n")


def test_client_key_without_pyjwt_names_the_extra_as_this_project_installs_it(tmp_path):
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)],
                   check=True, capture_output=True, timeout=30)
    # PyJWT missing: an import of jwt fails as it would in an install without the extra
    program = ("import sys; sys.modules['jwt'] = None; from mcp_proxy.cli import main; "
               "sys.exit(main())")
    done = subprocess.run(
        [sys.executable, "-c", program, "--client-id", "svc", "--client-key", str(key),
         "--token-url", "http://127.0.0.1:9/token", "http://127.0.0.1:9/sse"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "ERROR mcp_proxy: --client-key needs PyJWT and cryptography, the 'keys' extra: in the "
        "clone, uv tool install --reinstall '.[keys]' (or pipx install --force '.[keys]', or "
        "pip install '.[keys]')"), done.stderr
