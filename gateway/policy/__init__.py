"""Pure decisions: who the visitor is, what they may see, what may cross. No aiohttp, no I/O."""
