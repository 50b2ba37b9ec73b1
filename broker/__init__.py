"""The broker: wire protocol (``wire``), sans-IO cores (``core``), the Trio server (``server``) and the CLI."""
