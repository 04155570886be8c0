#!/usr/bin/env bash
# shrink vs PyTorch on all-MiniLM-L6-v2: sets up bench/.venv, builds the shrink-timing server, runs the
# interleaved comparison. Arguments go to compare_torch.py (e.g. --quick, --threads 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bench/setup-venv.sh
cargo build --release -p shrink-timing
exec bench/.venv/bin/python bench/compare_torch.py "$@"
