"""PKD: feature imitation with the Pearson correlation coefficient (Cao et al., NeurIPS 2022). Registers ``pkd``."""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.pkd.params import PKDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="pkd",
        params=PKDParams,
        distiller="drkd.distill.pkd.distiller:PKDDistiller",
        display_name="PKD",
        search_space=search_space,
        table_rank=50,
    )
)
