"""End-to-end suites: a real browser, the installed wheel, fuzzing and whole-run properties."""
