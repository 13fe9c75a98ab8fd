"""`python -m qdq_onnx`: the `qdq-onnx` command (what each rank of `--workers N` runs)."""

import sys

from qdq_onnx.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
