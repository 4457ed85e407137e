"""FitNet: per-level feature imitation through a 1×1 regressor (Romero et al., ICLR 2015). Registers ``fitnet``."""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.fitnet.params import FitNetParams, search_space

SPEC = register_method(
    MethodSpec(
        name="fitnet",
        params=FitNetParams,
        distiller="drkd.distill.fitnet.distiller:FitNetDistiller",
        display_name="FitNet",
        search_space=search_space,
        table_rank=10,
    )
)
