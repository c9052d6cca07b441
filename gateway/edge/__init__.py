"""The request stages in front of the handlers, outermost first in app.py."""
