#!/usr/bin/env bash
# Benchmark commands on another revision and on this working tree, alternately, in one run
# (so that the machine's load hits both alike): the before/after figures of a change.
#
#   benchmarks/compare_revisions.sh REV ROUNDS 'bench_io.py --iterations 2000' ...
#
# Each argument is a benchmark command line relative to benchmarks/; one written
# 'OLD || NEW' runs OLD on REV and NEW here (a script renamed since REV). REV is checked
# out into a temporary git worktree with its own safety kernel built, run with its own
# code first on the path; a benchmark script REV does not have is copied in from this tree
# (it then measures REV's code); the worktree is removed at the end.
set -euo pipefail
rev=$1; rounds=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
wt="$(mktemp -d)/rev"
git -C "$root" worktree add -q --detach "$wt" "$rev"
trap 'git -C "$root" worktree remove --force "$wt"' EXIT
(cd "$wt" && "$py" setup.py -q build_ext --inplace >/dev/null 2>&1)
for cmd in "$@"; do
  old=${cmd%% || *}; new=${cmd##* || }
  for r in $(seq "$rounds"); do
    script=${old%% *}
    if [ ! -e "$wt/benchmarks/$script" ]; then  # a benchmark newer than REV: this tree's copy, REV's code
      if [ ! -d "$wt/edgewarden" ]; then  # REV's code is top-level gateway/...: the copy would import this tree's
        echo "compare_revisions: $rev predates the edgewarden/ package; give its own script as 'OLD || NEW'" >&2
        exit 2
      fi
      cp "$root/benchmarks/$script" "$root/benchmarks/_common.py" "$wt/benchmarks/"
    fi
    echo "### $rev: $old (round $r)"
    (cd "$wt" && PYTHONPATH="$wt" $py benchmarks/$old)
    echo "### working tree: $new (round $r)"
    (cd "$root" && $py benchmarks/$new)
  done
done
