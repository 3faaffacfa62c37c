#!/usr/bin/env bash
# Build a venv with the Python plugin SDK + example plugins and run their unittest suite.
#
#   bash python/run-tests.sh [extra unittest args, e.g. -v or -k datadog]
#
# Env:
#   AIPERF_PY_VENV   venv directory (default: <repo>/target/py-venv); reused when present
#   AIPERF_PYTHON    interpreter that creates the venv (default: python3; needs >= 3.9)
#
# Packages are installed offline (--no-index --no-build-isolation) with the venv's own
# setuptools. Only when that setuptools cannot build PEP 621 wheels by itself (setuptools
# < 70.1 without the `wheel` package, e.g. the 65.5 that Python 3.11's venv ships) is a
# newer setuptools fetched from the package index, once; the venv keeps it. The same goes for
# kubernetes-validate (pinned), which the Kubernetes manifest tests run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AIPERF_PY_VENV:-$REPO_ROOT/target/py-venv}"
PYTHON="${AIPERF_PYTHON:-python3}"
SDK_DIR="$REPO_ROOT/python/aiperf-plugin-sdk"
PACKAGES=(
  "$SDK_DIR"
  "$REPO_ROOT/examples/plugins/datadog"
  "$REPO_ROOT/examples/plugins/custom_monitor"
  "$REPO_ROOT/examples/plugins/py_hook_log"
  "$REPO_ROOT/examples/plugins/python-slo-alarm"
  "$SDK_DIR/tests/fixtures/aiperf-sdk-test-plugins"
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "run-tests: creating venv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else "Python >= 3.9 required")'

export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VPY" - <<'PY'
import sys
try:
    import setuptools
except ImportError:
    sys.exit(1)
version = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
if version < (61, 0):
    sys.exit(1)
if version < (70, 1):
    try:
        import wheel  # noqa: F401  (older setuptools need it for bdist_wheel)
    except ImportError:
        sys.exit(1)
PY
then
  echo "run-tests: bootstrapping setuptools>=70.1 into the venv (one-time, needs the package index)" >&2
  "$VPY" -m pip install --quiet "setuptools>=70.1"
fi

# The generated Kubernetes manifests (aiperf kube manifest) are checked offline against the
# API's schema by kubernetes-validate (tests/it/kube.rs). It comes from the package index, once,
# pinned; the venv keeps it.
KUBE_VALIDATE="kubernetes-validate==1.34.1"
if ! "$VPY" -m pip show --quiet kubernetes-validate >/dev/null 2>&1; then
  echo "run-tests: installing $KUBE_VALIDATE into the venv (one-time, needs the package index)" >&2
  "$VPY" -m pip install --quiet "$KUBE_VALIDATE"
fi

# Build from a scratch copy so that setuptools' build/ and *.egg-info never land in the repo.
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/aiperf-py-stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
STAGED=()
for pkg in "${PACKAGES[@]}"; do
  dest="$STAGE/$(basename "$pkg")"
  "$VPY" - "$pkg" "$dest" <<'PY'
import shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2],
                ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests"))
PY
  STAGED+=("$dest")
done

"$VPY" -m pip install --quiet --no-index --no-build-isolation --no-deps --force-reinstall "${STAGED[@]}"

cd "$REPO_ROOT"
exec "$VPY" -m unittest discover -s "$SDK_DIR/tests" -t "$SDK_DIR/tests" "$@"
