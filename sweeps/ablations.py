"""Run one of the paper's ablation grids: table1..table6, teacher or baseline.

python sweeps/ablations.py table3 --seeds 3
python sweeps/ablations.py table1 --config configs/coco_retinanet.yaml
"""

import sys

from drkd.sweeps.commands import ablations

if __name__ == "__main__":
    sys.exit(ablations())
