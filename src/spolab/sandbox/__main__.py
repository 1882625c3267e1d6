"""``python -m spolab.sandbox``: say which isolation mode works on this machine, and why."""

import sys

from spolab.sandbox import ISOLATIONS, detect_isolation, result_dict, run

mode, reason = detect_isolation()
print(f"isolation: {mode} ({reason})")
print(result_dict(run("print(sum(map(int, input().split())))", "2 3\n", time_limit_s=2, memory_mb=256)))
sys.exit(0 if mode in ISOLATIONS else 1)
