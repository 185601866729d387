"""Servers that never answer: `hang` sleeps, `spew` floods stdout with junk. Both write their pid, and the pid of a
child they start, to PIDFILE, so a test can check that the health check left no process behind.

    python misbehaving.py hang|spew PIDFILE
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    mode, pid_file = sys.argv[1], Path(sys.argv[2])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    pid_file.write_text(f"{__import__('os').getpid()} {child.pid}")
    if mode == "spew":
        junk = ("x" * 200 + "\n").encode()
        while True:
            sys.stdout.buffer.write(junk)
    time.sleep(3600)
