"""An edge gateway for a help center's customer tickets portal."""
