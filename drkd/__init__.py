"""drkd: knowledge distillation of object detectors on Ray, built around DRKD (IJCAI 2023)."""
__version__ = "0.1.0"
