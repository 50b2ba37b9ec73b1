# The broker itself, sans-IO: cores are synchronous, take `now` as an argument and return values. They never read
# a clock, import trio or open a socket; only the storage modules under `log/` touch files.
