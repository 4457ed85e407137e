"""MKD: multiscale, frequency-mask and feature-alignment distillation (Xu et al., 2024). Registers ``mkd``.

Files: ``multiscale_pooling`` (Eq. 1), ``frequency_mask`` (Eq. 2–4), ``feature_alignment`` (Eq. 5),
``distiller`` (Eq. 6), ``params`` (the config section, settings, search space).
"""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.mkd.params import MKDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="mkd",
        params=MKDParams,
        distiller="drkd.distill.mkd.distiller:MKDDistiller",
        display_name="MKD",
        search_space=search_space,
        table_rank=40,
    )
)
