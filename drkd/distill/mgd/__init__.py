"""MGD: masked generative distillation (Yang et al., ECCV 2022). Registers ``mgd``."""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.mgd.params import MGDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="mgd",
        params=MGDParams,
        distiller="drkd.distill.mgd.distiller:MGDDistiller",
        display_name="MGD",
        search_space=search_space,
        table_rank=60,
    )
)
