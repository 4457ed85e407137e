"""CWD: channel-wise distillation (Shu et al., ICCV 2021). Registers ``cwd``."""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.cwd.params import CWDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="cwd",
        params=CWDParams,
        distiller="drkd.distill.cwd.distiller:CWDDistiller",
        display_name="CWD",
        search_space=search_space,
        table_rank=45,
    )
)
