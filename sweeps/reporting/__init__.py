"""Reporting: the intermediate x target report, benchmark (XTREME / XTREME-R) scores."""
