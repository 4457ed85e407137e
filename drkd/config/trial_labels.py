"""The keys that label a trial for the analysis without being config fields.

A sweep puts them in each trial's flat parameters (beside the dotted config overrides); the trial
leaves them out of its config, and the tables read them back. They live in the config layer so a
trial's processes (Tune's trial actor, Ray Train's controller) need not import the analysis.
"""

from __future__ import annotations

CELL_KEY, ROLE_KEY = "cell", "role"
LABEL_KEYS = (CELL_KEY, ROLE_KEY)
TEACHER, STUDENT = "teacher", "student"  # the values of ROLE_KEY
