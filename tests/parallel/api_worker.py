"""A user's training script, run by the test under `mpiexec -n 2` (the multi-machine path):
the Python API sees the launcher's ranks by itself.

    python api_worker.py Q.onnx TRAIN.npz OUT.onnx BATCH"""

import sys

import numpy as np
import onnx

from qdq_onnx import pipeline
from qdq_onnx.parallel import world


def main() -> int:
    src, data, out, batch = sys.argv[1:]
    arrays = np.load(data)
    tuned = pipeline.finetune(onnx.load(src), arrays["x"], arrays["labels"],
                              pipeline.TrainConfig(optimizer="sgd", learning_rate=0.05,
                                                   schedule="constant"),
                              pipeline.FitConfig(epochs=1, batch_size=int(batch), verbose=0))
    pipeline.save(tuned.model, out)
    print(f"rank {world().rank} of {world().size}: {tuned.history.steps} "
          "steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
