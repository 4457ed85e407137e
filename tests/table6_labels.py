"""How Table 6 names each method's row, written out by hand: the tests that read rendered tables
check the product's labels against this, not against the product's own mapping."""

METHOD_LABEL = {
    "none": "Baseline",
    "fitnet": "FitNet",
    "nld": "NLD",
    "mkd": "MKD",
    "cwd": "CWD",
    "pkd": "PKD",
    "mgd": "MGD",
    "fgd": "FGD",
    "drkd": "DRKD (ours)",
}
