"""DRKD: Dual Relation Knowledge Distillation (Ni et al., IJCAI 2023). Registers method ``drkd``.

Files, one idea each: ``glore`` (the GloRe unit), ``pixel_relation`` (L_PR, Eq. 1; GloRe Eq. 2–4),
``relation_filter`` (w_ij of Eq. 6), ``instance_relation`` (L_IR, Eq. 6–7), ``instance_distill``
(L_INS, Eq. 8), ``distiller`` (Eq. 9), ``params`` (the config section, paper λ, search space).
"""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.drkd.params import DRKDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="drkd",
        params=DRKDParams,
        distiller="drkd.distill.drkd.distiller:DRKDDistiller",
        display_name="DRKD (ours)",
        search_space=search_space,
        table_rank=100,
        live_columns=tuple(
            f"distill.drkd.{k}" for k in ("pr", "ir", "ins", "lambda_pr", "lambda_ir", "lambda_ins", "instance_size")
        ),
    )
)
