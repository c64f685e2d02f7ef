#!/usr/bin/python3
"""pip installs the package from its folder: into a venv made with --system-site-packages (so
Debian's python3-zmq, python3-msgpack and python3-pip are seen; --without-pip, which needs no
python3-venv), offline (--no-index --no-build-isolation: Debian's setuptools builds it), and the
installed copy imports from the venv.

Run: /usr/bin/python3 clients/python/tests/test_install.py --bin-dir build/bin
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import mesh

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # clients/python


def run(cmd, **kw):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300, **kw)
    if r.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout[-4000:]))
    return r.stdout


class InstallTest(unittest.TestCase):

    def test_pip_install_into_a_venv(self):
        tmp = tempfile.mkdtemp(prefix="bidmesh-pyinstall-")
        self.addCleanup(shutil.rmtree, tmp, True)
        # A copy: a build writes build/ and *.egg-info next to the sources.
        src = shutil.copytree(SOURCE, os.path.join(tmp, "src"),
                              ignore=shutil.ignore_patterns("__pycache__", "tests", "build", "*.egg-info"))
        venv = os.path.join(tmp, "venv")
        run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", "--without-pip", venv])
        python = os.path.join(venv, "bin", "python")
        run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation",
             "--disable-pip-version-check", "--quiet", src])
        out = run([python, "-c", "import bidmesh, zmq, msgpack; print(bidmesh.__file__); print(bidmesh.__version__)"],
                  cwd=tmp)
        path, version = out.split()
        self.assertTrue(path.startswith(venv + os.sep), path)
        self.assertEqual(version, "0.1.0")
        self.assertIn("Version: 0.1.0", run([python, "-m", "pip", "show", "bidmesh"]))


if __name__ == "__main__":
    mesh.main()
