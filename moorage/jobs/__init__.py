"""Background work shared by every node through the database (see runner.py)."""
