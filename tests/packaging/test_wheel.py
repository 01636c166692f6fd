"""``pip install haremq`` from a built wheel: a fresh venv gets a working ``haremq`` command and
``python -m haremq``, and every file of the package (dashboard assets, py.typed) is in the wheel."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend comes from the dev extras, so no download is needed
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300, cwd=out)
    (whl,) = out.glob("haremq-*.whl")
    return whl


def test_wheel_holds_every_file_of_the_package(wheel: pathlib.Path) -> None:
    src = ROOT / "src"
    want = {p.relative_to(src).as_posix() for p in (src / "haremq").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert want - names == set()
    assert "haremq/__main__.py" in names


def test_wheel_installs_into_a_fresh_venv_and_serves(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, bindir = venv / "bin" / "python", venv / "bin"
    # the dependencies come from this environment (offline); haremq itself only from the wheel
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (pathlib.Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(py), "-c", "import haremq; print(haremq.__file__)"], check=True,
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout.strip()
    assert where.startswith(purelib), where  # not the source tree
    helped = subprocess.run([str(py), "-m", "haremq", "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert helped.returncode == 0 and "serve" in helped.stdout
    proc = subprocess.Popen(
        [str(bindir / "haremq"), "serve", "--amqp-port", "0", "--stomp-port", "0", "--sqs-port", "0",
         "--management-port", "0", "--data-dir", str(tmp_path / "data"), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready: amqp://" in line, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    finally:
        proc.terminate()
        proc.wait(15)
