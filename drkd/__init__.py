"""drkd: Ray-distributed knowledge distillation of object detectors, built around DRKD (IJCAI 2023).

Layers, imports only going down: ``sweeps`` → ``train`` → ``models`` → ``distill`` / ``data`` →
``config``; ``analysis`` reads results with the config layer alone (no torch). Importing drkd
registers the distillation methods (``drkd.distill``), which imports no torch.
"""

import drkd.distill  # noqa: F401  (registers the methods; torch-free)
