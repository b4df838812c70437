#!/bin/bash
# Two checkouts of this project on the same micro configuration (tests/e2e/conftest.py's MICRO):
# do they train the same models? Used to check that a refactor changed no result.
#   experiments/micro_identity.sh OLD_CHECKOUT NEW_CHECKOUT [dvc repro targets of NEW...]
# Writes /tmp/ident-{old,new}; prints each run's seconds and the sha256 diff of every model's weights.
set -e
PY=${PY:-.venv/bin/python}; PY=$(realpath "$PY")
old=$(realpath "$1"); new=$(realpath "$2"); shift 2
targets=${*:-claims}
for which in old new; do
  src=$([ $which = old ] && echo "$old" || echo "$new")
  dest=/tmp/ident-$which; rm -rf "$dest"; mkdir -p "$dest"
  (cd "$src" && PYTHONPATH="$src:$src/src" "$PY" -c "
import sys; from pathlib import Path
import tests.e2e.conftest as e
e.make_micro_repo(Path('$dest'))")
  s=$(date +%s)
  t=$([ $which = old ] && echo claims || echo "$targets")
  (cd "$dest" && PATH="$(dirname "$PY"):$PATH" PYTHONPATH="$dest/src:$dest" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
     "$PY" -m dvc repro $t > "/tmp/ident-$which.log" 2>&1) || { echo "$which failed: /tmp/ident-$which.log"; exit 1; }
  echo "$which: dvc repro $t in $(( $(date +%s) - s )) s"
  (cd "$dest" && find models -name "*.safetensors" | sort | xargs sha256sum) > "/tmp/ident-$which.sha"
done
diff /tmp/ident-old.sha /tmp/ident-new.sha && echo "all $(wc -l < /tmp/ident-new.sha) model weight files identical"
