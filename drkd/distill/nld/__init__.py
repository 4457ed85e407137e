"""NLD: attention-guided and non-local distillation (Zhang & Ma, ICLR 2021). Registers method ``nld``.

Files: ``attention_guided`` (L_AT, L_AM), ``distiller`` (the non-local term and the sum, Eq. 3),
``params`` (the config section, paper settings, search space). The non-local block itself is
shared with DRKD's Table 2 (``drkd.distill.non_local``).
"""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.nld.params import NLDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="nld",
        params=NLDParams,
        distiller="drkd.distill.nld.distiller:NLDDistiller",
        display_name="NLD",
        search_space=search_space,
        table_rank=30,
    )
)
