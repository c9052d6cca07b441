"""The tools ops and security teams run: prerequisites, first-run set-up, audit reports, the probe."""
