"""Cloud resources a cluster file names, set up once per account (no torch, no Ray)."""
