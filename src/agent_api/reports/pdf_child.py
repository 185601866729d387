"""`python -m agent_api.reports.pdf_child --memory-bytes N --cpu-seconds S`: HTML on stdin, the PDF on stdout.

A report is made of agent output, so its rendering is hostile input to WeasyPrint: it runs here, in a process of
its own whose address space and CPU time are capped before anything is parsed, and which the server kills at its
deadline. The API process never loads WeasyPrint at all.
"""

from __future__ import annotations

import argparse
import resource
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (args.cpu_seconds, args.cpu_seconds))

    from agent_api.reports.render import to_pdf  # after the limits: WeasyPrint's own start-up counts too

    sys.stdout.buffer.write(to_pdf(sys.stdin.read()))


if __name__ == "__main__":
    main()
