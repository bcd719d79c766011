"""``python -m mteb_vllm.cli``: the command line, behind the guard vLLM's spawned workers need."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
