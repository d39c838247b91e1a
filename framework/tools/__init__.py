"""Tools built on the core, one per command: ablate, insight (attention, tokenize), plugin
check, promotion, chat (+ conversation), serve (+ web/), data check, export. The core never imports
them (a layer rule checked by import-linter)."""
