"""Search DRKD's loss weights and switches with Ray Tune + Optuna; each trial a Ray Train DDP job.

python sweeps/lambda_search.py                       # embedded default (synthetic data, CPU)
python sweeps/lambda_search.py --config configs/coco_retinanet.yaml
python sweeps/lambda_search.py --resume              # continue an interrupted search
"""

import sys

from drkd.sweeps.commands import lambda_search

if __name__ == "__main__":
    sys.exit(lambda_search())
