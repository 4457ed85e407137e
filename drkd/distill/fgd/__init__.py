"""FGD: focal and global distillation (Yang et al., CVPR 2022). Registers ``fgd``.

Files: ``focal_masks`` (the foreground/background and scale masks, Eq. 1–3; the attention masks,
Eq. 5–6), ``global_context`` (the GcBlock of the global loss, Eq. 10), ``distiller`` (Eq. 4, 7,
8, 9, 11), ``params`` (the config section, settings, search space).
"""

from drkd.config.methods import MethodSpec, register_method
from drkd.distill.fgd.params import FGDParams, search_space

SPEC = register_method(
    MethodSpec(
        name="fgd",
        params=FGDParams,
        distiller="drkd.distill.fgd.distiller:FGDDistiller",
        display_name="FGD",
        search_space=search_space,
        table_rank=70,
    )
)
